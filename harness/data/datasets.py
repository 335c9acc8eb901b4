"""Building a training dataset for a run's clusters of failures, within a budget.

The rows come from the data-source plugins, pass curation (`harness.data.curation`) and
are stored as a new version whose parent is the previous dataset (`harness.data.manifests`).
The same inputs give the same rows and therefore the same hash: sources are seeded, and
everything whose order does not matter is sorted.

How the budget is split: each group of failures (every cluster, and the unclustered
failures as one more group) gets budget x weighted size / weighted failures rows, rounded
down, where a group's weight is 1 unless the previous iteration shows that rows aimed at
it did not move it (see `cluster_weights`: half, with the reason in the provenance of its
rows and in `Manifest.budget_notes`); the rows
that rounding leaves over go one each to the groups with the largest remainders (ties:
larger groups first, the unclustered group last), so the shares always add up to the
budget. Each source is asked for its share plus `overfetch` (50% by default) more, so
that rows curation drops are replaced by the next best, and each group keeps the first
`share` rows that survive. A group still short of its share, whose source returned all
it was asked for, is asked again for twice as many (at most twice more), since curation
may drop many rows (e.g. rows another cluster took first, or rows already in the
parent); a group can end up short when its source runs dry.
"""

from __future__ import annotations

import math
import typing
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cluster.clustering import UNCLUSTERED, Cluster, latest_clustering, load_clusters, load_failures
from harness.data.curation import CurationResult, EvalIndex, build_eval_index, curate
from harness.data.manifests import (
    BUILT_SELECTIONS,
    Manifest,
    canonical_example,
    dataset_hash,
    load_manifest,
    save_manifest,
)
from harness.errors import ConfigError, HarnessError, NotFoundError, PluginError
from harness.generate.backends import load_backend
from harness.progress import NullReporter, Reporter
from harness.store import Store
from harness.store.clusters import clustered_run, continued_clusters
from harness.store.runs import run_sample_rows, run_suite_source
from harness.suite.files import validate_args
from harness.suite.load import Suite, builtin_suites, load_suite
from harness.types import Sample, TrainingExample

if TYPE_CHECKING:
    from harness.components.contracts import Backend
    from harness.components.embedding import Embedder
    from harness.components.registry import Registry
    from harness.types import ModelSpec

TOP_UP_ROUNDS = 2
"""How many times a cluster left short of its share by curation is asked again, for
twice as many rows each time."""


def split_budget(
    budget: int, clusters: Sequence[Cluster], weights: Mapping[int, float] | None = None
) -> dict[int, int]:
    """Cluster id -> rows, proportional to cluster size times its weight (1 unless
    `weights` says otherwise; largest remainder, see the module docstring). Clusters are
    taken in the given order for ties."""
    weights = weights or {}
    sizes = [c.size * weights.get(c.id, 1.0) for c in clusters]
    total = sum(sizes)
    if total == 0 or budget <= 0:
        return {c.id: 0 for c in clusters}
    quotas = [budget * size / total for size in sizes]
    shares = [math.floor(q) for q in quotas]
    left = budget - sum(shares)
    order = sorted(
        range(len(clusters)),
        key=lambda i: (-(quotas[i] - shares[i]), clusters[i].id == UNCLUSTERED, -clusters[i].size, i),
    )
    for i in order[:left]:
        shares[i] += 1
    return {c.id: s for c, s in zip(clusters, shares)}


STALLED_SHARE = 0.8
"""A cluster 'did not move' when at least this share of the failures it had still fail
after an iteration that gave it rows."""
STALLED_WEIGHT = 0.5
"""The budget weight of a cluster that did not move: half its share by size."""


@dataclass(frozen=True)
class BudgetWeight:
    weight: float
    reason: str


def cluster_weights(store: Store, clustering_id: int, parent: Manifest | None) -> dict[int, BudgetWeight]:
    """Cluster id -> budget weight, from what the previous iteration did for it: a cluster
    that continues one the parent dataset gave rows to, of whose members at least
    `STALLED_SHARE` still fail, gets `STALLED_WEIGHT` (the rows aimed at it did not move
    it, so more of the same is worth less than rows for the other clusters). Clusters
    without such a history keep weight 1 and are not listed."""
    if parent is None or parent.clustering_id is None:
        return {}
    given = Counter(row.cluster for row in parent.added if row.cluster is not None)
    changes = continued_clusters(store, clustering_id, parent.clustering_id)
    weights = {}
    for change in changes:
        rows, size, still = given[change["previous_cluster"]], change["previous_size"], change["still_failing"]
        if rows and size and still / size >= STALLED_SHARE:
            weights[int(change["cluster_id"])] = BudgetWeight(
                STALLED_WEIGHT,
                f"did not move: continues cluster {change['previous_cluster']}, which got {rows} rows, "
                f"and {still} of its {size} failures still fail",
            )
    return weights


