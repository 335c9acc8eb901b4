"""Clusterings in the store: a run's failures read back for clustering, and what a
clustering stores (`clusterings`, `clusters`, `cluster_members`, `cluster_changes`).

`harness.cluster.clustering` groups the failures, labels the groups and matches them
against the previous iteration's; reading and writing them is here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import NotFoundError
from harness.store.core import Store, insert, utcnow
from harness.store.runs import run_exists
from harness.types import UNCLUSTERED, Cluster, ClusterChange, Failure, Generation, Issue, Sample

# -- a run's failures ------------------------------------------------------------------


def load_failures(store: Store, run_id: int) -> list[Failure]:
    """The failing samples of a run, in suite order."""
    if not run_exists(store, run_id):
        raise NotFoundError(f"no run {run_id} in {store.path}; `harness runs` lists them")
    rows = store.query(
        """
        SELECT s.sample_id, s.instruction, s.input, s.refs, s.tags, s.group_id, s.metadata, s.prompt,
               g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason, f.reasons
        FROM failures f
        JOIN samples s USING (run_id, sample_id)
        JOIN run_generations rg ON rg.run_id = f.run_id AND rg.sample_id = f.sample_id AND rg.draw = 0
        JOIN generations g USING (cache_key)
        WHERE f.run_id = ?
        ORDER BY s.position
        """,
        [run_id],
    )
    scores: dict[str, dict[str, float]] = {}
    for row in store.query(
        "SELECT sample_id, metric, value FROM sample_scores WHERE run_id = ? AND value IS NOT NULL", [run_id]
    ):
        scores.setdefault(row["sample_id"], {})[row["metric"]] = row["value"]
    issues: dict[str, list[Issue]] = {}
    for row in store.query(
        "SELECT sample_id, detector, kind, severity, message, span_start, span_end, data FROM issues "
        "WHERE run_id = ? ORDER BY severity DESC",
        [run_id],
    ):
        issues.setdefault(row["sample_id"], []).append(
            Issue(
                severity=row["severity"],
                message=row["message"],
                start=row["span_start"],
                end=row["span_end"],
                kind=row["kind"],
                data=json.loads(row["data"]) if row["data"] else {},
                detector=row["detector"],
                sample_id=row["sample_id"],
            )
        )
    failures = []
    for row in rows:
        sample = Sample(
            id=row["sample_id"],
            instruction=row["instruction"],
            input=row["input"],
            references=tuple(row["refs"]),
            tags=tuple(row["tags"]),
            group=row["group_id"],
            metadata=json.loads(row["metadata"]) if row["metadata"] else {},
        )
        generation = Generation(
            sample_id=row["sample_id"],
            text=row["text"],
            prompt=row["prompt"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            finish_reason=row["finish_reason"],
        )
        failures.append(
            Failure(
                sample=sample,
                generation=generation,
                issues=tuple(issues.get(row["sample_id"], ())),
                scores=scores.get(row["sample_id"], {}),
                reasons=tuple(row["reasons"]),
            )
        )
    return failures


# -- storing a clustering --------------------------------------------------------------


def save_clustering(
    store: Store,
    run_id: int,
    clusters: Sequence[Cluster],
    *,
    featurizer: str,
    featurizer_args: Mapping[str, Any],
    clusterer: str,
    clusterer_args: Mapping[str, Any],
    previous_clustering: int | None = None,
    changes: Sequence[ClusterChange] = (),
) -> int:
    """Store clusters, members and changes in one transaction; returns the clustering id."""
    with store.transaction() as con:
        inserted = con.execute(
            "INSERT INTO clusterings (run_id, featurizer, featurizer_args, clusterer, clusterer_args, "
            "n_failures, n_clusters, unclustered, previous_clustering, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING clustering_id",
            [
                run_id,
                featurizer,
                json.dumps(dict(featurizer_args)),
                clusterer,
                json.dumps(dict(clusterer_args)),
                sum(c.size for c in clusters),
                sum(1 for c in clusters if c.id != UNCLUSTERED),
                sum(c.size for c in clusters if c.id == UNCLUSTERED),
                previous_clustering,
                utcnow(),
            ],
        ).fetchone()
        assert inserted is not None  # RETURNING gives the inserted row
        clustering_id = inserted[0]
        n = len(clusters)
        insert(
            con,
            "clusters",
            {
                "clustering_id": [clustering_id] * n,
                "cluster_id": [c.id for c in clusters],
                "label": [c.label for c in clusters],
                "top_terms": [list(c.top_terms) for c in clusters],
                "dominant_issue": [c.dominant_issue for c in clusters],
                "tags": [list(c.tags) for c in clusters],
                "size": [c.size for c in clusters],
                "mean_score": [c.mean_score for c in clusters],
                "score_metric": [c.score_metric for c in clusters],
                "examples": [list(c.examples) for c in clusters],
                "reasons": [json.dumps(dict(c.reasons)) for c in clusters],
            },
        )
        members = [(c.id, m, c.distances.get(m, 0.0)) for c in clusters for m in c.members]
        insert(
            con,
            "cluster_members",
            {
                "clustering_id": [clustering_id] * len(members),
                "cluster_id": [c for c, _, _ in members],
                "sample_id": [m for _, m, _ in members],
                "distance": [d for _, _, d in members],
            },
        )
        if previous_clustering is not None:
            insert(
                con,
                "cluster_changes",
                {
                    "clustering_id": [clustering_id] * len(changes),
                    "previous_clustering": [previous_clustering] * len(changes),
                    "previous_cluster": [ch.previous_cluster for ch in changes],
                    "cluster_id": [ch.cluster_id for ch in changes],
                    "previous_size": [ch.previous_size for ch in changes],
                    "size": [ch.size for ch in changes],
                    "still_failing": [ch.still_failing for ch in changes],
                    "overlap": [ch.overlap for ch in changes],
                    "change": [ch.change for ch in changes],
                },
            )
    return int(clustering_id)


# -- reading a clustering back ---------------------------------------------------------


def load_clusters(store: Store, clustering_id: int) -> list[Cluster]:
    """The clusters of a clustering (the unclustered rest last), members nearest first."""
    rows = store.query(
        "SELECT * FROM clusters WHERE clustering_id = ? ORDER BY cluster_id = -1, cluster_id", [clustering_id]
    )
    if not rows:
        raise NotFoundError(f"no clustering {clustering_id} in {store.path}")
    members: dict[int, list[tuple[str, float]]] = {}
    for row in store.query(
        "SELECT cluster_id, sample_id, distance FROM cluster_members WHERE clustering_id = ? ORDER BY distance",
        [clustering_id],
    ):
        members.setdefault(row["cluster_id"], []).append((row["sample_id"], row["distance"]))
    return [
        Cluster(
            id=row["cluster_id"],
            members=tuple(m for m, _ in members.get(row["cluster_id"], [])),
            label=row["label"],
            top_terms=tuple(row["top_terms"]),
            dominant_issue=row["dominant_issue"],
            tags=tuple(row["tags"]),
            mean_score=row["mean_score"],
            score_metric=row["score_metric"],
            examples=tuple(row["examples"]),
            reasons=json.loads(row["reasons"]),
            distances=dict(members.get(row["cluster_id"], [])),
        )
        for row in rows
    ]


def latest_clustering(store: Store, run_id: int) -> int | None:
    """The id of the run's newest clustering; None when it has none."""
    return store.scalar("SELECT max(clustering_id) FROM clusterings WHERE run_id = ?", [run_id])


