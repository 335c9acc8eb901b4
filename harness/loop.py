"""The improvement loop: evaluate -> cluster the failures -> add targeted data -> retrain
-> evaluate again and decide, iteration after iteration.

Each iteration is a row that links its evaluation runs (the suite, and a general suite
that guards against forgetting), the clusters it targeted, the dataset manifest and
the training run that made its checkpoint, and the decision taken with its reason.
Every step is recorded as it finishes, so an interrupted loop resumes at the step it
was in (training resumes from its own checkpoints).

Decisions compare the new checkpoint with the last accepted one using paired tests:
  rollback    the suite's main metric or the guard suite's got significantly worse
  target_met  the suite's main metric reached the suite's target
  no_gain     no significant improvement of the main metric: stop, keep the last
  continue    significantly better: keep it and go on (until the iterations run out)
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

from harness.comparison import MetricComparison, compare_runs
from harness.cost import Work, estimate, load_prices
from harness.errors import ConfigError, HarnessError
from harness.distributed import Executor
from harness.evaluate import EvalOptions, evaluate, load_backend
from harness.plugin_manager import Plugins
from harness.progress import NullReporter, Reporter
from harness.queries import Queries
from harness.store import Store
from harness.store.core import utcnow
from harness.suite import Suite, load_suite, validate_args
from harness.training_runs import fail_training_run, finish_training_run, start_training_run
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
    selection: Literal["targeted", "random"] = "targeted"
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
    """Guard metrics whose significant worsening rolls back (default: its main metric)."""
    featurizer: str = "embedding"
    featurizer_args: dict[str, Any] = Field(default_factory=dict)
    clusterer: str = "agglomerative"
    clusterer_args: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1)
    guard_limit: int | None = Field(None, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: int = 0
    resamples: int = Field(1000, ge=100)


@dataclass
class IterationResult:
    iteration: int
    decision: str
    reason: str
    accepted: bool
    eval_run_id: int
    guard_run_id: int | None
    main_value: float | None


@dataclass
class LoopResult:
    loop_id: int
    iterations: list[IterationResult]
    final_iteration: int
    stop_reason: str
    resumed: bool


def loop_fingerprint(config: LoopConfig, suite: Suite, guard: Suite | None, model_hash: str) -> str:
    identity = {
        "config": config.model_dump(mode="json"),
        "suite": suite.hash,
        "guard": guard.hash if guard else None,
        "model": model_hash,
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
                if result.decision in ("rollback", "no_gain", "target_met"):
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
            loop_id = con.execute(
                "INSERT INTO loops (fingerprint, suite_name, guard_suite, base_model, config, output_dir, "
                "status, started_at) VALUES (?, ?, ?, ?, ?, '', 'running', ?) RETURNING loop_id",
                [
                    self.fingerprint,
                    self.suite.name,
                    self.guard.name if self.guard else None,
                    self.base_path,
                    self.config.model_dump_json(),
                    utcnow(),
                ],
            ).fetchone()[0]
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
            run_id, guard_id = self._evaluate(self.base, row)
            self._update(loop_id, 0, step="evaluated", eval_run_id=run_id, guard_run_id=guard_id,
                         checkpoint_hash=self.base_hash)
            value = self._main_value(run_id)
            target = self._target()
            met = target is not None and value is not None and self._meets(value, target)
            decision, reason = (
                ("target_met", f"{self.suite.config.main} {value:.4g} already meets the target {target:g}")
                if met
                else ("baseline", "the starting checkpoint")
            )
            work = self._eval_work(run_id, guard_id)
            self._update(
                loop_id, 0, step="decided", decision=decision, reason=reason, accepted=True,
                tokens_trained=0, tokens_evaluated=work.eval_input_tokens + work.eval_output_tokens,
                cost=estimate(work, self.prices), finished_at=utcnow(),
            )
            self._notify(loop_id, 0)
            row = self._row(loop_id, 0)
            assert row is not None
        return self._result(row)

    def _iteration(self, loop_id: int, i: int) -> IterationResult:
        previous = self._last_accepted(loop_id, i)
        row = self._start(loop_id, i, None)
        if row["step"] == "decided":
            return self._result(row)
        self.reporter.log(f"[bold]iteration {i}[/]: improving on iteration {previous['iteration']}")
        if row["step"] == "started":
            clustering_id = self._cluster(loop_id, previous)
            self._update(loop_id, i, step="clustered", clustering_id=clustering_id, compared_to=previous["iteration"])
            row = self._row(loop_id, i)
        if row["step"] == "clustered":
            manifest = self._gather(previous, row["clustering_id"])
            self._update(loop_id, i, step="data", manifest_hash=manifest)
            row = self._row(loop_id, i)
        if row["step"] == "data":
            training_id, checkpoint, checkpoint_hash = self._train(loop_id, i, previous, row["manifest_hash"])
            self._update(loop_id, i, step="trained", training_id=training_id,
                         checkpoint=_spec_dict(checkpoint), checkpoint_hash=checkpoint_hash)
            row = self._row(loop_id, i)
        if row["step"] == "trained":
            run_id, guard_id = self._evaluate(_spec(row["checkpoint"]), row)
            self._update(loop_id, i, step="evaluated", eval_run_id=run_id, guard_run_id=guard_id)
            row = self._row(loop_id, i)
        assert row is not None and row["step"] == "evaluated"
        decision, reason, accepted, comparison = self._decide(previous, row)
        trained = self.store.scalar("SELECT tokens_trained FROM training_runs WHERE training_id = ?", [row["training_id"]]) or 0
        work = Work(train_tokens=int(trained)) + self._eval_work(row["eval_run_id"], row["guard_run_id"])
        self._update(
            loop_id, i, step="decided", decision=decision, reason=reason, accepted=accepted,
            comparison=comparison, tokens_trained=work.train_tokens,
            tokens_evaluated=work.eval_input_tokens + work.eval_output_tokens,
            cost=estimate(work, self.prices), finished_at=utcnow(),
        )
        self.reporter.log(f"iteration {i}: [bold]{decision}[/] — {reason}")
        self._notify(loop_id, i)
        final = self._row(loop_id, i)
        assert final is not None
        return self._result(final)

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

    def _evaluate(self, spec: ModelSpec, row: Mapping[str, Any]) -> tuple[int, int | None]:
        backend = load_backend(spec, self.plugins.registry)  # one load serves the suite and the guard
        try:
            options = EvalOptions(limit=self.config.limit, seed=self.config.seed, executor=self.executor)
            run = evaluate(self.suite, backend, self.store, self.plugins, options, reporter=self.reporter)
            guard_id = None
            if self.guard is not None:
                guard_options = EvalOptions(
                    limit=self.config.guard_limit, seed=self.config.seed, executor=self.executor
                )
                guard = evaluate(self.guard, backend, self.store, self.plugins, guard_options, reporter=self.reporter)
                guard_id = guard.run_id
        finally:
            backend.close()
        return run.run_id, guard_id

    def _cluster(self, loop_id: int, previous: Mapping[str, Any]) -> int:
        from harness.clustering import cluster_run

        # Match against the clusters that made the previous checkpoint, when there are any.
        earlier = previous.get("clustering_id")
        result = cluster_run(
            self.store,
            previous["eval_run_id"],
            self.plugins.registry,
            featurizer=self.config.featurizer,
            featurizer_args=self.config.featurizer_args,
            clusterer=self.config.clusterer,
            clusterer_args=self.config.clusterer_args,
            previous_clustering=earlier,
        )
        sizes = ", ".join(f"{c.id}:{c.size}" for c in result.clusters)
        self.reporter.log(f"clustered {sum(c.size for c in result.clusters)} failures ({sizes})")
        return result.clustering_id

    def _gather(self, previous: Mapping[str, Any], clustering_id: int) -> str:
        from harness.datasets import build_dataset

        manifest = build_dataset(
            self.store,
            previous["eval_run_id"],
            clustering_id,
            self.plugins.registry,
            source=self.config.source,
            source_args=self.config.source_args,
            budget=self.config.budget,
            selection=self.config.selection,
            parent=previous.get("manifest_hash"),
            seed=self.config.seed + int(previous["iteration"]),
            suites_against=[s for s in (self.suite, self.guard) if s is not None],
            make_backend=lambda spec: load_backend(spec, self.plugins.registry),
            reporter=self.reporter,
        )
        self.reporter.log(
            f"dataset {manifest.manifest_hash[:12]}: {manifest.n_added} rows added, {manifest.n_rows} in all"
        )
        return manifest.manifest_hash

    def _train(
        self, loop_id: int, i: int, previous: Mapping[str, Any], manifest_hash: str
    ) -> tuple[int, ModelSpec, str]:
        from harness.datasets import load_manifest_rows

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
        output = self._output_dir(loop_id) / f"iteration-{i}"
        if output.is_dir() and any((output / marker).is_file() for marker in ("adapter_config.json", "config.json")):
            # Training finished but the loop stopped before recording it: train again
            # (same seed, same data, same weights) rather than trust an unrecorded model.
            shutil.rmtree(output)
        args = self.trainer_args.model_copy(update={"resume": True, "seed": self.config.seed})
        training_id = start_training_run(
            self.store, trainer=self.config.trainer, args=args, manifest_hash=manifest_hash,
            base=start, base_hash=start_hash, output=output,
        )
        self.reporter.log(f"training {self.config.trainer} on {len(train)} rows from {_describe(start)}")
        try:
            with self.reporter.task("training steps", total=None) as advance:
                outcome = self.trainer.train(
                    start, train, [], output, args, prompt=self.suite.config.prompt, progress=advance
                )
        except BaseException as exc:
            fail_training_run(self.store, training_id, f"{type(exc).__name__}: {exc}")
            raise
        finish_training_run(self.store, training_id, outcome)
        self.reporter.log(
            f"trained {outcome.steps} steps, {outcome.tokens_trained} tokens "
            f"({outcome.tokens_per_second:.0f} tokens/s) in {outcome.wall_time_s:.0f}s"
        )
        return training_id, outcome.checkpoint, outcome.checkpoint_hash

    # -- deciding ---------------------------------------------------------------------

    def _decide(self, previous: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str, bool, dict[str, Any]]:
        main = self.suite.config.main
        suite_cmp = compare_runs(self.queries, previous["eval_run_id"], row["eval_run_id"],
                                 resamples=self.config.resamples, seed=self.config.seed)
        guard_cmp: list[MetricComparison] = []
        if self.guard is not None and previous.get("guard_run_id") and row.get("guard_run_id"):
            guard_cmp = compare_runs(self.queries, previous["guard_run_id"], row["guard_run_id"],
                                     resamples=self.config.resamples, seed=self.config.seed)
        guard_watch = set(self.config.guard_metrics or ([self.guard.config.main] if self.guard else []))
        decision, reason = decide(
            next(c for c in suite_cmp if c.metric == main),
            [c for c in guard_cmp if c.metric in guard_watch],
            suite=self.suite.name,
            guard_suite=self.guard.name if self.guard else None,
            target=self._target(),
            alpha=self.config.alpha,
        )
        comparison = {
            "metrics": [_comparison_record(c) for c in suite_cmp],
            "guard": [_comparison_record(c) for c in guard_cmp],
            "clusters": self._cluster_progress(row),
            "issues": self._issue_counts(previous["eval_run_id"], row["eval_run_id"]),
        }
        accepted = decision in ("continue", "target_met")
        return decision, reason, accepted, comparison

    def _cluster_progress(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """How many members of each targeted cluster still fail on the new checkpoint."""
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
            [row["eval_run_id"], row["clustering_id"]],
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

    def _eval_work(self, run_id: int, guard_id: int | None) -> Work:
        row = self.store.query(
            "SELECT coalesce(sum(g.prompt_tokens), 0) AS input, coalesce(sum(g.completion_tokens), 0) AS output "
            "FROM run_generations rg JOIN generations g USING (cache_key) WHERE list_contains(?, rg.run_id)",
            [[r for r in (run_id, guard_id) if r is not None]],
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
        )

    def _notify(self, loop_id: int, iteration: int) -> None:
        row = self._row(loop_id, iteration)
        assert row is not None
        payload = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        failures = self.plugins.notify("harness_iteration_finished", loop_id=loop_id, iteration=payload)
        for failure in failures:
            self.reporter.log(f"[yellow]plugin {failure.plugin!r} failed in {failure.hook}: {failure.message}[/]")


def decide(
    main: MetricComparison,
    guard: Sequence[MetricComparison],
    *,
    suite: str,
    guard_suite: str | None = None,
    target: float | None,
    alpha: float = 0.05,
) -> tuple[str, str]:
    """The decision after comparing a new checkpoint with the last accepted one.

    "Significant" is `MetricComparison.significant`: p < alpha and, for the bootstrap,
    a 95% interval of the change that excludes 0."""
    test = main.test
    if test is None:
        return "no_gain", f"{suite} {main.metric} could not be tested: {main.not_tested}"
    change = (
        f"{main.metric} {test.score_a:.4g} -> {test.score_b:.4g} "
        f"(p={test.p_value:.3g}, change {test.difference:+.3g}, 95% CI [{test.ci_low:+.3g}, {test.ci_high:+.3g}])"
    )
    outcome = main.outcome(alpha)
    if outcome == "worse":
        return "rollback", f"{suite} got significantly worse: {change}"
    for g in guard:
        if g.outcome(alpha) == "worse" and g.test is not None:
            return "rollback", (
                f"the guard suite {guard_suite} got significantly worse (forgetting): "
                f"{g.metric} {g.test.score_a:.4g} -> {g.test.score_b:.4g} (p={g.test.p_value:.3g})"
            )
    if target is not None:
        reached = test.score_b >= target if main.higher_is_better else test.score_b <= target
        if reached:
            return "target_met", f"{change} reaches the target {target:g}"
    if outcome == "better":
        return "continue", f"{suite} improved: {change}"
    return "no_gain", f"no significant gain on {suite}: {change}"


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
