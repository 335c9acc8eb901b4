"""Grouping a run's failing samples into a few clusters a person would recognise.

A featurizer plugin turns failures into vectors (sentence embeddings, or TF-IDF), a
clusterer plugin groups them, and this module labels each group (its distinctive
terms, its dominant issue, its tags), picks representative examples, stores it, and
matches it against the previous iteration's clusters: since every iteration evaluates
the same suite, a cluster is followed through its members, which says plainly whether
it shrank, vanished or appeared.

Reading failures and storing clusterings is `harness.store.clusters`; its functions are
named here too, as the stage's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from harness.components.contracts import Clusterer, Featurizer
from harness.errors import HarnessError, NotFoundError
from harness.store import Store
from harness.store.clusters import (
    clustered_suite,
    latest_clustering,
    load_clusters,
    load_failures,
    save_clustering,
)
from harness.store.runs import run_main_metric, run_suite_name
from harness.types import UNCLUSTERED, Cluster, ClusterChange, Failure

__all__ = [
    "UNCLUSTERED",
    "Cluster",
    "ClusterChange",
    "ClusteringResult",
    "Failure",
    "cluster_failures",
    "cluster_run",
    "latest_clustering",
    "load_clusters",
    "load_failures",
    "match_clusters",
    "save_clustering",
]


def cluster_failures(
    failures: Sequence[Failure],
    featurizer: Featurizer,
    featurizer_args: BaseModel,
    clusterer: Clusterer,
    clusterer_args: BaseModel,
    *,
    score_metric: str | None = None,
    n_examples: int = 3,
) -> list[Cluster]:
    """Clusters of the failures; failures no cluster took form cluster -1."""
    if not failures:
        raise HarnessError("there are no failures to cluster")
    if len(failures) == 1:
        labels = np.zeros(1, dtype=int)
        features = np.zeros((1, 1))
    else:
        features = np.asarray(featurizer.featurize(failures, featurizer_args), dtype=float)
        if features.shape[0] != len(failures):
            raise HarnessError(
                f"featurizer {featurizer.name!r} returned {features.shape[0]} rows for {len(failures)} failures"
            )
        labels = np.asarray(clusterer.cluster(features, clusterer_args), dtype=int)
        if labels.shape != (len(failures),):
            raise HarnessError(
                f"clusterer {clusterer.name!r} returned {labels.shape} labels for {len(failures)} failures"
            )
    # Renumber by size so cluster 0 is the largest: stable, readable ids.
    sizes = Counter(int(label) for label in labels if label != UNCLUSTERED)
    order = {old: new for new, (old, _) in enumerate(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))}
    labels = np.array([order.get(int(label), UNCLUSTERED) for label in labels])
    groups = sorted(set(labels.tolist()), key=lambda c: (c == UNCLUSTERED, c))
    terms = _distinctive_terms([[failures[int(i)] for i in np.flatnonzero(labels == g)] for g in groups])
    clusters = []
    for group, top_terms in zip(groups, terms):
        index = np.flatnonzero(labels == group)
        members = [failures[int(i)] for i in index]
        centre = features[index].mean(axis=0)
        distances = np.linalg.norm(features[index] - centre, axis=1)
        nearest = [members[i].sample.id for i in np.argsort(distances, kind="stable")[:n_examples]]
        reasons = Counter(reason for f in members for reason in f.reasons)
        issue_types = Counter(t for f in members for t in set(f.issue_types))
        dominant = issue_types.most_common(1)[0][0] if issue_types else (
            reasons.most_common(1)[0][0].replace("metric:", "poor ") if reasons else None
        )
        tag_counts = Counter(tag for f in members for tag in set(f.sample.tags))
        tags = tuple(sorted(t for t, n in tag_counts.items() if n >= max(2, 0.5 * len(members))))
        values = [f.scores[score_metric] for f in members if score_metric and score_metric in f.scores]
        clusters.append(
            Cluster(
                id=int(group),
                members=tuple(f.sample.id for f in members),
                label=_label(group, dominant, top_terms, tags),
                top_terms=tuple(top_terms),
                dominant_issue=dominant,
                tags=tags,
                mean_score=float(np.mean(values)) if values else None,
                score_metric=score_metric if values else None,
                examples=tuple(nearest),
                reasons=dict(reasons),
                distances={f.sample.id: float(d) for f, d in zip(members, distances)},
            )
        )
    return clusters


def _distinctive_terms(groups: Sequence[Sequence[Failure]], k: int = 5) -> list[list[str]]:
    """Class-based TF-IDF: the terms frequent in one cluster's texts and rare in the others'."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    # Words every prompt shares (the instruction) say nothing about a cluster.
    common = set(ENGLISH_STOP_WORDS) | {"word", "define", "sentence", "defined", "input", "answer"}
    docs = [" ".join(f.text for f in group) for group in groups]
    try:
        counts = CountVectorizer(stop_words=list(common), token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b").fit(docs)
    except ValueError:  # only stop words
        return [[] for _ in groups]
    matrix = counts.transform(docs).toarray().astype(float)
    tf = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    average = matrix.sum() / max(len(docs), 1)
    idf = np.log(1 + average / np.maximum(matrix.sum(axis=0), 1))
    scores = tf * idf
    vocab = counts.get_feature_names_out()
    result = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:k]
        result.append([str(vocab[i]) for i in top if row[i] > 0])
    return result


