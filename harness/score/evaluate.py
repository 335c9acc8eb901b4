"""Evaluate a suite against a checkpoint: generate (through the cache), score, detect, store.

    from harness import evaluate, load_suite, load_plugins, ModelSpec, Store
    with Store.writer() as store:
        summary = evaluate(load_suite("dictionary"), ModelSpec("default"), store, load_plugins())

Nothing is written before the suite, its components and the model have all loaded, so
bad input leaves no trace. From then on every chunk of generations is committed as it
finishes; a run that is interrupted is resumed by the next identical request (same
suite, checkpoint and parameters) without generating again what it already has.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from harness import environment
from harness.components.contracts import Backend
from harness.components.plugin_manager import Plugins
from harness.errors import ConfigError
from harness.generate.backends import load_backend
from harness.generate.cache import generate_with_cache, loglikelihoods_with_cache, make_jobs
from harness.generate.executors import Executor
from harness.progress import NullReporter, Reporter
from harness.score.scoring import (
    ComponentError,
    Components,
    ScoringResult,
    resolve_components,
    score_items,
)
from harness.store import Store
from harness.store import runs as run_store
from harness.store.core import utcnow
from harness.store.generations import load_generations
from harness.suite.load import Suite
from harness.types import DEFAULT_CHUNK, GenerationConfig, Item, ModelSpec


@dataclass
class EvalOptions:
    """How to run an evaluation, beyond what the suite says."""

    limit: int | None = None
    """Evaluate only the first N samples."""
    seed: int | None = None
    """Overrides the suite's generation seed."""
    max_new_tokens: int | None = None
    """Overrides the suite's max_new_tokens."""
    label: str | None = None
    resume: bool = True
    """Continue an interrupted identical run instead of starting a new one."""
    confidence: float = 0.95
    resamples: int = 1000
    chunk_size: int = DEFAULT_CHUNK
    executor: Executor | None = None
    """Where missing generations are made: None = this process; a `RayExecutor` = a Ray
    cluster. Outputs and the run's identity do not depend on it."""


@dataclass
class RunSummary:
    """What an evaluation produced (the full record is in the store)."""

    run_id: int
    status: str
    suite: str
    n_samples: int
    generated: int
    cached: int
    corpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    issue_counts: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    errors: list[ComponentError] = field(default_factory=list)
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def check_generation_fits(
    backend: Backend, generation: GenerationConfig, suite: Suite, options: EvalOptions
) -> None:
    """Refuse a `max_new_tokens` the model cannot produce (more than its whole context),
    before a run is recorded: such a run would only be left `running` when stopped."""
    context = backend.context_length
    if context is None or generation.max_new_tokens <= context:
        return
    where = "--max-new-tokens" if options.max_new_tokens is not None else f"{suite.path}: generation.max_new_tokens"
    raise ConfigError(
        f"{where}: {generation.max_new_tokens} is more than the model's context of {context} "
        f"tokens (prompt and output together); give at most {context}"
    )


def effective_generation(suite: Suite, options: EvalOptions) -> GenerationConfig:
    updates: dict[str, Any] = {}
    if options.seed is not None:
        updates["seed"] = options.seed
    if options.max_new_tokens is not None:
        updates["max_new_tokens"] = options.max_new_tokens
    return suite.config.generation.model_copy(update=updates)


def evaluate(
    suite: Suite,
    model: ModelSpec | Backend,
    store: Store,
    plugins: Plugins,
    options: EvalOptions | None = None,
    *,
    reporter: Reporter | None = None,
) -> RunSummary:
    """Run `suite` against a checkpoint (a spec to load, or an already loaded backend)."""
    options = options or EvalOptions()
    reporter = reporter or NullReporter()
    suite = suite.limited(options.limit)
    components = resolve_components(suite, plugins.registry)
    generation = effective_generation(suite, options)
    owns_backend = isinstance(model, ModelSpec)
    backend = load_backend(model, plugins.registry) if isinstance(model, ModelSpec) else model
    try:
        check_generation_fits(backend, generation, suite, options)
        return _evaluate_loaded(suite, backend, store, plugins, options, reporter, components, generation)
    finally:
        if owns_backend:
            backend.close()


