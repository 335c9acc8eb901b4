"""The improvement loop: evaluate -> cluster the failures -> add targeted data -> retrain
-> evaluate again and decide, iteration after iteration.

Each iteration is a row that links its evaluation runs (the suite's mining split, its
held-out split, and a general suite that guards against forgetting), the clusters it
targeted, the dataset manifest and the training run that made its checkpoint, and the
decision taken with its reason. Every step is recorded as it finishes, so an
interrupted loop resumes at the step it was in (training resumes from its own
checkpoints).

Mine on one split, decide on another: failures are clustered, and data is gathered
for them, only on the suite's mining split (`dev`); decisions and reported gains come
from its held-out split (`test`), which no selection step sees. A suite that declares
no splits is split by the harness (stratified by tags, paraphrase groups kept whole),
and the loop says so. Curation decontaminates against every split.

Decisions compare the new checkpoint with the last accepted one using paired tests on
the held-out split (clusters of grouped samples resampled together, Holm across the
tests; see `decide`):
  rollback      the suite's main metric got significantly worse, or a guard metric is not
                shown non-inferior within its margin (forgetting not ruled out)
  target_met    the suite's main metric reached the suite's target
  no_gain       no significant improvement, and a gain of the margin is ruled out: stop
  underpowered  no significant improvement, but the suite is too small to rule out a gain
                of the margin: stop, keep the last (a bigger suite could tell)
  continue      significantly better: keep it and go on (until the iterations run out)
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.components.plugin_manager import Plugins
from harness.errors import ConfigError, HarnessError
from harness.generate.backends import load_backend
from harness.generate.executors import Executor
from harness.loop.cost import Work, estimate, load_prices
from harness.progress import NullReporter, Reporter
from harness.score.comparison import MetricComparison, compare_runs, compare_seeds
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.store.core import utcnow
from harness.store.queries import Queries
from harness.suite.config import resolve_margin
from harness.suite.files import validate_args
from harness.suite.load import Suite, load_suite
from harness.types import ModelSpec

STEPS = ("started", "clustered", "data", "trained", "evaluated", "decided")


class LoopConfig(BaseModel):
    """Everything that defines a loop (and so its identity, for resuming)."""

    model_config = ConfigDict(extra="forbid")

    suite: str
    model: str = "default"
    adapter: str | None = None
    backend: str = "hf"
    backend_options: dict[str, Any] = Field(default_factory=dict)
    iterations: int = Field(2, ge=1)
    trainer: str = "lora"
    trainer_args: dict[str, Any] = Field(default_factory=dict)
    source: str = "pool"
    source_args: dict[str, Any] = Field(default_factory=dict)
    selection: Literal["targeted", "random", "random_on_task"] = "targeted"
    """targeted: rows aimed at the clusters; random / random_on_task: the equal-budget
    controls (a uniform draw from the pool, or from its rows of the suite's own task)."""
    budget: int = Field(200, ge=1)
    """New training rows gathered per iteration."""
    retrain_from: Literal["base", "last"] = "base"
    """base: retrain the starting model on the grown dataset (LLM2LLM); last: continue the
    last accepted adapter on the new rows plus replay of earlier ones."""
    replay_ratio: float = Field(0.5, ge=0)
    """With retrain_from=last: earlier rows mixed in, as a share of the new rows."""
    guard: str | None = "general"
    """The suite that guards against forgetting; None evaluates the target suite only."""
    guard_metrics: list[str] | None = None
    """Guard metrics that must be shown non-inferior within their margins (default: the
    guard suite's main metric)."""
    featurizer: str = "embedding"
    featurizer_args: dict[str, Any] = Field(default_factory=dict)
    clusterer: str = "agglomerative"
    clusterer_args: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1)
    guard_limit: int | None = Field(None, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: int = 0
    resamples: int = Field(1000, ge=100)
    train_seeds: int = Field(1, ge=1)
    """Adapters trained per iteration, with seeds seed, seed+1, ...; the decision averages
    them and counts the spread between seeds (`harness.score.comparison.compare_seeds`)."""
    fixed_iterations: bool = False
    """Run every iteration whatever the decisions, each building on the one before it
    (accepted or not); decisions are still taken and recorded. For comparisons at equal
    budget, where an early stop must not end one arm sooner than another."""


@dataclass
class IterationResult:
    iteration: int
    decision: str
    reason: str
    accepted: bool
    eval_run_id: int
    """The held-out split's run, which the decision used."""
    guard_run_id: int | None
    main_value: float | None
    """The main metric on the held-out split."""
    mining_run_id: int | None = None
    mining_value: float | None = None
    """The main metric on the mining split (whose failures the next iteration targets)."""


@dataclass
class LoopResult:
    loop_id: int
    iterations: list[IterationResult]
    final_iteration: int
    stop_reason: str
    resumed: bool


def loop_fingerprint(config: LoopConfig, suite: Suite, guard: Suite | None, model_hash: str) -> str:
    # Options added later keep their defaults out of the identity, so that loops started
    # before they existed keep their fingerprints (and so their resumption).
    dumped = config.model_dump(mode="json")
    if dumped["train_seeds"] == 1:
        del dumped["train_seeds"]
    if not dumped["fixed_iterations"]:
        del dumped["fixed_iterations"]
    identity = {
        "config": dumped,
        "suite": suite.hash,
        "guard": guard.hash if guard else None,
        "model": model_hash,
        # A loop made before splits existed mined and decided on the same samples: it is
        # never resumed as a split loop.
        "splits": {"mining": suite.mining_split, "heldout": suite.heldout_split, "auto": suite.auto_split},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def run_loop(
    config: LoopConfig,
    store: Store,
    plugins: Plugins,
    *,
    reporter: Reporter | None = None,
    output_dir: Path | None = None,
    prices: str | Path | None = None,
    executor: Executor | None = None,
) -> LoopResult:
    """Run (or resume) a loop; returns what each iteration decided. `executor` (a
    RayExecutor) makes the evaluations' generations elsewhere; outputs are the same."""
    loop = _Loop(config, store, plugins, reporter or NullReporter(), output_dir, prices)
    loop.executor = executor
    return loop.run()


class _Loop:
    def __init__(
        self,
        config: LoopConfig,
        store: Store,
        plugins: Plugins,
        reporter: Reporter,
        output_dir: Path | None,
        prices: str | Path | None,
    ):
        self.config = config
        self.store = store
        self.plugins = plugins
        self.reporter = reporter
        self.prices = load_prices(prices)
        self.suite = load_suite(config.suite)
        self.mining = self.suite.split(self.suite.mining_split)
        self.heldout = self.suite.split(self.suite.heldout_split)
        self.guard = load_suite(config.guard) if config.guard else None
        registry = plugins.registry
        # Check every component and its arguments before anything runs or is written.
        self.trainer = registry.trainer(config.trainer, where="--trainer")
        self.trainer_args = validate_args(self.trainer, config.trainer_args, f"trainer {config.trainer!r} args")
        registry.data_source(config.source, where="--source")
        registry.featurizer(config.featurizer, where="--featurizer")
        registry.clusterer(config.clusterer, where="--clusterer")
        self.base = ModelSpec(config.model, config.adapter, config.backend, dict(config.backend_options))
        backend = load_backend(self.base, registry)  # checks the model exists (hf loads weights lazily)
        self.base_hash = backend.checkpoint_hash
        self.base_path = str(backend.describe().get("path") or config.model)
        backend.close()
        if self.guard is not None and self.guard.name == self.suite.name:
            raise ConfigError("the guard suite must differ from the suite the loop improves")
        if config.guard_metrics:
            if self.guard is None:
                raise ConfigError("--guard-metric needs a guard suite (--guard is 'none')")
            known = [m.name for m in self.guard.config.metrics]
            unknown = [m for m in config.guard_metrics if m not in known]
            if unknown:
                raise ConfigError(
                    f"--guard-metric {unknown[0]!r}: the guard suite {self.guard.name!r} scores "
                    f"{', '.join(known)}"
                )
        if self.suite.config.pool is None and config.source == "pool" and "pool" not in config.source_args:
            raise ConfigError(
                f"suite {self.suite.name!r} names no pool of training candidates; give one with "
                "--source-arg pool=FILE.jsonl or use another --source"
            )
        self.fingerprint = loop_fingerprint(config, self.suite, self.guard, self.base_hash)
        self.output_root = output_dir
        self.queries = Queries(store, registry)
        self.executor: Executor | None = None

    # -- the loop ---------------------------------------------------------------

    def run(self) -> LoopResult:
        loop_id, resumed = self._open_loop()
        if resumed:
            self.reporter.log(f"resuming loop {loop_id}")
        self.reporter.log(
            f"{self.suite.name}: mining failures on {self.mining.split_name!r}, deciding on "
            f"{self.heldout.split_name!r}; {self.suite.describe_split()}"
        )
        results: list[IterationResult] = []
        try:
            first = self._iteration_zero(loop_id)
            results.append(first)
            stop_reason = ""
            if first.decision == "target_met":
                stop_reason = first.reason
            for i in range(1, self.config.iterations + 1) if not stop_reason else ():
                result = self._iteration(loop_id, i)
                results.append(result)
                if result.decision in STOPPING and not self.config.fixed_iterations:
                    stop_reason = result.reason
                    break
            if not stop_reason:
                stop_reason = f"ran all {self.config.iterations} iteration(s)"
        except BaseException as exc:
            self._set_loop(loop_id, status="failed" if not isinstance(exc, KeyboardInterrupt) else "running",
                           stop_reason=f"{type(exc).__name__}: {exc}")
            raise
        final = max(r.iteration for r in results if r.accepted)
        self._set_loop(loop_id, status="finished", final_iteration=final, stop_reason=stop_reason,
                       finished_at=utcnow())
        return LoopResult(loop_id, results, final, stop_reason, resumed)

    def _open_loop(self) -> tuple[int, bool]:
        existing = self.store.scalar(
            "SELECT loop_id FROM loops WHERE fingerprint = ? AND status IN ('running', 'failed') "
            "ORDER BY loop_id DESC LIMIT 1",
            [self.fingerprint],
        )
        if existing is not None:
            self._set_loop(existing, status="running", stop_reason=None)
            return int(existing), True
        with self.store.transaction() as con:
            inserted = con.execute(
                "INSERT INTO loops (fingerprint, suite_name, guard_suite, base_model, config, output_dir, "
                "status, started_at, mining_split, heldout_split, split_auto, split_sizes) "
                "VALUES (?, ?, ?, ?, ?, '', 'running', ?, ?, ?, ?, ?) RETURNING loop_id",
                [
                    self.fingerprint,
                    self.suite.name,
                    self.guard.name if self.guard else None,
                    self.base_path,
                    self.config.model_dump_json(),
                    utcnow(),
                    self.mining.split_name,
                    self.heldout.split_name,
                    self.suite.auto_split,
                    json.dumps({name: len(self.suite.split(name).samples) for name in self.suite.split_names}),
                ],
            ).fetchone()
            assert inserted is not None  # RETURNING gives the inserted row
            loop_id = inserted[0]
            out = self.output_root or (self.store.path.parent / "loops" / str(loop_id))
            con.execute("UPDATE loops SET output_dir = ? WHERE loop_id = ?", [str(out.resolve()), loop_id])
        return int(loop_id), False

    def _set_loop(self, loop_id: int, **fields: Any) -> None:
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self.store.transaction() as con:
            con.execute(f"UPDATE loops SET {assignments} WHERE loop_id = ?", [*fields.values(), loop_id])

    def _output_dir(self, loop_id: int) -> Path:
        return Path(self.store.scalar("SELECT output_dir FROM loops WHERE loop_id = ?", [loop_id]))

    # -- iterations ---------------------------------------------------------------

    def _row(self, loop_id: int, iteration: int) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT * FROM iterations WHERE loop_id = ? AND iteration = ?", [loop_id, iteration]
        )
        if not rows:
            return None
        row = rows[0]
        for key in ("checkpoint", "comparison", "cost"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        return row

    def _update(self, loop_id: int, iteration: int, **fields: Any) -> None:
        values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in fields.values()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self.store.transaction() as con:
            con.execute(
                f"UPDATE iterations SET {assignments} WHERE loop_id = ? AND iteration = ?",
                [*values, loop_id, iteration],
            )

    def _stored(self, loop_id: int, iteration: int) -> dict[str, Any]:
        """The iteration's row, which the step just written guarantees."""
        row = self._row(loop_id, iteration)
        assert row is not None, f"loop {loop_id} has no iteration {iteration}"
        return row

    def _start(self, loop_id: int, iteration: int, checkpoint: ModelSpec | None) -> dict[str, Any]:
        row = self._row(loop_id, iteration)
        if row is None:
            with self.store.transaction() as con:
                con.execute(
                    "INSERT INTO iterations (loop_id, iteration, step, checkpoint, started_at) "
                    "VALUES (?, ?, 'started', ?, ?)",
                    [loop_id, iteration, json.dumps(_spec_dict(checkpoint) if checkpoint else {}), utcnow()],
                )
            row = self._row(loop_id, iteration)
            assert row is not None
        return row

    def _iteration_zero(self, loop_id: int) -> IterationResult:
        row = self._start(loop_id, 0, self.base)
        if row["step"] != "decided":
            self.reporter.log("[bold]iteration 0[/]: evaluating the starting checkpoint")
            run_id, mining_id, guard_id = self._evaluate(self.base, row)
            self._update(loop_id, 0, step="evaluated", eval_run_id=run_id, mining_run_id=mining_id,
                         guard_run_id=guard_id, checkpoint_hash=self.base_hash)
            value = self._main_value(run_id)
            target = self._target()
            met = target is not None and value is not None and self._meets(value, target)
            decision, reason = (
                ("target_met", f"{self.suite.config.main} {value:.4g} already meets the target {target:g}")
                if met
                else ("baseline", "the starting checkpoint")
            )
            work = self._eval_work(run_id, mining_id, guard_id)
            self._update(
                loop_id, 0, step="decided", decision=decision, reason=reason, accepted=True,
                decision_rule=DECISION_RULE, tokens_trained=0, tokens_evaluated=work.eval_input_tokens + work.eval_output_tokens,
                cost=estimate(work, self.prices), finished_at=utcnow(),
            )
            self._notify(loop_id, 0)
            row = self._stored(loop_id, 0)
        return self._result(row)

    def _iteration(self, loop_id: int, i: int) -> IterationResult:
        previous = self._previous(loop_id, i)
        row = self._start(loop_id, i, None)
        if row["step"] == "decided":
            return self._result(row)
        self.reporter.log(f"[bold]iteration {i}[/]: improving on iteration {previous['iteration']}")
        if row["step"] == "started":
            clustering_id = self._cluster(loop_id, previous)
            self._update(loop_id, i, step="clustered", clustering_id=clustering_id, compared_to=previous["iteration"])
            row = self._stored(loop_id, i)
        if row["step"] == "clustered":
            manifest = self._gather(previous, row["clustering_id"])
            self._update(loop_id, i, step="data", manifest_hash=manifest)
            row = self._stored(loop_id, i)
        if row["step"] == "data":
            for line, warn in self._power_lines(previous):
                self.reporter.log(f"[yellow]warning:[/] {line}" if warn else line)
            training_id, checkpoint, checkpoint_hash = self._train(loop_id, i, previous, row["manifest_hash"])
            extra = []  # the other training seeds: kept beside the checkpoint for the decision
            for k in range(1, self.config.train_seeds):
                seed_id, seed_spec, seed_hash = self._train(loop_id, i, previous, row["manifest_hash"], k)
                extra.append({"seed": self.config.seed + k, "training_id": seed_id,
                              "checkpoint": _spec_dict(seed_spec), "checkpoint_hash": seed_hash})
            spec = _spec_dict(checkpoint) | ({"seeds": extra} if extra else {})
            self._update(loop_id, i, step="trained", training_id=training_id,
                         checkpoint=spec, checkpoint_hash=checkpoint_hash)
            row = self._stored(loop_id, i)
        if row["step"] == "trained":
            run_id, mining_id, guard_id = self._evaluate(_spec(row["checkpoint"]), row)
            seeds = row["checkpoint"].get("seeds") or []
            for extra in seeds:
                extra["eval_run_id"], _, extra["guard_run_id"] = self._evaluate(_spec(extra["checkpoint"]), row)
            self._update(loop_id, i, step="evaluated", eval_run_id=run_id, mining_run_id=mining_id,
                         guard_run_id=guard_id, **({"checkpoint": row["checkpoint"]} if seeds else {}))
            row = self._stored(loop_id, i)
        assert row is not None and row["step"] == "evaluated"
        decision, reason, accepted, comparison = self._decide(previous, row)
        training_ids = [row["training_id"]] + [e["training_id"] for e in row["checkpoint"].get("seeds") or []]
        trained = self.store.scalar(
            "SELECT sum(tokens_trained) FROM training_runs WHERE list_contains(?, training_id)", [training_ids]
        ) or 0
        work = Work(train_tokens=int(trained)) + self._eval_work(
            row["eval_run_id"], row["mining_run_id"], row["guard_run_id"]
        )
        self._update(
            loop_id, i, step="decided", decision=decision, reason=reason, accepted=accepted,
            decision_rule=DECISION_RULE, comparison=comparison, tokens_trained=work.train_tokens,
            tokens_evaluated=work.eval_input_tokens + work.eval_output_tokens,
            cost=estimate(work, self.prices), finished_at=utcnow(),
        )
        self.reporter.log(f"iteration {i}: [bold]{decision}[/] — {reason}")
        self._notify(loop_id, i)
        final = self._row(loop_id, i)
        assert final is not None
        return self._result(final)

    def _previous(self, loop_id: int, i: int) -> dict[str, Any]:
        """What iteration `i` improves on: the last accepted iteration, or with
        fixed_iterations the one just before it."""
        if self.config.fixed_iterations:
            row = self._row(loop_id, i - 1)
            if row is None:
                raise HarnessError(f"loop {loop_id} has no iteration {i - 1} to build iteration {i} on")
            return row
        return self._last_accepted(loop_id, i)

    def _last_accepted(self, loop_id: int, before: int) -> dict[str, Any]:
        rows = self.store.query(
            "SELECT iteration FROM iterations WHERE loop_id = ? AND iteration < ? AND accepted "
            "ORDER BY iteration DESC LIMIT 1",
            [loop_id, before],
        )
        if not rows:
            raise HarnessError(f"loop {loop_id} has no accepted iteration before {before}")
        row = self._row(loop_id, rows[0]["iteration"])
        assert row is not None
        return row

    # -- steps ----------------------------------------------------------------------

    def _evaluate(self, spec: ModelSpec, row: Mapping[str, Any]) -> tuple[int, int, int | None]:
        """(held-out run, mining run, guard run): both splits of the suite (`limit` applies
        to each), and the guard suite whole."""
        backend = load_backend(spec, self.plugins.registry)  # one load serves every run
        try:
            options = EvalOptions(limit=self.config.limit, seed=self.config.seed, executor=self.executor)
            mining = evaluate(self.mining, backend, self.store, self.plugins, options, reporter=self.reporter)
            run = evaluate(self.heldout, backend, self.store, self.plugins, options, reporter=self.reporter)
            guard_id = None
            if self.guard is not None:
                guard_options = EvalOptions(
                    limit=self.config.guard_limit, seed=self.config.seed, executor=self.executor
                )
                guard = evaluate(self.guard, backend, self.store, self.plugins, guard_options, reporter=self.reporter)
                guard_id = guard.run_id
        finally:
            backend.close()
        return run.run_id, mining.run_id, guard_id

    def _mining_run(self, previous: Mapping[str, Any]) -> int:
        """The previous checkpoint's run on the mining split: the only run whose failures
        the loop clusters and gathers data for."""
        run_id = previous.get("mining_run_id")
        if run_id is None:
            raise HarnessError(
                f"iteration {previous['iteration']} has no run on the mining split (a loop made before "
                "splits existed); start a new loop"
            )
        return int(run_id)

    def _cluster(self, loop_id: int, previous: Mapping[str, Any]) -> int:
        from harness.cluster.clustering import cluster_run

        # Match against the clusters that made the previous checkpoint, when there are any.
        earlier = previous.get("clustering_id")
        result = cluster_run(
            self.store,
            self._mining_run(previous),
            self.plugins.registry,
            featurizer=self.config.featurizer,
            featurizer_args=self.config.featurizer_args,
            clusterer=self.config.clusterer,
            clusterer_args=self.config.clusterer_args,
            previous_clustering=earlier,
        )
        sizes = ", ".join(f"{c.id}:{c.size}" for c in result.clusters)
        self.reporter.log(
            f"clustered {sum(c.size for c in result.clusters)} failures of split {self.mining.split_name!r} ({sizes})"
        )
        return result.clustering_id

    def _gather(self, previous: Mapping[str, Any], clustering_id: int) -> str:
        from harness.data.datasets import build_dataset

        manifest = build_dataset(
            self.store,
            self._mining_run(previous),
            clustering_id,
            self.plugins.registry,
            source=self.config.source,
            source_args=self.config.source_args,
            budget=self.config.budget,
            selection=self.config.selection,
            parent=previous.get("manifest_hash"),
            seed=self.config.seed + int(previous["iteration"]),
            # The whole suite (every split) and the guard: no row may copy an eval item.
            suites_against=[s for s in (self.suite, self.guard) if s is not None],
            make_backend=lambda spec: load_backend(spec, self.plugins.registry),
            reporter=self.reporter,
        )
        self.reporter.log(
            f"dataset {manifest.manifest_hash[:12]}: {manifest.n_added} rows added, {manifest.n_rows} in all"
        )
        for cluster, note in manifest.budget_notes.items():
            self.reporter.log(f"cluster {cluster}: half its share of the budget ({note})")
        return manifest.manifest_hash

    def _train(
        self, loop_id: int, i: int, previous: Mapping[str, Any], manifest_hash: str, repeat: int = 0
    ) -> tuple[int, ModelSpec, str]:
        """Train iteration i's checkpoint; `repeat` k > 0 trains the k-th extra seed
        (seed + k) on the same rows, into seed-k/iteration-i."""
        from harness.data.manifests import load_manifest_rows
        from harness.train.runs import train_and_record

        rows = load_manifest_rows(self.store, manifest_hash)
        if self.config.retrain_from == "base":
            start, start_hash, train = self.base, self.base_hash, rows
        else:
            start, start_hash = _spec(previous["checkpoint"]), previous["checkpoint_hash"]
            parent = previous.get("manifest_hash")
            earlier = load_manifest_rows(self.store, parent) if parent else []
            new = rows[len(earlier):]
            replay_n = min(len(earlier), round(self.config.replay_ratio * len(new)))
            train = new + random.Random(self.config.seed + i).sample(earlier, replay_n)
        if not train:
            raise HarnessError(f"iteration {i} has no training rows: the data step added none")
        root = self._output_dir(loop_id)
        output = root / f"iteration-{i}" if not repeat else root / f"seed-{repeat}" / f"iteration-{i}"
        if output.is_dir() and any((output / marker).is_file() for marker in ("adapter_config.json", "config.json")):
            # Training finished but the loop stopped before recording it: train again
            # (same seed, same data, same weights) rather than trust an unrecorded model.
            shutil.rmtree(output)
        args = self.trainer_args.model_copy(update={"resume": True, "seed": self.config.seed + repeat})
        if self.config.train_seeds > 1:
            self.reporter.log(f"training seed {self.config.seed + repeat} ({repeat + 1} of {self.config.train_seeds})")
        training_id, outcome = train_and_record(
            self.store, self.trainer, base=start, base_hash=start_hash, rows=train, output=output,
            args=args, prompt=self.suite.config.prompt, manifest_hash=manifest_hash, reporter=self.reporter,
        )
        return training_id, outcome.checkpoint, outcome.checkpoint_hash

    # -- deciding ---------------------------------------------------------------------

    def _decide(self, previous: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str, bool, dict[str, Any]]:
        main = self.suite.config.main
        seeds = row["checkpoint"].get("seeds") or []
        suite_cmp = compare_seeds(self.queries, previous["eval_run_id"],
                                  [row["eval_run_id"], *(e["eval_run_id"] for e in seeds)],
                                  resamples=self.config.resamples, seed=self.config.seed,
                                  cluster_by=self.suite.config.cluster_by)
        guard_cmp: list[MetricComparison] = []
        if self.guard is not None and previous.get("guard_run_id") and row.get("guard_run_id"):
            guard_cmp = compare_seeds(self.queries, previous["guard_run_id"],
                                      [row["guard_run_id"], *(e["guard_run_id"] for e in seeds)],
                                      resamples=self.config.resamples, seed=self.config.seed,
                                      cluster_by=self.guard.config.cluster_by)
        guard_watch = set(self.config.guard_metrics or ([self.guard.config.main] if self.guard else []))
        main_cmp = next(c for c in suite_cmp if c.metric == main)
        decision = decide(
            main_cmp,
            [GuardCheck(c, self._margin(self.guard, c)) for c in guard_cmp if c.metric in guard_watch],
            suite=self.suite.name,
            guard_suite=self.guard.name if self.guard else None,
            target=self._target(),
            alpha=self.config.alpha,
            main_margin=self._margin(self.suite, main_cmp),
        )
        mining_cmp: list[MetricComparison] = []
        if previous.get("mining_run_id") and row.get("mining_run_id"):
            mining_cmp = compare_runs(self.queries, previous["mining_run_id"], row["mining_run_id"],
                                      resamples=self.config.resamples, seed=self.config.seed,
                                      cluster_by=self.suite.config.cluster_by)
        comparison = {
            "split": self.heldout.split_name,
            "metrics": [_comparison_record(c) for c in suite_cmp],
            "mining_split": self.mining.split_name,
            "mining": [_comparison_record(c) for c in mining_cmp],
            "guard": [_comparison_record(c) for c in guard_cmp],
            "decision": {**decision.record, "planned": self._power(previous), "train_seeds": 1 + len(seeds),
                         "seed_runs": [{"seed": self.config.seed, "eval_run_id": row["eval_run_id"],
                                        "guard_run_id": row.get("guard_run_id")}]
                         + [{k: e.get(k) for k in ("seed", "eval_run_id", "guard_run_id")} for e in seeds]},
            "clusters": self._cluster_progress(row),
            "issues": self._issue_counts(previous["eval_run_id"], row["eval_run_id"]),
        }
        accepted = decision.decision in ("continue", "target_met")
        return decision.decision, decision.reason, accepted, comparison

    def _power(self, previous: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Before training: the MDE of each metric the decision will test, from the last
        accepted checkpoint's runs (`planned_mde`), beside its margin."""
        from harness.score.comparison import planned_mde

        watched = [(self.suite, previous.get("eval_run_id"), [self.suite.config.main])]
        if self.guard is not None:
            names = self.config.guard_metrics or [self.guard.config.main]
            watched.append((self.guard, previous.get("guard_run_id"), names))
        out = []
        for suite, run_id, metrics in watched:
            if not run_id:
                continue
            run = self.queries.run(run_id)
            scores = {c.metric: c.value for c in self.queries.corpus_scores(run_id)}
            for metric in metrics:
                if metric not in scores:
                    continue
                mde = planned_mde(self.queries, run, metric, alpha=self.config.alpha,
                                  resamples=self.config.resamples, seed=self.config.seed,
                                  cluster_by=suite.config.cluster_by)
                config = next((m for m in suite.config.metrics if m.name == metric), None)
                margin = resolve_margin(config.margin if config else None, scores[metric] or 0.0)
                out.append({"suite": suite.name, "metric": metric, "guard": suite is self.guard,
                            "mde": mde, "margin": margin, "n": run.n_samples})
        return out

    def _power_lines(self, previous: Mapping[str, Any]) -> list[tuple[str, bool]]:
        """What the decision can detect, and a warning where the suite is too small for it."""
        lines = []
        for p in self._power(previous):
            if p["mde"] is None:
                continue
            where = f"{p['suite']} {p['metric']} ({p['n']} samples)"
            lines.append((
                f"power: {where} detects a change of {p['mde']:.3g} at alpha {self.config.alpha:g} with power 0.8 "
                f"(an upper bound); margin {p['margin']:.3g}", False,
            ))
            if p["mde"] > p["margin"] and p["guard"]:
                lines.append((
                    f"the guard {where} is too small to show non-inferiority within its margin {p['margin']:.3g} "
                    f"(MDE {p['mde']:.3g}): unless the checkpoints' errors correlate strongly, expect a rollback; "
                    "give the guard more samples or a wider `margin:`", True,
                ))
            elif p["mde"] > p["margin"]:
                lines.append((
                    f"{where} cannot detect a gain of its margin {p['margin']:.3g} (MDE {p['mde']:.3g}): gains "
                    "below the MDE will read as underpowered; give the suite more samples", True,
                ))
        return lines

    @staticmethod
    def _margin(suite: Suite | None, comparison: MetricComparison) -> float:
        """The metric's margin in its units, against the earlier checkpoint's score."""
        config = next((m for m in suite.config.metrics if m.name == comparison.metric), None) if suite else None
        baseline = comparison.test.score_a if comparison.test is not None else 0.0
        return resolve_margin(config.margin if config else None, baseline)

    def _cluster_progress(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """How many members of each targeted cluster (mining-split samples) still fail on
        the new checkpoint's mining run."""
        return self.store.query(
            """
            SELECT c.cluster_id, c.label, c.size, c.dominant_issue,
                   count(f.sample_id) AS still_failing, c.size - count(f.sample_id) AS fixed
            FROM clusters c
            JOIN cluster_members m USING (clustering_id, cluster_id)
            LEFT JOIN failures f ON f.run_id = ? AND f.sample_id = m.sample_id
            WHERE c.clustering_id = ?
            GROUP BY c.cluster_id, c.label, c.size, c.dominant_issue
            ORDER BY c.cluster_id = -1, c.cluster_id
            """,
            [row["mining_run_id"], row["clustering_id"]],
        )

    def _issue_counts(self, run_a: int, run_b: int) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for run, key in ((run_a, "before"), (run_b, "after")):
            for r in self.store.query(
                "SELECT detector, count(*) AS n FROM issues WHERE run_id = ? GROUP BY detector", [run]
            ):
                counts.setdefault(r["detector"], {"before": 0, "after": 0})[key] = r["n"]
        return counts

    def _target(self) -> float | None:
        main = self.suite.config.main
        return next((m.target for m in self.suite.config.metrics if m.name == main), None)

    def _meets(self, value: float, target: float) -> bool:
        higher = self.plugins.registry.metric(self.suite.config.main).higher_is_better
        return value >= target if higher else value <= target

    def _main_value(self, run_id: int) -> float | None:
        return self.store.scalar(
            "SELECT value FROM corpus_scores WHERE run_id = ? AND metric = ?", [run_id, self.suite.config.main]
        )

    def _eval_work(self, *run_ids: int | None) -> Work:
        row = self.store.query(
            "SELECT coalesce(sum(g.prompt_tokens), 0) AS input, coalesce(sum(g.completion_tokens), 0) AS output "
            "FROM run_generations rg JOIN generations g USING (cache_key) WHERE list_contains(?, rg.run_id)",
            [[r for r in run_ids if r is not None]],
        )[0]
        return Work(eval_input_tokens=int(row["input"]), eval_output_tokens=int(row["output"]))

    def _result(self, row: Mapping[str, Any]) -> IterationResult:
        return IterationResult(
            iteration=row["iteration"],
            decision=row["decision"],
            reason=row["reason"],
            accepted=bool(row["accepted"]),
            eval_run_id=row["eval_run_id"],
            guard_run_id=row["guard_run_id"],
            main_value=self._main_value(row["eval_run_id"]),
            mining_run_id=row.get("mining_run_id"),
            mining_value=self._main_value(row["mining_run_id"]) if row.get("mining_run_id") else None,
        )

    def _notify(self, loop_id: int, iteration: int) -> None:
        row = self._row(loop_id, iteration)
        assert row is not None
        payload = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        failures = self.plugins.notify("harness_iteration_finished", loop_id=loop_id, iteration=payload)
        for failure in failures:
            self.reporter.log(f"[yellow]plugin {failure.plugin!r} failed in {failure.hook}: {failure.message}[/]")


DECISION_RULE = 2
"""The version of the rule `decide` applies, stored with every decision.

1 (decisions stored without a number): paired tests resampling samples; rollback when
  the main metric or a guard metric got significantly worse; no multiplicity correction.
2: tests resample clusters of grouped samples; Holm across the tests one decision looks
  at; a guard passes only when non-inferior within its margin; a no_gain that cannot rule
  out a gain of the margin is called underpowered."""

STOPPING = ("rollback", "no_gain", "underpowered", "target_met")


@dataclass
class GuardCheck:
    """A guard metric judged by non-inferiority: its change must be shown above -margin."""

    comparison: MetricComparison
    margin: float
    """In the metric's units (see `harness.suite.config.resolve_margin`)."""


@dataclass
class Decision:
    decision: str
    reason: str
    record: dict[str, Any]
    """What the decision rested on (stored with it): rule, alpha, Holm's adjusted
    p-values, each guard's margin, interval and verdict, the main metric's margin."""


def _better(c: MetricComparison) -> tuple[float, float, float]:
    """The change and its interval, signed so that positive is better."""
    t = c.test
    assert t is not None
    if c.higher_is_better:
        return t.difference, t.ci_low, t.ci_high
    return -t.difference, -t.ci_high, -t.ci_low


def decide(
    main: MetricComparison,
    guard: Sequence[GuardCheck],
    *,
    suite: str,
    guard_suite: str | None = None,
    target: float | None,
    alpha: float = 0.05,
    main_margin: float | None = None,
) -> Decision:
    """The decision after comparing a new checkpoint with the last accepted one (rule 2).

    1. Holm: the main metric's test and every guard metric's are one family; the main
       metric improved (or got worse) only when its Holm-adjusted p < alpha and its
       interval excludes 0 (`MetricComparison.significant`).
    2. rollback when the main metric got worse, or when a guard metric's interval of the
       change (95%, in its better direction) reaches below -margin: forgetting within the
       margin is not ruled out. Requiring every guard at once is an intersection-union
       test (Berger 1982): it keeps its level without a correction.
    3. target_met when the main metric reaches the target; continue when it improved.
    4. Otherwise no_gain when the interval rules out a gain of `main_margin`, and
       underpowered when it does not (the suite is too small to tell)."""
    from harness.stats import holm

    record: dict[str, Any] = {"rule": DECISION_RULE, "alpha": alpha, "family": [], "guards": []}
    tested = [(suite, main)] + [(guard_suite or "guard", g.comparison) for g in guard if g.comparison.test]
    family = [(name, c) for name, c in tested if c.test is not None]
    adjusted = holm([c.test.decision_p for _, c in family])  # type: ignore[union-attr]
    holm_p = {id(c): p for (_, c), p in zip(family, adjusted)}
    for (name, c), p in zip(family, adjusted):
        record["family"].append(
            {"suite": name, "metric": c.metric, "p": c.test.decision_p, "p_holm": p}  # type: ignore[union-attr]
        )
    test = main.test
    if test is None:
        return Decision("no_gain", f"{suite} {main.metric} could not be tested: {main.not_tested}", record)
    p_main = holm_p[id(main)]
    change = (
        f"{main.metric} {test.score_a:.4g} -> {test.score_b:.4g} "
        f"(change {test.difference:+.3g}, 95% CI [{test.ci_low:+.3g}, {test.ci_high:+.3g}], "
        f"p={test.p_value:.3g}, Holm p={p_main:.3g}, over {main.resampled})"
    )
    outcome = main.outcome(alpha, p_main)
    record["main"] = {"metric": main.metric, "outcome": outcome, "margin": main_margin, "mde": test.mde}
    if outcome == "worse":
        return Decision("rollback", f"{suite} got significantly worse: {change}", record)
    failed = None
    for g in guard:
        entry = _guard_entry(g, holm_p, alpha)
        record["guards"].append(entry)
        if entry["verdict"] == "inferior" and failed is None:
            failed = (g, entry)
    if failed is not None:
        g, entry = failed
        t = g.comparison.test
        assert t is not None
        low = entry["ci_better"][0]
        return Decision("rollback", (
            f"the guard suite {guard_suite} may have got worse (forgetting not ruled out): {g.comparison.metric} "
            f"{t.score_a:.4g} -> {t.score_b:.4g}, change {t.difference:+.3g}, 95% CI "
            f"[{t.ci_low:+.3g}, {t.ci_high:+.3g}]: a loss of {-low:.3g} is possible, beyond the margin {g.margin:.3g}"
        ), record)
    if target is not None:
        reached = test.score_b >= target if main.higher_is_better else test.score_b <= target
        if reached:
            return Decision("target_met", f"{change} reaches the target {target:g}", record)
    if outcome == "better":
        return Decision("continue", f"{suite} improved: {change}", record)
    best = _better(main)[2]
    if main_margin is not None and best >= main_margin:
        return Decision("underpowered", (
            f"no significant gain on {suite}, but a gain of {best:.3g} is not ruled out, more than the margin "
            f"{main_margin:.3g} (MDE {test.mde:.3g}): the suite is too small to tell; {change}"
        ), record)
    return Decision("no_gain", f"no significant gain on {suite}: {change}", record)


def _guard_entry(g: GuardCheck, holm_p: Mapping[int, float], alpha: float) -> dict[str, Any]:
    c, t = g.comparison, g.comparison.test
    entry: dict[str, Any] = {"metric": c.metric, "margin": g.margin}
    if t is None:
        return {**entry, "verdict": "not tested", "why": c.not_tested}
    change, low, high = _better(c)
    return {
        **entry,
        "change": t.difference,
        "ci": [t.ci_low, t.ci_high],
        "ci_better": [low, high],
        "p_holm": holm_p.get(id(c)),
        "significantly_worse": c.outcome(alpha, holm_p.get(id(c))) == "worse",
        "verdict": "non-inferior" if low > -g.margin else "inferior",
        "resampled": c.resampled,
    }


def _comparison_record(c: MetricComparison) -> dict[str, Any]:
    t = c.test
    return {
        "metric": c.metric,
        "higher_is_better": c.higher_is_better,
        "n": c.n,
        "test": t.test if t else None,
        "before": t.score_a if t else None,
        "after": t.score_b if t else None,
        "difference": t.difference if t else None,
        "p_value": t.p_value if t else None,
        "ci": [t.ci_low, t.ci_high] if t else None,
        "mde": t.mde if t else None,
        "seeds": t.seeds if t else None,
        "resampled": c.resampled if t else None,
        "clusters": t.clusters if t else None,
        "fixed": len(c.fixed),
        "broken": len(c.broken),
        "not_tested": c.not_tested or None,
    }


def _spec_dict(spec: ModelSpec) -> dict[str, Any]:
    return {"path": spec.path, "adapter": spec.adapter, "backend": spec.backend, "options": dict(spec.options)}


def _spec(data: Mapping[str, Any]) -> ModelSpec:
    return ModelSpec(data["path"], data.get("adapter"), data.get("backend", "hf"), data.get("options") or {})


def _describe(spec: ModelSpec) -> str:
    return Path(spec.path).name + (f" + {Path(spec.adapter).name}" if spec.adapter else "")