def load_run_suite(store: Store, run_id: int) -> tuple[Suite, list[Suite]]:
    """The suite a run evaluated (from its file, else the built-in of that name), and
    the suites to decontaminate against for it: the whole suite (every split) plus, when
    the suite file changed since the run, the samples the run actually stored. For a run
    of one split the first is that split alone, so that a data source given it never
    sees the samples of another split."""
    info = run_suite_source(store, run_id)
    if info is None:
        raise NotFoundError(f"no run {run_id} in {store.path}; `harness runs` lists them")
    path = Path(info["suite_path"])
    if path.is_file():
        suite = load_suite(path)
    elif info["suite_name"] in builtin_suites():
        suite = load_suite(info["suite_name"])
    else:
        raise NotFoundError(
            f"run {run_id} evaluated suite {info['suite_name']!r} from {path}, which no longer exists"
        )
    stored = [
        Sample(id=r["sample_id"], instruction=r["instruction"], input=r["input"], references=tuple(r["refs"]))
        for r in run_sample_rows(store, run_id)
    ]
    own = suite.split(info["split"]) if info["split"] else suite
    known = {(s.id, s.instruction, s.input, s.references) for s in suite.samples}
    if all((s.id, s.instruction, s.input, s.references) in known for s in stored):
        return own, [suite]
    as_run = Suite(suite.config, suite.path, tuple(stored), info["suite_hash"])
    return own, [suite, replace_name(as_run, f"{suite.name}@run{run_id}")]


def replace_name(suite: Suite, name: str) -> Suite:
    return Suite(suite.config.model_copy(update={"name": name}), suite.path, suite.samples, suite.hash)


def eval_suites(run_suites: Sequence[Suite], names: Sequence[str | Path | Suite] | None) -> list[Suite]:
    """The suites to decontaminate against: `names` (loaded suites, built-in names or
    paths) when given, else every built-in suite; the run's suite(s) always. Sorted by name."""
    chosen: dict[str, Suite] = {s.name: s for s in run_suites}
    for name in names if names is not None else list(builtin_suites()):
        if isinstance(name, Suite):
            chosen.setdefault(name.name, name)
            continue
        if str(name) in chosen:  # the run's own suite, by name
            continue
        suite = load_suite(name)
        chosen.setdefault(suite.name, suite)
    return [chosen[n] for n in sorted(chosen)]


def prepare_source(
    registry: Registry | Any,
    source: str,
    source_args: Mapping[str, Any] | None,
    selection: str,
    suite: Suite,
) -> tuple[Any, Any]:
    """The data source and its validated arguments, its inputs checked before anything
    is written by its `preflight` (the built-in pool, augment and annotate sources read
    and validate their files there)."""
    registry = getattr(registry, "registry", registry)
    component = registry.data_source(source, where="--source")
    args_in = dict(source_args or {})
    if selection != "targeted" or "selection" in args_in:
        field_info = component.Args.model_fields.get("selection")
        offered = typing.get_args(field_info.annotation) if field_info is not None else ()
        if selection not in offered:
            raise ConfigError(f"data source {source!r} has no {selection} selection; use --source pool")
        if args_in.setdefault("selection", selection) != selection:
            raise ConfigError(
                f"--selection {selection} disagrees with the source argument selection={args_in['selection']}"
            )
    args = validate_args(component, args_in, f"data source {source!r}")
    component.preflight(suite, args)
    return component, args