def evaluate_adapters(
    suite: Suite,
    model: ModelSpec,
    adapters: list[str],
    store: Store,
    plugins: Plugins,
    options: EvalOptions | None = None,
    *,
    reporter: Reporter | None = None,
) -> list[RunSummary]:
    """One run per adapter on the base `model`, in order. A backend that can switch
    adapters (`check_adapter` and `switch_adapter`, as `hf` has with peft) loads the base
    once and checks every adapter before the first run starts; any other backend is
    loaded once per adapter."""
    if not adapters:
        raise ConfigError("evaluate_adapters needs at least one adapter")
    backend = load_backend(replace(model, adapter=adapters[0]), plugins.registry)
    try:
        switch = getattr(backend, "switch_adapter", None)
        if switch is not None:
            for adapter in adapters[1:]:
                backend.check_adapter(adapter)  # type: ignore[attr-defined]  # before any run
        summaries = []
        for adapter in adapters:
            if adapter != backend.spec.adapter:
                if switch is not None:
                    switch(adapter)
                else:
                    backend.close()
                    backend = load_backend(replace(model, adapter=adapter), plugins.registry)
                    switch = None
            summaries.append(evaluate(suite, backend, store, plugins, options, reporter=reporter))
        return summaries
    finally:
        backend.close()


def _evaluate_loaded(
    suite: Suite,
    backend: Backend,
    store: Store,
    plugins: Plugins,
    options: EvalOptions,
    reporter: Reporter,
    components: Components,
    generation: GenerationConfig,
) -> RunSummary:
    prompts = {s.id: backend.format_prompt(s, suite.config.prompt) for s in suite.samples}
    header = _run_header(suite, backend, plugins, components, generation, options)
    run_id = run_store.find_resumable(store, header["fingerprint"]) if options.resume else None
    resumed = run_id is not None
    if run_id is None:
        run_id = run_store.create_run(store, header, suite.samples, prompts)
    else:
        run_store.mark_running(store, run_id)
        reporter.log(f"resuming run {run_id}")
    hook_failures = plugins.notify("harness_eval_started", run_id=run_id, run=_public_header(header))
    try:
        started = time.perf_counter()
        needs = components.needs()
        draw_config = (
            generation.model_copy(update={"temperature": needs.draw_temperature}) if needs.draws else None
        )
        jobs = make_jobs(backend.output_hash, prompts, generation, needs.draws, draw_config)
        generated, cached = generate_with_cache(
            store,
            run_id,
            backend,
            jobs,
            reporter=reporter,
            chunk_size=options.chunk_size,
            executor=options.executor,
        )
        nll: dict[str, tuple[float, int]] = {}
        if needs.reference_nll:
            pairs = {s.id: (prompts[s.id], s.reference) for s in suite.samples}
            nll = loglikelihoods_with_cache(store, backend, pairs, reporter=reporter, chunk_size=options.chunk_size)
        generation_s = time.perf_counter() - started

        started = time.perf_counter()
        items = _items(suite, load_generations(store, run_id), needs.draws, nll)
        with reporter.task("scoring", total=1) as advance:
            result = score_items(
                items,
                components,
                confidence=options.confidence,
                resamples=options.resamples,
                seed=generation.seed,
                cluster_by=suite.config.cluster_by,
            )
            advance(1)
        result.errors.extend(_hook_errors(hook_failures))
        run_store.save_results(store, run_id, result)
        scoring_s = time.perf_counter() - started
    except BaseException as exc:
        status = "running" if isinstance(exc, KeyboardInterrupt) else "failed"
        run_store.finish_run(store, run_id, status, error=f"{type(exc).__name__}: {exc}")
        raise

    summary = _summarize(run_id, suite, result, generated, cached, resumed)
    late = _hook_errors(
        plugins.notify("harness_eval_finished", run_id=run_id, summary=_public_summary(summary))
    )
    if late:
        run_store.record_errors(store, run_id, late)
        summary.errors.extend(late)
    summary.status = "completed_with_errors" if summary.errors else "completed"
    run_store.finish_run(store, run_id, summary.status, generation_s=generation_s, scoring_s=scoring_s)
    return summary


