"""Selection from a pool that mixes tasks, and the equal-budget controls: each control
selects what it claims, at the same budget, and a mixed pool is compared by task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import DataRequest
from harness.cluster.clustering import UNCLUSTERED, Cluster, cluster_run, load_failures
from harness.data.curation import build_eval_index, normalize
from harness.data.datasets import build_dataset
from harness.errors import ConfigError
from harness.plugins.data_sources._retrieval import load_pool, suite_task
from harness.score.evaluate import evaluate
from harness.suite.load import load_suite
from harness.testing import mock_spec

DEFS = Path(__file__).parent / "data" / "datasets" / "defs"
ON_TASK = "Define the word in one sentence."


def off_task_rows() -> list[dict[str, Any]]:
    """Rows of other tasks that share words with the eval items (plurals, capitals and
    translations of the eval words and of their definitions)."""
    rows = []
    for line in (DEFS / "eval.jsonl").read_text().splitlines():
        item = json.loads(line)
        word, ref = item["input"], item["reference"]
        rows += [
            {"id": f"o-plural-{word}", "instruction": "Write the plural form of the word.",
             "input": f"{word} house", "output": f"{word} houses"},
            {"id": f"o-caps-{word}", "instruction": "Write the sentence in capital letters.",
             "input": f"{word}: {ref}", "output": f"{word}: {ref}".upper()},
            {"id": f"o-count-{word}", "instruction": "How many words are in the sentence?",
             "input": ref, "output": str(len(ref.split()))},
        ]
    for i in range(200):  # the bulk of a broad pool: unrelated rows
        rows.append({"id": f"o-gen-{i}", "instruction": "Spell the word backwards.",
                     "input": f"token{i:03d}", "output": f"token{i:03d}"[::-1]})
    return rows


@pytest.fixture
def mixed_suite(tmp_path: Path) -> Path:
    """The defs suite with a pool that mixes its 60 on-task rows with 230 rows of other tasks."""
    target = tmp_path / "mixed"
    target.mkdir()
    (target / "eval.jsonl").write_text((DEFS / "eval.jsonl").read_text())
    on_task = (DEFS / "pool.jsonl").read_text()
    off = "".join(json.dumps(r) + "\n" for r in off_task_rows())
    (target / "pool.jsonl").write_text(on_task + off)
    (target / "suite.yaml").write_text((DEFS / "suite.yaml").read_text().replace("name: defs", "name: mixed"))
    return target


@pytest.fixture
def plugins(harness_plugins: Any) -> Any:
    return harness_plugins()


@pytest.fixture
def failing(harness_store: Any, plugins: Any, mock_backend: Any, mixed_suite: Path) -> tuple[int, int]:
    run = evaluate(load_suite(mixed_suite), mock_spec(), harness_store, plugins)
    clustering = cluster_run(
        harness_store, run.run_id, plugins.registry, featurizer="tfidf",
        clusterer_args={"min_cluster_size": 2, "max_clusters": 3},
    )
    return run.run_id, clustering.clustering_id


class HashEmbedder:
    """Unit vectors of hashed character n-grams: similar texts, similar vectors; instant."""

    name = "hash"

    def embed(self, texts: list[str], *, progress: Any = None) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer

        vectors = HashingVectorizer(
            analyzer="char_wb", ngram_range=(3, 4), n_features=2**12, alternate_sign=False, norm="l2"
        ).transform(texts)
        if progress:
            progress(len(texts))
        return vectors.toarray().astype(np.float32)


def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


def request(store: Any, run_id: int, suite_dir: Path, budget: int) -> DataRequest:
    failures = load_failures(store, run_id)
    suite = load_suite(suite_dir)
    cluster = Cluster(UNCLUSTERED, tuple(f.sample.id for f in failures), "all", (), None, (), None, None, (), {})
    return DataRequest(
        cluster=cluster, failures=tuple(failures), budget=budget, suite=suite, seed=0,
        embedder=hash_embedder, exclude_inputs=build_eval_index([suite]).excluded_inputs,
    )


def on_task(rows: Any) -> int:
    return sum(normalize(r.instruction) == normalize(ON_TASK) for r in rows)


def test_the_suite_task_and_a_mixed_pool_are_recognised(mixed_suite: Path) -> None:
    suite = load_suite(mixed_suite)
    task = suite_task(suite)
    assert task == frozenset({normalize(ON_TASK)})
    assert suite.pool_path is not None
    mixed = load_pool(suite.pool_path, "mixed", suite.config.instruction)
    assert len(mixed.on_task(task)) == 60 and mixed.mixes_tasks(task)
    own = load_pool(DEFS / "pool.jsonl", "defs", ON_TASK)
    assert not own.mixes_tasks(task), "a pool of the suite's own task alone is not mixed"


def test_random_on_task_draws_only_rows_of_the_task_at_the_budget(
    harness_store: Any, plugins: Any, failing: tuple[int, int], mixed_suite: Path
) -> None:
    source = plugins.registry.data_source("pool")
    req = request(harness_store, failing[0], mixed_suite, budget=30)
    rows = source.gather(req, source.Args(selection="random_on_task"))
    assert len(rows) == 30 and on_task(rows) == 30
    assert "cat" not in {r.input for r in rows}, "never an eval input"
    assert all(r.provenance["selection"] == "random_on_task" for r in rows)
    # The plain random draw takes the pool as it comes: mostly other tasks (230 of 290).
    drawn = source.gather(req, source.Args(selection="random"))
    assert len(drawn) == 30 and on_task(drawn) < 15


def test_explore_draws_its_share_among_the_task_and_aims_the_rest(
    harness_store: Any, plugins: Any, failing: tuple[int, int], mixed_suite: Path
) -> None:
    source = plugins.registry.data_source("pool")
    req = request(harness_store, failing[0], mixed_suite, budget=30)
    rows = source.gather(req, source.Args(explore=0.4))
    kinds = [r.provenance["selection"] for r in rows]
    assert len(rows) == 30 and kinds.count("explore") == 12 and kinds.count("targeted") == 18
    assert len({(r.instruction, r.input, r.output) for r in rows}) == 30, "no row twice"
    assert on_task([r for r in rows if r.provenance["selection"] == "explore"]) == 12
    aimed = source.gather(req, source.Args())
    assert {r.input for r in rows if r.provenance["selection"] == "targeted"} == {r.input for r in aimed[:18]}
    # All exploration is random_on_task under another name: the same rows for the same seed.
    everything = source.gather(req, source.Args(explore=1.0))
    assert [r.provenance["selection"] for r in everything] == ["explore"] * 30 and on_task(everything) == 30


def test_a_mixed_pool_is_compared_by_task_without_an_option(
    harness_store: Any, plugins: Any, failing: tuple[int, int], mixed_suite: Path
) -> None:
    source = plugins.registry.data_source("pool")
    req = request(harness_store, failing[0], mixed_suite, budget=20)
    automatic = source.gather(req, source.Args())
    words_only = source.gather(req, source.Args(include_instruction=False))
    assert len(automatic) == len(words_only) == 20
    # Comparing input and reference alone, the capitals and word counts of the eval
    # definitions look nearest; with the task compared too, rows of the task win.
    assert on_task(automatic) > on_task(words_only)
    assert on_task(automatic) >= 18


def test_every_control_fills_the_same_budget_and_is_recorded(
    harness_store: Any, plugins: Any, failing: tuple[int, int]
) -> None:
    run_id, clustering_id = failing
    built = {
        selection: build_dataset(
            harness_store, run_id, clustering_id, plugins, budget=24, selection=selection,
            embedder=hash_embedder, suites_against=[],
        )
        for selection in ("targeted", "random", "random_on_task")
    }
    assert {s: m.n_added for s, m in built.items()} == {"targeted": 24, "random": 24, "random_on_task": 24}
    assert {s: m.selection for s, m in built.items()} == {s: s for s in built}
    assert on_task(built["random_on_task"].added) == 24
    stored = harness_store.query("SELECT selection, n_added FROM datasets ORDER BY selection")
    assert [(r["selection"], r["n_added"]) for r in stored] == [
        ("random", 24), ("random_on_task", 24), ("targeted", 24)
    ]


def test_untargeted_augmentation_varies_random_rows_of_the_task(
    harness_store: Any, plugins: Any, failing: tuple[int, int]
) -> None:
    manifest = build_dataset(
        harness_store, failing[0], failing[1], plugins, source="augment", budget=12,
        selection="random_on_task", suites_against=[],
    )
    assert manifest.n_added == 12 and manifest.selection == "random_on_task"
    assert manifest.sources == {"augment": 12}
    seeds = {r.provenance["id"] for r in manifest.added}
    assert all(s.startswith("p-") for s in seeds), "seeds are rows of the task, never other tasks"
    assert all(r.provenance["selection"] == "random_on_task" for r in manifest.added)


def test_a_source_without_the_control_is_refused(harness_store: Any, plugins: Any, failing: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match="no random selection"):
        build_dataset(harness_store, failing[0], failing[1], plugins, source="augment", budget=5, selection="random")
    with pytest.raises(ConfigError, match="selection must be one of"):
        build_dataset(harness_store, failing[0], failing[1], plugins, budget=5, selection="everything")


# ---------------------------------------------------------------------------
# Targeting that uses the error analysis: per-cluster budgets, diverse rows
# ---------------------------------------------------------------------------


def _cluster(cid: int, size: int) -> Cluster:
    return Cluster(cid, tuple(f"{cid}-{i}" for i in range(size)), "", (), None, (), None, None, (), {})


def test_a_cluster_that_did_not_move_gets_less_budget() -> None:
    from harness.data.datasets import split_budget

    clusters = [_cluster(0, 6), _cluster(1, 4)]
    assert split_budget(10, clusters) == {0: 6, 1: 4}
    # Half weight for cluster 0: weighted sizes 3 and 4, so 4.29 and 5.71 rows.
    assert split_budget(10, clusters, {0: 0.5}) == {0: 4, 1: 6}
    for budget in range(1, 30):
        assert sum(split_budget(budget, clusters, {0: 0.5}).values()) == budget


def test_the_next_iteration_halves_stalled_clusters_and_says_why(
    harness_store: Any, plugins: Any, failing: tuple[int, int], mixed_suite: Path
) -> None:
    from harness.data.datasets import STALLED_WEIGHT, cluster_weights

    run_id, first = failing
    parent = build_dataset(harness_store, run_id, first, plugins, budget=12, embedder=hash_embedder, suites_against=[])
    # The same failures again (the mock model learnt nothing): every cluster is stalled.
    again = cluster_run(
        harness_store, run_id, plugins.registry, featurizer="tfidf",
        clusterer_args={"min_cluster_size": 2, "max_clusters": 3}, previous_clustering=first,
    ).clustering_id
    weights = cluster_weights(harness_store, again, parent)
    assert weights and all(w.weight == STALLED_WEIGHT and "did not move" in w.reason for w in weights.values())
    grown = build_dataset(
        harness_store, run_id, again, plugins, budget=12, parent=parent.hash, embedder=hash_embedder,
        suites_against=[],
    )
    assert grown.n_added == 12
    assert set(grown.budget_notes) == {str(c) for c in weights if grown.cluster_counts.get(str(c))}
    assert all("still fail" in note for note in grown.budget_notes.values())
    from harness.store.queries import Queries

    # What the history report shows, read back from the store (the parent's rows excluded).
    assert Queries(harness_store, plugins.registry).budget_notes(grown.hash) == grown.budget_notes
    assert Queries(harness_store, plugins.registry).budget_notes(parent.hash) == {}
    # The controls take no lessons from the failures.
    control = build_dataset(
        harness_store, run_id, again, plugins, budget=12, parent=parent.hash, selection="random_on_task",
        suites_against=[],
    )
    assert control.budget_notes == {}


def test_rows_for_one_failure_are_diverse_not_near_copies() -> None:
    from harness.plugins.data_sources._retrieval import _round_robin

    # One failing sample; candidates 0 and 1 are near-copies, 2 is different but relevant.
    similarity = np.array([[0.99, 0.98, 0.90]])
    redundancy = np.array([[1.0, 0.99, 0.2], [0.99, 1.0, 0.2], [0.2, 0.2, 1.0]])
    assert [j for _, j in _round_robin(similarity, 2)] == [0, 1]
    assert [j for _, j in _round_robin(similarity, 2, redundancy, diversity=0.3)] == [0, 2]
    # Every candidate is still taken once, at most k, whatever the weight.
    picks = _round_robin(np.random.default_rng(0).random((3, 9)), 9, np.eye(9), diversity=0.3)
    assert sorted(j for _, j in picks) == list(range(9))