class _Gatherer:
    """Asks the data source for one cluster's rows and checks what comes back."""

    def __init__(
        self,
        registry: Registry,
        component: Any,
        args: Any,
        source: str,
        failures: Sequence[Any],
        suite: Suite,
        seed: int,
        index: EvalIndex,
        make_backend: Callable[[ModelSpec], Backend],
        embedder: Callable[[], Embedder] | None,
        reporter: Reporter,
    ):
        self.plugin = registry.get("data_source", source).plugin.name
        self.component, self.args, self.source = component, args, source
        self.by_id = {f.sample.id: f for f in failures}
        self.suite, self.seed, self.exclude = suite, seed, index.excluded_inputs
        self.make_backend, self.embedder, self.reporter = make_backend, embedder, reporter

    def __call__(self, cluster: Cluster, budget: int) -> tuple[list[TrainingExample], Counter[str]]:
        from harness.components.contracts import DataRequest

        drops: Counter[str] = Counter()
        request = DataRequest(
            cluster=cluster,
            failures=tuple(self.by_id[m] for m in cluster.members if m in self.by_id),
            budget=budget,
            suite=self.suite,
            seed=self.seed,
            embedder=self.embedder,
            make_backend=self.make_backend,
            exclude_inputs=self.exclude,
            on_drop=lambda reason, n: drops.update({reason: n}),
            reporter=self.reporter,
        )
        hook = f"{self.source}.gather"
        try:
            found = self.component.gather(request, self.args)
        except HarnessError:
            raise
        except Exception as exc:
            raise PluginError(
                self.plugin, hook, f"raised {type(exc).__name__}: {exc} (cluster {cluster.id})"
            ) from exc
        if not isinstance(found, list) or not all(isinstance(e, TrainingExample) for e in found):
            raise PluginError(
                self.plugin, hook, f"must return a list of TrainingExample (cluster {cluster.id})"
            )
        if len(found) > budget:
            raise PluginError(
                self.plugin,
                hook,
                f"returned {len(found)} rows for a budget of {budget} (cluster {cluster.id})",
            )
        where = f"data source {self.source!r}, cluster {cluster.id}"
        rows = [
            canonical_example(replace(e, source=e.source or self.source, cluster=cluster.id), where) for e in found
        ]
        return rows, drops


def build_dataset(
    store: Store,
    run_id: int,
    clustering_id: int | None,
    registry: Registry | Any,
    *,
    source: str = "pool",
    source_args: Mapping[str, Any] | None = None,
    budget: int,
    selection: str = "targeted",
    parent: str | None = None,
    seed: int = 0,
    suites_against: Sequence[str | Path | Suite] | None = None,
    make_backend: Callable[[ModelSpec], Backend] | None = None,
    embedder: Callable[[], Embedder] | None = None,
    output: Path | None = None,
    overfetch: float = 0.5,
    ngram: int = 13,
    near_duplicate_threshold: float = 0.8,
    reporter: Reporter | None = None,
) -> Manifest:
    """Gather up to `budget` new rows aimed at the run's clusters of failures from
    `source`, curate them (against the parent's rows and the eval suites), and store the
    resulting dataset (parent rows + new rows). `clustering_id` None: the run's latest
    clustering. `registry`: a Registry, or the Plugins that hold one. `suites_against`:
    suite names or paths (default: every built-in suite); the run's suite is always
    included. `selection="random"`: a seeded uniform draw of the same size from the
    source's pool (the baseline); `"random_on_task"`: the same among the pool rows of the
    suite's own task (the control that shows whether clusters add more than the task).

    Nothing is written unless the whole build succeeds."""
    registry = getattr(registry, "registry", registry)
    reporter = reporter or NullReporter()
    if budget < 1:
        raise ConfigError(f"budget must be at least 1, got {budget}")
    if selection not in BUILT_SELECTIONS:
        raise ConfigError(
            f"selection must be one of {', '.join(BUILT_SELECTIONS)}, got {selection!r} "
            "(imports use `harness data import`)"
        )
    if overfetch < 0:
        raise ConfigError(f"overfetch must be 0 or more, got {overfetch}")
    if seed < 0:
        raise ConfigError(f"seed must be 0 or more, got {seed}")
    failures = load_failures(store, run_id)
    if not failures:
        raise HarnessError(f"run {run_id} has no failing samples: there is nothing to aim training data at")
    clustering_id = clustering_of(store, run_id, clustering_id)
    clusters = load_clusters(store, clustering_id)
    suite, run_suites = load_run_suite(store, run_id)
    component, args = prepare_source(registry, source, source_args, selection, suite)
    parent_manifest = load_manifest(store, parent) if parent else None
    existing = list(parent_manifest.rows) if parent_manifest else []
    index = build_eval_index(eval_suites(run_suites, suites_against), n=ngram)

    # Controls do not look at the failures, so they take no lessons from them either.
    weights = cluster_weights(store, clustering_id, parent_manifest) if selection == "targeted" else {}
    shares = split_budget(budget, clusters, {c: w.weight for c, w in weights.items()})
    gather = _Gatherer(
        registry,
        component,
        args,
        source,
        failures,
        suite,
        seed,
        index,
        make_backend or (lambda spec: load_backend(spec, registry)),
        embedder,
        reporter,
    )
    asked = {c.id: shares[c.id] + math.ceil(overfetch * shares[c.id]) for c in clusters if shares[c.id]}
    found: dict[int, list[TrainingExample]] = {}
    drops: dict[int, Counter[str]] = {}
    for round_ in range(TOP_UP_ROUNDS + 1):
        for cluster in clusters:
            if cluster.id in asked and (
                cluster.id not in found or len(found[cluster.id]) < asked[cluster.id]
            ):
                found[cluster.id], drops[cluster.id] = gather(cluster, asked[cluster.id])
        candidates = [row for cluster in clusters for row in found.get(cluster.id, ())]
        result = curate(
            candidates,
            existing=existing,
            eval_index=index,
            near_duplicate_threshold=near_duplicate_threshold,
            allow_own_eval_item=True,
        )
        added = _note_weights(_take_shares(result, shares), weights)
        taken = Counter(row.cluster for row in added)
        # A cluster short of its share whose source filled its request may have more.
        short = [c for c in asked if taken[c] < shares[c] and len(found[c]) >= asked[c]]
        if not short or round_ == TOP_UP_ROUNDS:
            break
        for c in short:
            asked[c] *= 2
    dropped = Counter(result.dropped) + sum(drops.values(), Counter())
    if not added:
        raise HarnessError(
            f"no new rows survived curation for run {run_id} from source {source!r} "
            f"({len(candidates)} candidates; dropped: {describe_counts(dropped) or 'none'})"
        )
    rows = tuple(existing) + tuple(added)
    manifest = Manifest(
        hash=dataset_hash(rows),
        rows=rows,
        n_added=len(added),
        selection=selection,
        parent=parent_manifest.hash if parent_manifest else None,
        run_id=run_id,
        clustering_id=clustering_id,
        sources=dict(sorted(Counter(r.source for r in added).items())),
        cluster_counts=cluster_counts(added),
        dropped=dict(sorted(dropped.items())),
        decontaminated_against=tuple({"name": s.name, "hash": s.hash} for s in index.suites),
    )
    return save_manifest(store, manifest, output)