def _items(
    suite: Suite,
    generations: Mapping[tuple[str, int], Any],
    draws: int,
    nll: Mapping[str, tuple[float, int]],
) -> list[Item]:
    items = []
    for sample in suite.samples:
        first = generations[(sample.id, 0)]
        extra = tuple(generations[(sample.id, d)] for d in range(1, draws + 1))
        ref_nll, ref_tokens = nll.get(sample.id, (None, None))
        items.append(Item(sample, first, extra, ref_nll, ref_tokens))
    return items


def _run_header(
    suite: Suite,
    backend: Backend,
    plugins: Plugins,
    components: Components,
    generation: GenerationConfig,
    options: EvalOptions,
) -> dict[str, Any]:
    spec = backend.spec
    output_options = {k: v for k, v in dict(spec.options).items() if k not in backend.speed_only_options}
    metrics = [m.config.model_dump(mode="json") for m in components.metrics]
    detectors = [d.config.model_dump(mode="json") for d in components.detectors]
    identity = {
        "suite": suite.hash,
        "checkpoint": backend.output_hash,  # the checkpoint hash unless computed in reduced precision
        "backend": spec.backend,
        "backend_options": output_options,
        "prompt": suite.config.prompt.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
        "metrics": metrics,
        "detectors": detectors,
        "n": len(suite.samples),
        "confidence": options.confidence,
        "resamples": options.resamples,
    }
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    model_hash = getattr(backend, "model_hash", backend.checkpoint_hash)
    adapter_hash = getattr(backend, "adapter_hash", None)
    described = backend.describe()
    return {
        "fingerprint": fingerprint,
        "suite_name": suite.name,
        "suite_version": suite.version,
        "suite_hash": suite.hash,
        "suite_path": str(suite.path),
        "model_path": str(described.get("path") or spec.path),
        "adapter_path": described.get("adapter") or spec.adapter,
        "model_hash": model_hash,
        "adapter_hash": adapter_hash,
        "checkpoint_hash": backend.checkpoint_hash,
        "backend": spec.backend,
        "backend_options": dict(spec.options),
        "model_info": described,
        "prompt": suite.config.prompt.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
        "seed": generation.seed,
        "metrics": metrics,
        "detectors": detectors,
        "main_metric": suite.config.main,
        "plugin_versions": plugins.versions(),
        "library_versions": environment.library_versions(),
        "git_revision": environment.git_revision(),
        "host": environment.hostname(),
        "n_samples": len(suite.samples),
        "cluster_by": suite.config.cluster_by,
        "split": suite.split_name,
        "label": options.label,
        "status": "running",
        "started_at": utcnow(),
    }


def _public_header(header: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in header.items()}


def _hook_errors(failures: list[Any]) -> list[ComponentError]:
    return [
        ComponentError(plugin=f.plugin, hook=f.hook, component="", message=f.message, traceback=f.traceback)
        for f in failures
    ]


def _summarize(
    run_id: int, suite: Suite, result: ScoringResult, generated: int, cached: int, resumed: bool
) -> RunSummary:
    corpus = {
        m.name: {
            "value": m.corpus,
            "ci_low": m.ci_low,
            "ci_high": m.ci_high,
            "higher_is_better": m.higher_is_better,
            "target": m.target,
            "passed": m.passed,
        }
        for m in result.metrics
    }
    counts: dict[str, int] = {}
    for issue in result.issues:
        counts[issue.detector] = counts.get(issue.detector, 0) + 1
    return RunSummary(
        run_id=run_id,
        status="completed",
        suite=suite.name,
        n_samples=len(suite.samples),
        generated=generated,
        cached=cached,
        corpus=corpus,
        issue_counts=counts,
        failures=len(result.failures),
        errors=list(result.errors),
        resumed=resumed,
    )


def _public_summary(summary: RunSummary) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "suite": summary.suite,
        "n_samples": summary.n_samples,
        "generated": summary.generated,
        "cached": summary.cached,
        "corpus": {
            k: {kk: (vv if not isinstance(vv, float) or math.isfinite(vv) else None) for kk, vv in v.items()}
            for k, v in summary.corpus.items()
        },
        "issue_counts": dict(summary.issue_counts),
        "failures": summary.failures,
        "errors": len(summary.errors),
    }
