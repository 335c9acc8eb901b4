"""Data sources, dataset manifests and `harness data`: each source keeps to its budget and
says where every row came from; eval items never get in; the same inputs give the same
manifest; bad input is a clear error that leaves the store as it was."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from harness import DataRequest
from harness.cli import main
from harness.cluster.clustering import UNCLUSTERED, Cluster, Failure, cluster_run, load_clusters
from harness.components.contracts import DataSource
from harness.components.hookspecs import hookimpl
from harness.data.annotation import export_annotations, import_annotations
from harness.data.curation import build_eval_index, curate, input_key
from harness.data.datasets import build_dataset, split_budget
from harness.data.manifests import load_manifest, load_manifest_rows, read_dataset_file
from harness.errors import ConfigError, HarnessError, NotFoundError, PluginError
from harness.plugins.data_sources.teacher import parse_reply
from harness.score.evaluate import evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import mock_spec, sample
from harness.types import Generation, TrainingExample

DATA = Path(__file__).parent / "data" / "datasets"
DEFS = DATA / "defs"
PASSING = DATA / "passing"
POOL = DEFS / "pool.jsonl"


class HashEmbedder:
    """A stand-in for MiniLM in tests that are not about embedding quality: unit vectors of
    hashed character n-grams (similar texts get similar vectors), instant and offline."""

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


def failing_run(store: Store, plugins: Any, suite_dir: Path = DEFS) -> tuple[int, int]:
    """(run id, clustering id) of the mock backend's run of a suite: the mock echoes the
    word, so every definition fails chrF."""
    run = evaluate(load_suite(suite_dir), mock_spec(), store, plugins)
    clustering = cluster_run(
        store,
        run.run_id,
        plugins.registry,
        featurizer="tfidf",
        clusterer_args={"min_cluster_size": 2, "max_clusters": 3},
    )
    return run.run_id, clustering.clustering_id


def store_counts(store: Store) -> dict[str, int]:
    return {t: store.scalar(f"SELECT count(*) FROM {t}") for t in ("datasets", "dataset_rows", "clusterings")}


@pytest.fixture
def plugins(harness_plugins: Any) -> Any:
    return harness_plugins()


@pytest.fixture
def run(harness_store: Store, plugins: Any, mock_backend: Any) -> tuple[int, int]:
    return failing_run(harness_store, plugins)


def request_for(store: Store, run_id: int, cluster_id: int | None = None, **kw: Any) -> DataRequest:
    """A DataRequest for one cluster (or for all failures as one group)."""
    from harness.cluster.clustering import latest_clustering, load_clusters, load_failures

    failures = load_failures(store, run_id)
    suite = load_suite(DEFS)
    if cluster_id is None:
        cluster = Cluster(
            UNCLUSTERED, tuple(f.sample.id for f in failures), "all", (), None, (), None, None, (), {}
        )
    else:
        cluster = next(
            c for c in load_clusters(store, latest_clustering(store, run_id)) if c.id == cluster_id
        )
    members = [f for f in failures if f.sample.id in cluster.members]
    index = build_eval_index([suite])
    defaults: dict[str, Any] = {
        "cluster": cluster,
        "failures": tuple(members),
        "budget": 5,
        "suite": suite,
        "seed": 0,
        "embedder": hash_embedder,
        "exclude_inputs": index.excluded_inputs,
    }
    defaults.update(kw)
    return DataRequest(**defaults)


# ---------------------------------------------------------------------------
# The pool source
# ---------------------------------------------------------------------------


def test_pool_returns_the_nearest_rows_within_budget_with_provenance(harness_store, plugins, run) -> None:
    """With the real MiniLM embedder: the animal failures get animal rows."""
    source = plugins.registry.data_source("pool")
    request = request_for(harness_store, run[0], cluster_id=None, budget=6, embedder=None)
    rows = source.gather(request, source.Args())
    assert len(rows) == 6
    assert all(r.source == "pool" and r.cluster == UNCLUSTERED for r in rows)
    first = rows[0].provenance
    assert first["pool"] == "defs/pool.jsonl" and first["selection"] == "targeted"
    assert set(first) >= {"line", "id", "pool_sha256", "similarity", "nearest_sample", "family"}
    pool_lines = POOL.read_text().splitlines()
    for r in rows:  # provenance points at the very line the row came from
        line = json.loads(pool_lines[r.provenance["line"] - 1])
        assert (line["input"], line["output"], line["id"]) == (r.input, r.output, r.provenance["id"])
    # Round-robin: the first six picks serve six different failing samples.
    assert len({r.provenance["nearest_sample"] for r in rows}) == 6
    animals = {
        "wolf",
        "fox",
        "tiger",
        "lion",
        "kitten",
        "puppy",
        "pony",
        "donkey",
        "mule",
        "robin",
        "finch",
        "pigeon",
        "trout",
        "cod",
        "hamster",
        "stallion",
    }
    by_member = {r.provenance["nearest_sample"]: r.input for r in rows}
    for member in set(by_member) & {"d-dog", "d-horse", "d-sparrow", "d-salmon"}:
        assert by_member[member] in animals, by_member
    # Smaller budgets give a prefix-compatible, never larger, answer.
    assert len(source.gather(request_for(harness_store, run[0], budget=2, embedder=None), source.Args())) == 2


def test_the_pool_never_offers_an_eval_input(harness_store, plugins, run) -> None:
    source = plugins.registry.data_source("pool")
    cats = request_for(harness_store, run[0], 0, budget=60)  # more than the pool holds
    for selection in ("targeted", "random"):
        rows = source.gather(cats, source.Args(selection=selection))
        inputs = {r.input for r in rows}
        assert "cat" not in inputs and len(rows) <= 60
    # Without the exclusion the planted row is among the nearest neighbours of d-cat.
    unguarded = request_for(harness_store, run[0], 0, budget=10, exclude_inputs=frozenset())
    assert "cat" in {r.input for r in source.gather(unguarded, source.Args())}


def test_random_selection_is_seeded_and_the_same_size(harness_store, plugins, run) -> None:
    source = plugins.registry.data_source("pool")
    args = source.Args(selection="random")
    first = source.gather(request_for(harness_store, run[0], 0, budget=8), args)
    again = source.gather(request_for(harness_store, run[0], 0, budget=8), args)
    other = source.gather(request_for(harness_store, run[0], 0, budget=8, seed=1), args)
    assert len(first) == 8 and [r.input for r in first] == [r.input for r in again]
    assert [r.input for r in first] != [r.input for r in other]
    assert all(r.provenance["selection"] == "random" for r in first)


def test_a_pool_with_a_broken_row_names_file_and_line_and_changes_nothing(
    harness_store, plugins, run
) -> None:
    before = store_counts(harness_store)
    with pytest.raises(ConfigError, match=r"pool_broken\.jsonl:3: not valid JSON"):
        build_dataset(
            harness_store,
            run[0],
            run[1],
            plugins,
            source="pool",
            source_args={"path": str(DATA / "pool_broken.jsonl")},
            budget=4,
            embedder=hash_embedder,
        )
    assert store_counts(harness_store) == before
    assert not (harness_store.path.parent / "datasets").exists()


def test_a_row_missing_its_output_is_named_too(tmp_path, harness_store, plugins, run) -> None:
    lines = (DATA / "pool_broken.jsonl").read_text().splitlines()
    fixed = tmp_path / "pool.jsonl"
    fixed.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # the output-less row is now line 3
    with pytest.raises(ConfigError, match=r"pool\.jsonl:3: field 'output': required field is missing"):
        build_dataset(
            harness_store,
            run[0],
            run[1],
            plugins,
            source_args={"path": str(fixed)},
            budget=4,
            embedder=hash_embedder,
        )


# ---------------------------------------------------------------------------
# augment
# ---------------------------------------------------------------------------


def test_augment_varies_pool_rows_not_eval_items_and_survives_curation(harness_store, plugins, run) -> None:
    source = plugins.registry.data_source("augment")
    suite = load_suite(DEFS)
    request = request_for(harness_store, run[0], None, budget=9)
    rows = source.gather(request, source.Args(variants_per_seed=3))
    assert 0 < len(rows) <= 9
    pool = [json.loads(line) for line in POOL.read_text().splitlines()]
    references = {s.reference for s in suite.samples}
    for r in rows:
        seed = pool[r.provenance["line"] - 1]
        assert r.output == seed["output"] and r.output not in references  # targets from the seed row
        assert (r.instruction, r.input) != (seed["instruction"], seed["input"])  # a real variant
        assert r.provenance["family"].endswith(f":{r.provenance['line']}")
        assert r.provenance["transform"] and r.provenance["template"] in range(6)
        assert input_key(r.instruction, r.input) not in request.exclude_inputs
    # Variants of one seed use different templates and different transforms.
    by_seed: dict[int, list[tuple[int, str]]] = {}
    for r in rows:
        by_seed.setdefault(r.provenance["line"], []).append((r.provenance["template"], r.provenance["transform"]))
    for variants in by_seed.values():
        templates, transforms = zip(*variants)
        assert len(set(templates)) == len(templates) and len(set(transforms)) == len(transforms)
    # The stallion row shares a 13-gram with d-horse: its variants are contamination, the rest survive.
    result = curate(rows, eval_index=build_eval_index([suite]))
    assert set(result.dropped) <= {"eval_ngram"}
    assert all(d.example.input.lower().strip('".:?') != "stallion" or d.reason for d in result.decisions)
    assert len(result.kept) >= len(rows) - 3


def test_augment_transforms_never_touch_digits() -> None:
    from harness.plugins.data_sources.augment import AugmentArgs, make_variants

    row = TrainingExample("Write the number in words.", "4302", "four thousand three hundred two")
    args = AugmentArgs(transforms=("typo", "case", "whitespace"))
    for seed in range(20):
        for instruction, input, how in make_variants(row, 3, np.random.default_rng(seed), args):
            assert "4302" in input + instruction and how["transform"] == "none"


# ---------------------------------------------------------------------------
# teacher
# ---------------------------------------------------------------------------


def _failure(i: int, word: str) -> Failure:
    s = sample(
        f"t{i}",
        instruction="Define the word in one sentence.",
        input=word,
        reference=f"REFERENCE-{word}-secret",
        tags=["animal"],
    )
    return Failure(s, Generation(s.id, f"MODEL-OUTPUT-{word}"), (), {"chrf": 10.0}, ("metric:chrf",))


def test_teacher_writes_new_examples_without_seeing_eval_answers(plugins, mock_backend) -> None:
    failures = (_failure(0, "otter"), _failure(1, "badger"), _failure(2, "heron"))
    cluster = Cluster(0, tuple(f.sample.id for f in failures), "animals", (), None, (), None, None, (), {})
    replies = iter(
        [
            '{"input": "beaver", "output": "A large rodent that builds dams."}',
            "Sure!\nInput: weasel\nOutput: A small slender carnivorous mammal.",
            "I cannot think of one.",
            '```json\n{"input": "otter", "output": "copied an eval input"}\n```',
            '{"input": "stoat", "output": "A small mammal whose coat turns white in winter."}',
        ]
    )
    mock_backend.responder = staticmethod(lambda prompt: next(replies))
    drops: dict[str, int] = {}
    request = DataRequest(
        cluster=cluster,
        failures=failures,
        budget=5,
        suite=load_suite(DEFS),
        seed=3,
        make_backend=lambda spec: plugins.registry.backend(spec.backend)(
            spec, plugins.registry.backend(spec.backend).Options()
        ),
        exclude_inputs=frozenset({"otter", "badger", "heron"}),
        on_drop=lambda reason, n: drops.__setitem__(reason, drops.get(reason, 0) + n),
    )
    source = plugins.registry.data_source("teacher")
    rows = source.gather(request, source.Args(model="teacher-model", backend="mock", per_example=2))
    assert [(r.input, r.output) for r in rows] == [
        ("beaver", "A large rodent that builds dams."),
        ("weasel", "A small slender carnivorous mammal."),
        ("stoat", "A small mammal whose coat turns white in winter."),
    ]
    assert drops == {"teacher_unparsable": 1, "teacher_eval_input": 1}
    assert len(mock_backend.calls) == 5  # budget 5 < 3 failures x 2
    for prompt in mock_backend.calls:
        assert "REFERENCE-" not in prompt and "MODEL-OUTPUT-" not in prompt
        assert "Define the word in one sentence." in prompt
    assert rows[0].provenance["teacher"] == "teacher-model" and rows[0].provenance["seed_sample"] == "t0"
    assert rows[1].provenance["seed_sample"] == "t1" and rows[2].provenance["seed_sample"] == "t1"
    assert rows[2].provenance["round"] == 1 and all(
        r.instruction == "Define the word in one sentence." for r in rows
    )


def test_teacher_replies_parse_robustly() -> None:
    assert parse_reply('noise {"input": "a", "output": "b"} tail') == ("a", "b")
    assert parse_reply('{"input": 12, "output": 144}') == ("12", "144")
    assert parse_reply("**Input:** owl\n**Output:** A nocturnal bird of prey.\nextra") == (
        "owl",
        "A nocturnal bird of prey.",
    )
    assert parse_reply('Input: "lynx"\nOutput: "A wild cat with tufted ears."') == (
        "lynx",
        "A wild cat with tufted ears.",
    )
    assert parse_reply('{"input": "a"}') is None
    assert parse_reply('{"input": "a", "output": ""}') is None
    assert parse_reply("just words") is None


def test_teacher_through_build_dataset_with_the_mock_backend(
    harness_store, plugins, run, mock_backend
) -> None:
    counter = iter(range(10_000))
    mock_backend.responder = staticmethod(
        lambda prompt: json.dumps(
            {
                "input": f"creature{next(counter)}",
                "output": f"An invented animal number {next(counter)} of the woods.",
            }
        )
    )
    manifest = build_dataset(
        harness_store,
        run[0],
        run[1],
        plugins,
        source="teacher",
        source_args={"backend": "mock", "model": "big-teacher", "per_example": 1},
        budget=6,
        suites_against=[],
    )
    assert manifest.n_added == 6 and manifest.sources == {"teacher": 6}
    assert all(r.provenance["teacher"] == "big-teacher" for r in manifest.rows)


# ---------------------------------------------------------------------------
# Datasets: budget split, determinism, parents, decontamination
# ---------------------------------------------------------------------------


def _cluster(cid: int, size: int) -> Cluster:
    return Cluster(cid, tuple(f"{cid}-{i}" for i in range(size)), "", (), None, (), None, None, (), {})


def test_the_budget_is_split_by_cluster_size_and_always_adds_up() -> None:
    clusters = [_cluster(0, 5), _cluster(1, 3), _cluster(2, 2), _cluster(UNCLUSTERED, 2)]
    assert split_budget(12, clusters) == {0: 5, 1: 3, 2: 2, -1: 2}
    assert split_budget(10, clusters) == {0: 4, 1: 2, 2: 2, -1: 2}  # 4.17, 2.5, 1.67, 1.67
    assert split_budget(1, clusters) == {0: 1, 1: 0, 2: 0, -1: 0}
    # Equal remainders: the unclustered group comes last.
    assert split_budget(3, [_cluster(0, 2), _cluster(UNCLUSTERED, 2)]) == {0: 2, -1: 1}
    for budget in range(1, 40):
        assert sum(split_budget(budget, clusters).values()) == budget


def test_a_dataset_keeps_eval_items_out_and_records_why(harness_store, plugins, run) -> None:
    manifest = build_dataset(harness_store, run[0], run[1], plugins, budget=20, embedder=hash_embedder)
    inputs = {r.input for r in manifest.rows}
    assert "cat" not in inputs  # the planted eval input
    assert "acquire" not in inputs  # an input of the built-in dictionary suite
    assert (
        "stallion" not in inputs and manifest.dropped.get("eval_ngram") == 1
    )  # 13-gram overlap with d-horse
    assert manifest.n_added == manifest.n_rows == 20 and sum(manifest.cluster_counts.values()) == 20
    shares = split_budget(20, load_clusters(harness_store, run[1]))
    assert manifest.cluster_counts == {str(c): n for c, n in shares.items() if n}
    assert {s["name"] for s in manifest.decontaminated_against} == {
        "defs",
        "dictionary",
        "arithmetic",
        "numbers",
        "numbers-broad",
        "general",
    }
    assert all(len(s["hash"]) == 64 for s in manifest.decontaminated_against)


def test_the_same_inputs_give_the_same_manifest(tmp_path, plugins, mock_backend) -> None:
    hashes, files = [], []
    for name in ("a", "b"):
        with Store.writer(tmp_path / name / "store.duckdb") as store:
            run_id, clustering = failing_run(store, plugins)
            manifest = build_dataset(
                store,
                run_id,
                clustering,
                plugins,
                budget=12,
                seed=5,
                embedder=hash_embedder,
                suites_against=[],
            )
            again = build_dataset(
                store,
                run_id,
                clustering,
                plugins,
                budget=12,
                seed=5,
                embedder=hash_embedder,
                suites_against=[],
            )
            assert again.hash == manifest.hash and store.scalar("SELECT count(*) FROM datasets") == 1
            hashes.append(manifest.hash)
            files.append(Path(manifest.path))
            assert files[-1] == tmp_path / name / "datasets" / f"{manifest.hash}.jsonl"
            assert load_manifest_rows(store, manifest.hash[:8]) == list(manifest.rows)
    assert hashes[0] == hashes[1]
    # The hash is the file's sha256, and the file reads back as the same rows.
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == hashes[0]
    assert files[0].read_bytes() == files[1].read_bytes()
    assert read_dataset_file(files[0]) == list(
        load_manifest(Store.reader(tmp_path / "a" / "store.duckdb"), "latest").rows
    )


def test_a_child_dataset_grows_its_parent_without_duplicating_it(harness_store, plugins, run) -> None:
    parent = build_dataset(
        harness_store, run[0], run[1], plugins, budget=10, embedder=hash_embedder, suites_against=[]
    )
    child = build_dataset(
        harness_store,
        run[0],
        run[1],
        plugins,
        budget=10,
        embedder=hash_embedder,
        suites_against=[],
        parent=parent.hash[:10],
    )
    assert child.parent == parent.hash and child.rows[:10] == parent.rows
    assert child.n_rows == 20 and child.n_added == 10
    assert not {(r.input, r.output) for r in child.added} & {(r.input, r.output) for r in parent.rows}
    assert child.dropped.get("duplicate_of_parent", 0) >= 1  # the nearest rows were taken already
    stored = harness_store.query(
        "SELECT parent_hash, n_rows, n_added, selection FROM datasets WHERE manifest_hash = ?", [child.hash]
    )
    assert stored == [{"parent_hash": parent.hash, "n_rows": 20, "n_added": 10, "selection": "targeted"}]


def test_random_and_targeted_datasets_have_the_same_size(harness_store, plugins, run) -> None:
    targeted = build_dataset(harness_store, run[0], run[1], plugins, budget=15, embedder=hash_embedder)
    random = build_dataset(harness_store, run[0], run[1], plugins, budget=15, selection="random")
    assert targeted.n_added == random.n_added == 15
    assert random.selection == "random" and targeted.cluster_counts == random.cluster_counts
    assert targeted.hash != random.hash
    with pytest.raises(ConfigError, match="no random selection"):
        build_dataset(harness_store, run[0], run[1], plugins, source="augment", budget=5, selection="random")


def test_a_run_without_failures_is_a_clear_error(harness_store, plugins, mock_backend) -> None:
    summary = evaluate(load_suite(PASSING), mock_spec(), harness_store, plugins)
    before = store_counts(harness_store)
    with pytest.raises(HarnessError, match=f"run {summary.run_id} has no failing samples"):
        build_dataset(harness_store, summary.run_id, None, plugins, budget=5)
    assert store_counts(harness_store) == before


def test_a_run_without_clustering_or_a_bad_budget_is_a_clear_error(
    harness_store, plugins, mock_backend
) -> None:
    summary = evaluate(load_suite(DEFS), mock_spec(), harness_store, plugins)
    with pytest.raises(NotFoundError, match="has no clustering"):
        build_dataset(harness_store, summary.run_id, None, plugins, budget=5)
    with pytest.raises(ConfigError, match="budget must be at least 1"):
        build_dataset(harness_store, summary.run_id, None, plugins, budget=0)
    cluster_run(harness_store, summary.run_id, plugins.registry, featurizer="tfidf")
    with pytest.raises(ConfigError, match=r"unknown argument\. Did you mean 'candidate_factor'"):
        build_dataset(
            harness_store, summary.run_id, None, plugins, budget=5, source_args={"candidate_factr": 3}
        )
    with pytest.raises(ConfigError, match="seed must be 0 or more"):
        build_dataset(harness_store, summary.run_id, None, plugins, budget=5, seed=-1)
    assert harness_store.scalar("SELECT count(*) FROM datasets") == 0


GLOSSARY = [
    (word, f"A {kind} known as {word} in the glossary of {topic}.")
    for word, kind, topic in [
        ("quill", "tool", "writing"),
        ("anvil", "device", "smithing"),
        ("lantern", "object", "lighting"),
        ("saddle", "thing", "riding"),
        ("kettle", "item", "cooking"),
        ("bellows", "instrument", "forging"),
        ("trowel", "implement", "gardening"),
        ("sickle", "article", "farming"),
        ("ledger", "gadget", "accounting"),
        ("compass", "contraption", "navigation"),
        ("prism", "tool", "optics"),
        ("beacon", "device", "signalling"),
        ("harpoon", "object", "whaling"),
        ("funnel", "thing", "pouring"),
        ("spindle", "item", "spinning"),
        ("chalice", "instrument", "drinking"),
        ("tripod", "implement", "photography"),
        ("lattice", "article", "building"),
        ("gimbal", "gadget", "mechanics"),
        ("rudder", "contraption", "sailing"),
    ]
]


class Glossary:
    """A third-party data source, registered through the public hook."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour

    @hookimpl
    def harness_register_data_sources(self, registry: Any) -> None:
        behaviour = self.behaviour

        class Source(DataSource):
            name = "glossary"

            def gather(self, request: DataRequest, args: Any) -> list[TrainingExample]:
                if behaviour == "raise":
                    raise RuntimeError("glossary offline")
                words = GLOSSARY[request.cluster.id + 1 :: 4]
                n = request.budget + (1 if behaviour == "too_many" else 0)
                return [
                    TrainingExample(
                        "Define the word in one sentence.",
                        word,
                        meaning,
                        provenance={"glossary": "g.txt", "entry": word},
                    )
                    for word, meaning in words[:n]
                ]

        registry.add_data_source(Source())