def clustering_of(store: Store, run_id: int, clustering_id: int | None) -> int:
    if clustering_id is None:
        latest = latest_clustering(store, run_id)
        if latest is None:
            raise NotFoundError(
                f"run {run_id} has no clustering of its failures yet: `harness data add {run_id}` "
                "clusters it first (or call harness.cluster.clustering.cluster_run)"
            )
        return int(latest)
    owner = clustered_run(store, clustering_id)
    if owner is None:
        raise NotFoundError(f"no clustering {clustering_id} in {store.path}")
    if owner != run_id:
        raise ConfigError(f"clustering {clustering_id} is of run {owner}, not run {run_id}")
    return clustering_id


def _note_weights(rows: list[TrainingExample], weights: Mapping[int, BudgetWeight]) -> list[TrainingExample]:
    """The rows, those of a down-weighted cluster saying why in their provenance."""
    out = []
    for row in rows:
        w = weights.get(row.cluster) if row.cluster is not None else None
        if w is not None:
            row = replace(row, provenance={**row.provenance, "budget_weight": w.weight, "budget_reason": w.reason})
        out.append(row)
    return out


def _take_shares(result: CurationResult, shares: Mapping[int, int]) -> list[TrainingExample]:
    """The first `share` kept rows of each cluster, in candidate order."""
    taken: Counter[int] = Counter()
    added = []
    for row in result.kept:
        cluster = row.cluster if row.cluster is not None else UNCLUSTERED
        if taken[cluster] < shares.get(cluster, 0):
            taken[cluster] += 1
            added.append(row)
    return added


def cluster_counts(rows: Sequence[TrainingExample]) -> dict[str, int]:
    counts = Counter(r.cluster for r in rows)
    ordered = sorted(counts, key=lambda c: (c is None, c == UNCLUSTERED, c if c is not None else 0))
    return {("none" if c is None else str(c)): counts[c] for c in ordered}


def describe_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