def _label(group: int, dominant: str | None, terms: Sequence[str], tags: Sequence[str]) -> str:
    if group == UNCLUSTERED:
        head = "unclustered"
    else:
        head = (dominant or "failures").replace("_", " ")
    parts = [head]
    if tags:
        parts.append("[" + ", ".join(tags) + "]")
    if terms:
        parts.append("— " + ", ".join(terms[:4]))
    return " ".join(parts)


# ---------------------------------------------------------------------------
# Following clusters from one iteration to the next
# ---------------------------------------------------------------------------


def match_clusters(
    previous: Sequence[Cluster], current: Sequence[Cluster], *, min_overlap: float = 0.3
) -> list[ClusterChange]:
    """Match clusters of two runs of the same suite through the samples they share.

    A previous cluster vanished when none of its members fails any more; otherwise it is
    matched (Hungarian assignment on the overlap coefficient) with the current cluster
    that holds most of its members, and shrank or grew by how many of them still fail.
    Current clusters that match nothing appeared."""
    from scipy.optimize import linear_sum_assignment

    prev = [c for c in previous if c.id != UNCLUSTERED]
    cur = [c for c in current if c.id != UNCLUSTERED]
    failing_now = {m for c in current for m in c.members}
    overlap = np.zeros((len(prev), len(cur)))
    for i, p in enumerate(prev):
        for j, c in enumerate(cur):
            shared = len(set(p.members) & set(c.members))
            overlap[i, j] = shared / max(min(p.size, c.size), 1)
    pairs: dict[int, int] = {}
    if prev and cur:
        rows, cols = linear_sum_assignment(-overlap)
        pairs = {int(r): int(c) for r, c in zip(rows, cols) if overlap[r, c] >= min_overlap}
    changes = []
    for i, p in enumerate(prev):
        still = len(set(p.members) & failing_now)
        if i in pairs:
            c = cur[pairs[i]]
            kind = "shrank" if still < p.size else ("grew" if c.size > p.size else "unchanged")
            changes.append(ClusterChange(p.id, c.id, p.size, c.size, still, float(overlap[i, pairs[i]]), kind))
        else:
            kind = "vanished" if still == 0 else "shrank"
            changes.append(ClusterChange(p.id, None, p.size, None, still, 0.0, kind))
    matched = set(pairs.values())
    for j, c in enumerate(cur):
        if j not in matched:
            changes.append(ClusterChange(None, c.id, None, c.size, None, 0.0, "appeared"))
    return changes


@dataclass(frozen=True)
class ClusteringResult:
    clustering_id: int
    run_id: int
    clusters: list[Cluster]
    changes: list[ClusterChange]
    previous_clustering: int | None


def cluster_run(
    store: Store,
    run_id: int,
    registry: Any,
    *,
    featurizer: str = "embedding",
    featurizer_args: Mapping[str, Any] | None = None,
    clusterer: str = "agglomerative",
    clusterer_args: Mapping[str, Any] | None = None,
    previous_clustering: int | None = None,
) -> ClusteringResult:
    """Cluster a stored run's failures, label the clusters, match them against a previous
    clustering (of the same suite) when given, and store everything."""
    from harness.suite.files import validate_args

    feat = registry.featurizer(featurizer, where="--featurizer")
    clus = registry.clusterer(clusterer, where="--clusterer")
    f_args = validate_args(feat, featurizer_args or {}, f"featurizer {featurizer!r}")
    c_args = validate_args(clus, clusterer_args or {}, f"clusterer {clusterer!r}")
    failures = load_failures(store, run_id)
    if not failures:
        raise HarnessError(
            f"run {run_id} has no failing samples (nothing under a metric's sample_threshold or with "
            "an issue at its detector's threshold): there is nothing to cluster"
        )
    main_metric = run_main_metric(store, run_id)
    clusters = cluster_failures(failures, feat, f_args, clus, c_args, score_metric=main_metric)
    changes: list[ClusterChange] = []
    if previous_clustering is not None:
        previous_suite = clustered_suite(store, previous_clustering)
        suite = run_suite_name(store, run_id)
        if previous_suite is None:
            raise NotFoundError(f"no clustering {previous_clustering} in {store.path}")
        if previous_suite != suite:
            raise HarnessError(
                f"clustering {previous_clustering} is of suite {previous_suite!r}, run {run_id} of "
                f"{suite!r}: clusters are matched within one suite"
            )
        changes = match_clusters(load_clusters(store, previous_clustering), clusters)
    clustering_id = save_clustering(
        store,
        run_id,
        clusters,
        featurizer=featurizer,
        featurizer_args=f_args.model_dump(mode="json"),
        clusterer=clusterer,
        clusterer_args=c_args.model_dump(mode="json"),
        previous_clustering=previous_clustering,
        changes=changes,
    )
    return ClusteringResult(clustering_id, run_id, clusters, changes, previous_clustering)