def test_a_third_party_source_plugs_in_and_its_failures_name_it(harness_store, harness_plugins, run) -> None:
    plugins = harness_plugins(Glossary("ok"))
    manifest = build_dataset(harness_store, run[0], run[1], plugins, source="glossary", budget=7)
    assert manifest.sources == {"glossary": 7}  # the source name is filled in
    assert all(r.provenance["glossary"] == "g.txt" for r in manifest.rows)
    for behaviour, message in (
        ("raise", "raised RuntimeError: glossary offline"),
        ("too_many", "returned 3 rows for a budget of 2"),
    ):
        with pytest.raises(PluginError, match=rf"plugin 'Glossary', hook glossary\.gather: .*{message}"):
            build_dataset(
                harness_store,
                run[0],
                run[1],
                harness_plugins(Glossary(behaviour)),
                source="glossary",
                budget=1,
                overfetch=1.0,
            )
    assert harness_store.scalar("SELECT count(*) FROM datasets") == 1


# ---------------------------------------------------------------------------
# annotate: export -> edit -> import
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_annotation_round_trip(tmp_path, harness_store, plugins, run, format) -> None:
    path, count = export_annotations(
        harness_store, run[0], 0, format=format, output=tmp_path / f"c0.{format}"
    )
    members = harness_store.query(
        "SELECT count(*) AS n FROM cluster_members WHERE clustering_id = ? AND cluster_id = 0", [run[1]]
    )[0]["n"]
    assert count == members
    rows = _read(path)
    assert list(rows[0]) == [
        "sample_id",
        "cluster",
        "instruction",
        "input",
        "model_output",
        "reference",
        "issues",
        "corrected_output",
    ]
    assert all(r["corrected_output"] == "" and r["issues"].startswith("poor chrf") for r in rows)
    assert rows[0]["model_output"] == rows[0]["input"]  # the mock echoes the word
    # A person corrects two rows and deletes the rest.
    edited = rows[:2]
    edited[0]["corrected_output"] = f"Corrected definition of {edited[0]['input']}."
    edited[1]["corrected_output"] = f"Another corrected definition, of {edited[1]['input']}."
    _write(path, edited)
    before = store_counts(harness_store)
    manifest = import_annotations(harness_store, path)
    assert manifest.selection == "import" and manifest.run_id == run[0] and manifest.n_added == 2
    assert [(r.input, r.output) for r in manifest.rows] == [
        (e["input"], e["corrected_output"]) for e in edited
    ]
    assert manifest.rows[0].provenance["sample_id"] == edited[0]["sample_id"]
    assert manifest.eval_items == sorted(f"defs:{e['sample_id']}" for e in edited)
    assert store_counts(harness_store)["datasets"] == before["datasets"] + 1


