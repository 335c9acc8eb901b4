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

The loop's configuration is `harness.loop.config`; how an iteration is decided,
`harness.loop.decide`.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.components.plugin_manager import Plugins
from harness.data.manifests import Manifest, save_manifest
from harness.data.seed import file_hash, seed_manifest
from harness.errors import ConfigError, HarnessError
from harness.generate.backends import load_backend
from harness.generate.executors import Executor
from harness.loop.config import IterationResult, LoopConfig, LoopResult, loop_fingerprint
from harness.loop.cost import Work, estimate, load_prices
from harness.loop.decide import DECISION_RULE, STOPPING, Deciding
from harness.progress import NullReporter, Reporter
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.store.core import utcnow
from harness.store.loops import (
    corpus_value,
    create_loop,
    iteration_row,
    last_accepted_iteration,
    loop_output_dir,
    resumable_loop,
    set_loop,
    start_iteration,
    tokens_evaluated,
    tokens_trained,
    update_iteration,
)
from harness.store.queries import Queries
from harness.suite.files import validate_args
from harness.suite.load import load_suite
from harness.types import ModelSpec, spec_from_record, spec_record


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


class _Loop(Deciding):
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
        self.seed: Manifest | None = None
        seed_hash = None
        if config.seed_data:
            # Read and curated now, stored at iteration 0: a bad seed file leaves no loop behind.
            self.seed = seed_manifest(Path(config.seed_data), [s for s in (self.suite, self.guard) if s])
            seed_hash = file_hash(Path(config.seed_data))
        if (
            self.suite.config.pool is None
            and config.source == "pool"
            and "pool" not in config.source_args
            and config.selection != "none"
        ):
            raise ConfigError(
                f"suite {self.suite.name!r} names no pool of training candidates; give one with "
                "--source-arg pool=FILE.jsonl or use another --source"
            )
        self.fingerprint = loop_fingerprint(config, self.suite, self.guard, self.base_hash, seed_hash)
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
        existing = resumable_loop(self.store, self.fingerprint)
        if existing is not None:
            self._set_loop(existing, status="running", stop_reason=None)
            return existing, True
        values = {
            "fingerprint": self.fingerprint,
            "suite_name": self.suite.name,
            "guard_suite": self.guard.name if self.guard else None,
            "base_model": self.base_path,
            "config": self.config.model_dump_json(),
            "mining_split": self.mining.split_name,
            "heldout_split": self.heldout.split_name,
            "split_auto": self.suite.auto_split,
            "split_sizes": json.dumps({name: len(self.suite.split(name).samples) for name in self.suite.split_names}),
        }
        return create_loop(self.store, values, self.output_root), False

    def _set_loop(self, loop_id: int, **fields: Any) -> None:
        set_loop(self.store, loop_id, **fields)

    def _output_dir(self, loop_id: int) -> Path:
        return loop_output_dir(self.store, loop_id)

    # -- iterations ---------------------------------------------------------------

    def _row(self, loop_id: int, iteration: int) -> dict[str, Any] | None:
        return iteration_row(self.store, loop_id, iteration)

    def _update(self, loop_id: int, iteration: int, **fields: Any) -> None:
        update_iteration(self.store, loop_id, iteration, **fields)

    def _stored(self, loop_id: int, iteration: int) -> dict[str, Any]:
        """The iteration's row, which the step just written guarantees."""
        row = self._row(loop_id, iteration)
        assert row is not None, f"loop {loop_id} has no iteration {iteration}"
        return row

    def _start(self, loop_id: int, iteration: int, checkpoint: ModelSpec | None) -> dict[str, Any]:
        row = self._row(loop_id, iteration)
        if row is None:
            start_iteration(self.store, loop_id, iteration, spec_record(checkpoint) if checkpoint else {})
            row = self._row(loop_id, iteration)
            assert row is not None
        return row

    def _iteration_zero(self, loop_id: int) -> IterationResult:
        row = self._start(loop_id, 0, self.base)
        if self.seed is not None and row.get("manifest_hash") is None:
            seed = save_manifest(self.store, self.seed)
            self._update(loop_id, 0, manifest_hash=seed.hash)
            dropped = ", ".join(f"{n} {reason}" for reason, n in seed.dropped.items())
            self.reporter.log(
                f"seed dataset {seed.hash[:12]}: {seed.n_rows} rows from {self.config.seed_data}"
                + (f" (curation dropped {dropped})" if dropped else "")
            )
            row = self._stored(loop_id, 0)
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
            for line, warn in self._power_lines(previous, self._last_decided(loop_id, i)):
                self.reporter.log(f"[yellow]warning:[/] {line}" if warn else line)
            training_id, checkpoint, checkpoint_hash = self._train(loop_id, i, previous, row["manifest_hash"])
            extra = []  # the other training seeds: kept beside the checkpoint for the decision
            for k in range(1, self.config.train_seeds):
                seed_id, seed_spec, seed_hash = self._train(loop_id, i, previous, row["manifest_hash"], k)
                extra.append({"seed": self.config.seed + k, "training_id": seed_id,
                              "checkpoint": spec_record(seed_spec), "checkpoint_hash": seed_hash})
            spec = spec_record(checkpoint) | ({"seeds": extra} if extra else {})
            self._update(loop_id, i, step="trained", training_id=training_id,
                         checkpoint=spec, checkpoint_hash=checkpoint_hash)
            row = self._stored(loop_id, i)
        if row["step"] == "trained":
            run_id, mining_id, guard_id = self._evaluate(spec_from_record(row["checkpoint"]), row)
            seeds = row["checkpoint"].get("seeds") or []
            for extra in seeds:
                extra["eval_run_id"], _, extra["guard_run_id"] = self._evaluate(spec_from_record(extra["checkpoint"]), row)
            self._update(loop_id, i, step="evaluated", eval_run_id=run_id, mining_run_id=mining_id,
                         guard_run_id=guard_id, **({"checkpoint": row["checkpoint"]} if seeds else {}))
            row = self._stored(loop_id, i)
        assert row is not None and row["step"] == "evaluated"
        decision, reason, accepted, comparison = self._decide(previous, row)
        training_ids = [row["training_id"]] + [e["training_id"] for e in row["checkpoint"].get("seeds") or []]
        work = Work(train_tokens=tokens_trained(self.store, training_ids)) + self._eval_work(
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
        accepted = last_accepted_iteration(self.store, loop_id, before)
        if accepted is None:
            raise HarnessError(f"loop {loop_id} has no accepted iteration before {before}")
        row = self._row(loop_id, accepted)
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

        if self.config.selection == "none":
            seed = previous["manifest_hash"]
            self.reporter.log(f"no new data (the control): training on dataset {seed[:12]} as it is")
            return str(seed)

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
            start, start_hash = spec_from_record(previous["checkpoint"]), previous["checkpoint_hash"]
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


    def _meets(self, value: float, target: float) -> bool:
        higher = self.plugins.registry.metric(self.suite.config.main).higher_is_better
        return value >= target if higher else value <= target

    def _main_value(self, run_id: int) -> float | None:
        return corpus_value(self.store, run_id, self.suite.config.main)

    def _eval_work(self, *run_ids: int | None) -> Work:
        prompt_tokens, completion_tokens = tokens_evaluated(self.store, [r for r in run_ids if r is not None])
        return Work(eval_input_tokens=prompt_tokens, eval_output_tokens=completion_tokens)

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


def _describe(spec: ModelSpec) -> str:
    return Path(spec.path).name + (f" + {Path(spec.adapter).name}" if spec.adapter else "")
