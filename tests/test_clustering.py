"""Clustering failures: planted structure is recovered, labels read well, clusters are
followed across iterations, and the CLI shows them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from harness.cli import main
from harness.cluster.clustering import (
    Cluster,
    Failure,
    cluster_failures,
    cluster_run,
    load_clusters,
    match_clusters,
)
from harness.components.plugin_manager import load_plugins
from harness.errors import HarnessError
from harness.score.evaluate import evaluate
from harness.suite.load import load_suite
from harness.testing import mock_spec, sample
from harness.types import Generation, Issue

ECHO = Path(__file__).parent / "data" / "echo_suite"

WORDS = [
    "aardvark", "basalt", "cytoplasm", "dolphin", "ember", "fjord", "granite", "harpoon", "iris",
    "jasmine", "kelp", "lichen", "marrow", "nectar", "obsidian", "pollen", "quartz", "resin",
]
TOPICS = ["a kind of rock", "a sea animal", "a plant", "a part of a cell", "a tool", "a flower"]


def planted_failures(per_kind: int = 15, seed: int = 0) -> tuple[list[Failure], list[int]]:
    """Three kinds of failure a person would tell apart: loops, rambling, and refusals."""
    rng = random.Random(seed)
    failures, truth = [], []
    for i in range(per_kind * 3):
        kind = i % 3
        word = rng.choice(WORDS)
        reference = f"{rng.choice(TOPICS)} found in many places"
        if kind == 0:
            phrase = f"the {word} is a {word}"
            output = " ".join([phrase] * rng.randint(4, 7))
            issues = (Issue(0.9, "repeated phrase", 0, len(phrase), kind="ngram", detector="repetition", sample_id=str(i)),)
            reasons = ("detector:repetition",)
        elif kind == 1:
            output = (
                f"{word.capitalize()} is a word with a long and interesting history that many scholars have "
                f"studied over the centuries, and in this answer I will explain its origins, its uses in "
                f"literature, its pronunciation and several examples of sentences in which it appears."
            )
            issues = (Issue(0.8, "3.5x longer than the reference", kind="too_long", detector="length", sample_id=str(i)),)
            reasons = ("detector:length",)
        else:
            output = rng.choice([
                "I'm sorry, I cannot help with that request.",
                "I am not able to answer this question.",
                "Sorry, but I can't provide a definition for that.",
            ])
            issues = ()
            reasons = ("metric:chrf",)
        s = sample(str(i), instruction="Define the word in one sentence.", input=word, reference=reference)
        failures.append(
            Failure(
                sample=s,
                generation=Generation(str(i), output),
                issues=issues,
                scores={"chrf": rng.uniform(5, 30)},
                reasons=reasons,
            )
        )
        truth.append(kind)
    return failures, truth


@pytest.fixture(scope="module")
def registry():
    return load_plugins(autoload=False).registry


def _labels(clusters: list[Cluster], failures: list[Failure]) -> list[int]:
    by_id = {m: c.id for c in clusters for m in c.members}
    return [by_id[f.sample.id] for f in failures]


@pytest.mark.parametrize("featurizer", ["embedding", "tfidf"])
def test_planted_structure_is_recovered(registry, featurizer: str) -> None:
    failures, truth = planted_failures()
    feat, clus = registry.featurizer(featurizer), registry.clusterer("agglomerative")
    clusters = cluster_failures(failures, feat, feat.Args(), clus, clus.Args(), score_metric="chrf")
    ari = adjusted_rand_score(truth, _labels(clusters, failures))
    print(f"\nadjusted Rand index ({featurizer} + agglomerative): {ari:.3f}")
    assert ari >= 0.9
    labels = {c.dominant_issue for c in clusters}
    assert {"repetition.ngram", "length.too_long", "poor chrf"} <= labels


def test_hdbscan_also_recovers_the_groups(registry) -> None:
    failures, truth = planted_failures()
    feat, clus = registry.featurizer("embedding"), registry.clusterer("hdbscan")
    clusters = cluster_failures(failures, feat, feat.Args(), clus, clus.Args(min_cluster_size=5))
    predicted = _labels(clusters, failures)
    clustered = [(t, p) for t, p in zip(truth, predicted) if p != -1]
    assert len(clustered) >= 0.8 * len(truth)
    ari = adjusted_rand_score([t for t, _ in clustered], [p for _, p in clustered])
    print(f"\nadjusted Rand index (embedding + hdbscan, clustered points): {ari:.3f}")
    assert ari >= 0.9


def test_clusters_have_readable_labels_examples_and_scores(registry) -> None:
    failures, _ = planted_failures()
    feat, clus = registry.featurizer("embedding"), registry.clusterer("agglomerative")
    clusters = cluster_failures(failures, feat, feat.Args(), clus, clus.Args(), score_metric="chrf")
    assert [c.size for c in clusters] == sorted((c.size for c in clusters), reverse=True)
    assert [c.id for c in clusters] == list(range(len(clusters)))
    for c in clusters:
        assert c.label.startswith(c.dominant_issue.replace("_", " "))
        assert len(c.examples) == 3 and set(c.examples) <= set(c.members)
        assert c.mean_score is not None and 5 <= c.mean_score <= 30
        assert c.top_terms
    refusals = next(c for c in clusters if c.dominant_issue == "poor chrf")
    assert {"sorry", "help", "able", "provide"} & set(refusals.top_terms)


def test_small_groups_are_left_unclustered(registry) -> None:
    failures, truth = planted_failures(per_kind=15)
    refusals = [f for f, kind in zip(failures, truth) if kind == 2]
    failures = [f for f, kind in zip(failures, truth) if kind != 2] + refusals[:2]
    feat, clus = registry.featurizer("embedding"), registry.clusterer("agglomerative")
    clusters = cluster_failures(failures, feat, feat.Args(), clus, clus.Args(min_cluster_size=5))
    assert clusters[-1].id == -1 and clusters[-1].label.startswith("unclustered")
    assert set(clusters[-1].members) == {f.sample.id for f in refusals[:2]}


def _input(suite, sample_id: str) -> str:
    return next(s.input for s in suite.samples if s.id == sample_id)


def _cluster(id: int, members: list[str]) -> Cluster:
    return Cluster(id, tuple(members), f"c{id}", (), None, (), None, None, (), {})


def test_matching_follows_clusters_through_their_members() -> None:
    previous = [_cluster(0, list("abcdefgh")), _cluster(1, list("ijkl")), _cluster(2, list("mnop"))]
    current = [_cluster(0, list("abcxyz")), _cluster(1, list("ijklqr")), _cluster(2, list("uvw"))]
    changes = {(c.previous_cluster, c.cluster_id): c for c in match_clusters(previous, current)}
    assert changes[(0, 0)].change == "shrank" and changes[(0, 0)].still_failing == 3
    assert changes[(1, 1)].change == "grew" and changes[(1, 1)].still_failing == 4
    assert changes[(2, None)].change == "vanished" and changes[(2, None)].still_failing == 0
    assert changes[(None, 2)].change == "appeared"


def _failing_run(store, plugins, mock_backend, responder=None):
    if responder:
        mock_backend.responder = staticmethod(responder)
    return evaluate(load_suite(ECHO), mock_spec(), store, plugins)


def test_cluster_run_stores_and_matches(harness_store, harness_plugins, mock_backend) -> None:
    plugins = harness_plugins()
    first = _failing_run(harness_store, plugins, mock_backend, lambda p: "no idea at all")
    result = cluster_run(harness_store, first.run_id, plugins.registry, featurizer="tfidf",
                         clusterer_args={"min_cluster_size": 2})
    stored = load_clusters(harness_store, result.clustering_id)
    assert sum(c.size for c in stored) == 8 == sum(c.size for c in result.clusters)
    assert [c.label for c in stored] == [c.label for c in result.clusters]
    second = evaluate(load_suite(ECHO), mock_spec(adapter="better"), harness_store, plugins)
    again = cluster_run(harness_store, second.run_id, plugins.registry, featurizer="tfidf",
                        clusterer_args={"min_cluster_size": 2}, previous_clustering=result.clustering_id)
    assert again.changes and {c.change for c in again.changes} <= {"shrank", "vanished", "grew", "unchanged", "appeared"}
    rows = harness_store.scalar("SELECT count(*) FROM cluster_changes WHERE clustering_id = ?", [again.clustering_id])
    assert rows == len(again.changes)


def test_a_run_without_failures_is_a_clear_error(harness_store, harness_plugins, mock_backend) -> None:
    plugins = harness_plugins()
    mock_backend.responder = staticmethod(lambda prompt: "")
    suite = load_suite(ECHO)
    perfect = {s.id: s.reference for s in suite.samples}
    mock_backend.responder = staticmethod(lambda prompt: next(r for i, r in perfect.items() if f"\n{_input(suite, i)}\n" in prompt))
    summary = evaluate(suite, mock_spec(), harness_store, plugins)
    assert harness_store.scalar("SELECT count(*) FROM failures") == 0
    with pytest.raises(HarnessError, match="has no failing samples"):
        cluster_run(harness_store, summary.run_id, plugins.registry)
    assert harness_store.scalar("SELECT count(*) FROM clusterings") == 0


def test_clusters_command_shows_and_exports_clusters(tmp_path, harness_plugins, mock_backend) -> None:
    from harness.store import Store

    store_path = tmp_path / "s.duckdb"
    plugins = harness_plugins()
    with Store.writer(store_path) as store:
        run = _failing_run(store, plugins, mock_backend, lambda p: "no idea at all")
    runner = CliRunner()
    out = runner.invoke(main, ["--store", str(store_path), "clusters", "latest", "--featurizer", "tfidf",
                               "-c", "min_cluster_size=2", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["run_id"] == run.run_id and sum(c["size"] for c in data["clusters"]) == 8
    shown = runner.invoke(main, ["--store", str(store_path), "clusters", str(run.run_id)])
    assert shown.exit_code == 0 and "8 failing samples" in shown.output
    bad = runner.invoke(main, ["--store", str(store_path), "clusters", "99"])
    assert bad.exit_code == 2 and "no run 99" in bad.output