def _read(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or list(rows[0])
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps({c: r.get(c, "") for c in columns}) + "\n" for r in rows))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("missing_column", r"c0\.csv:1: column 'corrected_output' is missing"),
        ("extra_column", r"c0\.csv:1: unknown column 'notes'"),
        ("empty_correction", r"c0\.csv:3: column 'corrected_output' is empty"),
        (
            "unknown_sample",
            r"c0\.csv:2: column 'sample_id': unknown sample 'nope' \(run \d+ has no such sample\)",
        ),
        ("repeated_sample", r"c0\.csv:3: column 'sample_id': sample '.*' is already on line 2"),
    ],
)
def test_a_bad_annotation_file_imports_nothing(tmp_path, harness_store, plugins, run, edit, message) -> None:
    path, _ = export_annotations(harness_store, run[0], 0, output=tmp_path / "c0.csv")
    rows = _read(path)[:2]
    for r in rows:
        r["corrected_output"] = f"Fixed {r['input']}."
    columns = list(rows[0])
    if edit == "missing_column":
        columns.remove("corrected_output")
    elif edit == "extra_column":
        columns.append("notes")
    elif edit == "empty_correction":
        rows[1]["corrected_output"] = "   "
    elif edit == "unknown_sample":
        rows[0]["sample_id"] = "nope"
    elif edit == "repeated_sample":
        rows[1]["sample_id"] = rows[0]["sample_id"]
    _write(path, rows, columns)
    before = store_counts(harness_store)
    with pytest.raises(ConfigError, match=message) as info:
        import_annotations(harness_store, path, run_id=run[0])
    assert "nothing was imported" in str(info.value) and "\n" not in str(info.value)
    assert store_counts(harness_store) == before