def clustering_record(store: Store, clustering_id: int) -> dict[str, Any]:
    """The clustering's `clusterings` row (settings and counts; JSON columns as stored)."""
    return store.query("SELECT * FROM clusterings WHERE clustering_id = ?", [clustering_id])[0]


def clustered_run(store: Store, clustering_id: int) -> int | None:
    """The run a clustering is of; None when there is no such clustering."""
    return store.scalar("SELECT run_id FROM clusterings WHERE clustering_id = ?", [clustering_id])


def clustered_suite(store: Store, clustering_id: int) -> str | None:
    """The name of the suite whose run a clustering is of; None when there is no such clustering."""
    return store.scalar(
        "SELECT r.suite_name FROM clusterings c JOIN runs r USING (run_id) WHERE c.clustering_id = ?",
        [clustering_id],
    )


def cluster_changes(store: Store, clustering_id: int) -> list[dict[str, Any]]:
    """The clustering's `cluster_changes` rows: matched clusters first, then those that appeared."""
    return store.query(
        "SELECT * FROM cluster_changes WHERE clustering_id = ? ORDER BY previous_cluster NULLS LAST, cluster_id",
        [clustering_id],
    )


def continued_clusters(store: Store, clustering_id: int, previous_clustering: int) -> list[dict[str, Any]]:
    """The clusters of `clustering_id` that continue one of `previous_clustering`: their
    previous_cluster, cluster_id, previous_size and still_failing, by cluster id."""
    return store.query(
        "SELECT previous_cluster, cluster_id, previous_size, still_failing FROM cluster_changes "
        "WHERE clustering_id = ? AND previous_clustering = ? AND cluster_id IS NOT NULL "
        "AND previous_cluster IS NOT NULL ORDER BY cluster_id",
        [clustering_id, previous_clustering],
    )
