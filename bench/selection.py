"""Does targeted selection pick training rows closer to the failures than random selection?

Evaluates the default model on the dictionary suite, clusters its failures, then builds
datasets of the same size from the suite's 32,000-row pool: the `pool` source's
targeted selection (TF-IDF retrieval, MiniLM ranking, round-robin over failing samples),
the same ranked by similarity to each cluster's centroid, and a seeded random draw. For
each selected row it measures, with MiniLM embeddings of the task text (a failure: word
+ reference definition; a row: word + definition), the cosine distance to the nearest
failing sample and to the centroid of its cluster, counts the failing samples that are
the nearest of some selected row, and prints these next to the time each selection took.

    python bench/selection.py                       # budget 200, store under .harness/bench/
    python bench/selection.py --budget 100 --store /tmp/bench.duckdb

The evaluation takes a few minutes the first time (the default model converts offline on
first use) and nothing afterwards: generations are cached in the store. When the suite
says nothing about which samples fail (no sample_threshold, no detectors), a sample
fails when its sentence chrF is below --threshold, applied in memory only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from harness.cluster.clustering import cluster_run, load_clusters, load_failures
from harness.components.embedding import default_embedder
from harness.components.plugin_manager import load_plugins
from harness.data.datasets import build_dataset
from harness.plugins.data_sources._retrieval import (
    LexicalSettings,
    example_task_text,
    failure_task_text,
    lexical_index,
    load_pool,
    resolve_pool_path,
)
from harness.score.evaluate import evaluate
from harness.store import Store
from harness.suite.config import MetricConfig
from harness.suite.load import Suite, load_suite
from harness.types import ModelSpec


def with_failure_threshold(suite: Suite, threshold: float) -> Suite:
    """The suite, with chrF deciding failures when it decides nothing itself."""
    config = suite.config
    if config.detectors or any(m.sample_threshold is not None for m in config.metrics):
        return suite
    metrics = [
        m.model_copy(update={"sample_threshold": threshold}) if m.name == "chrf" else m
        for m in config.metrics
    ]
    if not any(m.name == "chrf" for m in metrics):
        metrics.append(MetricConfig(name="chrf", sample_threshold=threshold))
    print(f"note: suite {suite.name!r} sets no failure threshold; using sentence chrF < {threshold}")
    return Suite(config.model_copy(update={"metrics": metrics}), suite.path, suite.samples, suite.hash)


def distances(rows: list, failures: list, clusters: list) -> tuple[np.ndarray, np.ndarray, int]:
    """Per row: cosine distance to the nearest failing sample and to its cluster's centroid;
    and how many failing samples are the nearest of at least one row (coverage)."""
    embedder = default_embedder()
    failure_vectors = embedder.embed([failure_task_text(f) for f in failures])
    row_vectors = embedder.embed([example_task_text(r) for r in rows])
    similarity = row_vectors @ failure_vectors.T
    to_nearest = 1.0 - similarity.max(axis=1)
    covered = len(set(similarity.argmax(axis=1).tolist()))
    index = {f.sample.id: i for i, f in enumerate(failures)}
    centroids = {}
    for cluster in clusters:
        centre = failure_vectors[[index[m] for m in cluster.members]].mean(axis=0)
        centroids[cluster.id] = centre / np.linalg.norm(centre)
    to_centroid = np.array([1.0 - float(v @ centroids[r.cluster]) for v, r in zip(row_vectors, rows)])
    return to_nearest, to_centroid, covered


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=Path(".harness/bench/selection.duckdb"))
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument(
        "--threshold",
        type=float,
        default=30.0,
        help="chrF below which a sample fails (if the suite sets none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--candidate-factor", type=float, default=10.0, help="lexical candidates embedded per row (pool source)"
    )
    options = parser.parse_args()

    plugins = load_plugins(autoload=False)
    suite = with_failure_threshold(load_suite("dictionary"), options.threshold)
    with Store.writer(options.store) as store:
        start = time.perf_counter()
        summary = evaluate(suite, ModelSpec("default"), store, plugins)
        print(
            f"evaluate: run {summary.run_id}, {summary.n_samples} samples, {summary.failures} failing, "
            f"chrF {summary.corpus['chrf']['value']:.1f} ({time.perf_counter() - start:.1f} s, "
            f"{summary.generated} generated, {summary.cached} cached)"
        )
        start = time.perf_counter()
        clustering = cluster_run(store, summary.run_id, plugins.registry)
        print(
            f"cluster: {len(clustering.clusters)} groups "
            f"({', '.join(f'{c.id}:{c.size}' for c in clustering.clusters)}) in {time.perf_counter() - start:.1f} s"
        )
        failures = load_failures(store, summary.run_id)
        clusters = load_clusters(store, clustering.clustering_id)

        # The one-off cost, paid by the first targeted selection of a process otherwise.
        start = time.perf_counter()
        pool = load_pool(*resolve_pool_path(suite, None), suite.config.instruction)
        lexical_index(pool, LexicalSettings())
        print(f"pool: {len(pool):,} rows read and TF-IDF indexed in {time.perf_counter() - start:.1f} s")

        results = {}
        factor = {"candidate_factor": options.candidate_factor}
        variants = {
            "targeted": ("targeted", factor),
            "centroid": ("targeted", {**factor, "ranking": "centroid"}),
            "random": ("random", {}),
        }
        for label, (selection, source_args) in variants.items():
            start = time.perf_counter()
            manifest = build_dataset(
                store,
                summary.run_id,
                clustering.clustering_id,
                plugins,
                source="pool",
                source_args=source_args,
                budget=options.budget,
                selection=selection,
                seed=options.seed,
            )
            elapsed = time.perf_counter() - start
            results[label] = (manifest, elapsed, *distances(list(manifest.added), failures, clusters))

    print()
    print(
        f"{'selection':<10} {'rows':>5} {'to nearest failure':>19} {'(median)':>9} "
        f"{'to cluster centroid':>20} {'failures covered':>17} {'time':>8}  dropped"
    )
    for label, (manifest, elapsed, near, centre, covered) in results.items():
        print(
            f"{label:<10} {manifest.n_added:>5} {near.mean():>19.3f} {statistics.median(near.tolist()):>9.3f} "
            f"{centre.mean():>20.3f} {covered:>11} / {len(failures):<3} {elapsed:>7.1f}s  {dict(manifest.dropped)}"
        )
    print("targeted: round-robin over failing samples; centroid: nearest the cluster's mean (pool `ranking`)")
    targeted = results["targeted"][0]
    print("\nfirst targeted rows (nearest failing sample -> selected row):")
    for row in targeted.added[:8]:
        print(
            f"  {row.provenance.get('nearest_sample')} -> {row.input}: {row.output[:70]} "
            f"(cos {row.provenance.get('similarity')})"
        )


if __name__ == "__main__":
    main()