def test_a_jsonl_annotation_with_a_missing_column_names_the_line(
    tmp_path, harness_store, plugins, run
) -> None:
    path, _ = export_annotations(harness_store, run[0], 0, format="jsonl", output=tmp_path / "c0.jsonl")
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    del broken["reference"]
    path.write_text("\n".join([lines[0], json.dumps(broken)]) + "\n")
    with pytest.raises(ConfigError, match=r"c0\.jsonl:2: column 'reference' is missing"):
        import_annotations(harness_store, path, run_id=run[0])


def test_annotate_as_a_data_source(tmp_path, harness_store, plugins, run) -> None:
    path, _ = export_annotations(harness_store, run[0], 0, output=tmp_path / "c0.csv")
    rows = _read(path)
    for r in rows:
        r["corrected_output"] = f"The corrected definition of the word {r['input']}."
    _write(path, rows)
    manifest = build_dataset(
        harness_store, run[0], run[1], plugins, source="annotate", source_args={"path": str(path)}, budget=10
    )
    assert manifest.sources.get("annotate", 0) >= 1 and set(manifest.cluster_counts) == {"0"}
    assert all(r.provenance["eval_sample"]["suite"] == "defs" for r in manifest.rows)


# ---------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------


def _cli(store_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--store", str(store_path), *args])


def test_data_commands_end_to_end(tmp_path, plugins, mock_backend) -> None:
    store_path = tmp_path / "store.duckdb"
    with Store.writer(store_path) as store:
        run_id = evaluate(load_suite(DEFS), mock_spec(), store, plugins).run_id
    # The run has no clustering: `data add` clusters it first.
    added = _cli(
        store_path, "data", "add", "latest", "--budget", "6", "--featurizer", "tfidf", "--against", "defs"
    )
    assert added.exit_code == 0, added.output
    digest = added.stdout.strip().splitlines()[-1]
    assert len(digest) == 64 and "clustering its failures" in added.stderr and "6 new" in added.stderr
    listed = _cli(store_path, "data", "list", "--json")
    assert [m["manifest_hash"] for m in json.loads(listed.stdout)] == [digest]
    shown = _cli(store_path, "data", "show", digest[:8], "--json")
    info = json.loads(shown.stdout)
    assert info["n_added"] == 6 and len(info["rows"]) == 6 and info["selection"] == "targeted"
    assert "new rows" in _cli(store_path, "data", "show", digest[:8]).stdout
    random = _cli(
        store_path,
        "data",
        "add",
        str(run_id),
        "--budget",
        "6",
        "--selection",
        "random",
        "--parent",
        digest[:8],
    )
    assert random.exit_code == 0, random.output
    exported = _cli(
        store_path, "data", "export", str(run_id), "--cluster", "0", "--output", str(tmp_path / "a.csv")
    )
    assert exported.exit_code == 0, exported.output
    rows = _read(tmp_path / "a.csv")[:1]
    rows[0]["corrected_output"] = "A fixed definition."
    _write(tmp_path / "a.csv", rows)
    imported = _cli(store_path, "data", "import", str(tmp_path / "a.csv"))
    assert imported.exit_code == 0, imported.output
    assert "corrections of eval items" in imported.stderr


def test_data_add_with_a_broken_pool_is_one_line_and_stores_nothing(tmp_path, plugins, mock_backend) -> None:
    store_path = tmp_path / "store.duckdb"
    with Store.writer(store_path) as store:
        evaluate(load_suite(DEFS), mock_spec(), store, plugins)
    out = _cli(
        store_path, "data", "add", "latest", "--budget", "4", "-a", f"path={DATA / 'pool_broken.jsonl'}"
    )
    assert out.exit_code == 2 and "pool_broken.jsonl:3: not valid JSON" in out.stderr
    assert "Traceback" not in out.output and len(out.stderr.strip().splitlines()) == 1
    with Store.reader(store_path) as store:
        assert store_counts(store) == {"datasets": 0, "dataset_rows": 0, "clusterings": 0}


def test_data_add_on_a_run_without_failures_is_a_clear_error(tmp_path, plugins, mock_backend) -> None:
    store_path = tmp_path / "store.duckdb"
    with Store.writer(store_path) as store:
        evaluate(load_suite(PASSING), mock_spec(), store, plugins)
    out = _cli(store_path, "data", "add", "latest", "--budget", "4")
    assert out.exit_code == 2 and "has no failing samples" in out.stderr
    bad = _cli(store_path, "data", "show", "zz")
    assert bad.exit_code == 2 and "not a dataset hash" in bad.stderr
