"""The improvement loop: iterations recorded and linked, decisions with reasons, resume,
rollback on a planted regression, and the history report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import main as cli_main
from harness.comparison import MetricComparison
from harness.errors import ConfigError, UnknownComponentError
from harness.hookspecs import hookimpl
from harness.loop import LoopConfig, decide, run_loop
from harness.plugin_manager import load_plugins
from harness.reporting import build_report
from harness.stats import PairedTest
from harness.suite import load_suite

PLUGIN = Path(__file__).parent / "data" / "plugins" / "scripted_loop.py"
WORDS = [f"term{i:02d}" for i in range(30)]


def reference(word: str) -> str:
    return f"A made-up concept named {word} that the base model cannot possibly know about."


@pytest.fixture
def suites(tmp_path: Path) -> dict[str, Path]:
    target = tmp_path / "terms"
    target.mkdir()
    with open(target / "eval.jsonl", "w") as f:
        for i, w in enumerate(WORDS):
            f.write(json.dumps({"id": w, "input": w, "reference": reference(w), "tags": ["even" if i % 2 else "odd"]}) + "\n")
    with open(target / "pool.jsonl", "w") as f:
        for i in range(120):
            f.write(json.dumps({"id": f"p{i}", "instruction": "Define the word.", "input": f"pool{i:03d}",
                                "output": f"A different made-up concept called pool{i:03d}, number {i}."}) + "\n")
    (target / "suite.yaml").write_text(
        "name: terms\nversion: 1\ndata: eval.jsonl\npool: pool.jsonl\ninstruction: Define the word.\n"
        "metrics:\n  - name: chrf\n    sample_threshold: 60\n"
    )
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    (poisoned / "eval.jsonl").write_text((target / "eval.jsonl").read_text())
    with open(poisoned / "pool.jsonl", "w") as f:
        for i in range(60):
            f.write(json.dumps({"id": f"x{i}", "instruction": "Define the word.", "input": f"bad{i:03d}",
                                "output": f"POISON {i}"}) + "\n")
    (poisoned / "suite.yaml").write_text((target / "suite.yaml").read_text().replace("name: terms", "name: poisoned"))
    guard = tmp_path / "guard"
    guard.mkdir()
    with open(guard / "eval.jsonl", "w") as f:
        for i in range(20):
            text = f"keep this sentence number {i} intact"
            f.write(json.dumps({"id": f"g{i}", "input": text, "reference": text}) + "\n")
    (guard / "suite.yaml").write_text(
        "name: guard\nversion: 1\ndata: eval.jsonl\ninstruction: Repeat the input.\nmetrics:\n  - chrf\n"
    )
    return {"target": target, "poisoned": poisoned, "guard": guard}


@pytest.fixture
def plugins():
    observer = IterationObserver()
    loaded = load_plugins([PLUGIN], autoload=False, extra=[(observer, "observer")])
    module = scripted_module(loaded)
    module.ScriptedBackend.references = {w: reference(w) for w in WORDS}
    module.ScriptedTrainer.calls = []
    loaded.observer = observer  # type: ignore[attr-defined]
    return loaded


class IterationObserver:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, str]] = []

    @hookimpl
    def harness_iteration_finished(self, loop_id: int, iteration: dict) -> None:
        self.seen.append((loop_id, iteration["iteration"], iteration["decision"]))


def config(suites, plan, **overrides) -> LoopConfig:
    values = dict(
        suite=str(suites["target"]),
        model="base-model",
        backend="scripted",
        trainer="scripted",
        trainer_args={"plan": plan},
        guard=str(suites["guard"]),
        budget=10,
        iterations=2,
        featurizer="tfidf",
        clusterer_args={"min_cluster_size": 2},
        resamples=500,
    )
    values.update(overrides)
    return LoopConfig(**values)


def scripted_module(plugins):
    """The test plugin's module, as loaded (with --plugin semantics) by `plugins`."""
    import sys

    return sys.modules[plugins.registry.backend("scripted").__module__]


def test_an_improving_loop_records_linked_iterations(suites, plugins, harness_store) -> None:
    result = run_loop(config(suites, ["good-15", "good-30"]), harness_store, plugins)
    assert [(r.iteration, r.decision, r.accepted) for r in result.iterations] == [
        (0, "baseline", True), (1, "continue", True), (2, "continue", True),
    ]
    assert result.final_iteration == 2 and result.stop_reason == "ran all 2 iteration(s)"
    values = [r.main_value for r in result.iterations]
    assert values[0] < values[1] < values[2] == pytest.approx(100.0)

    rows = harness_store.query("SELECT * FROM iterations ORDER BY iteration")
    assert [r["step"] for r in rows] == ["decided"] * 3
    for row in rows[1:]:
        # Each iteration links its eval runs, clusters, data, training and checkpoint.
        assert row["eval_run_id"] and row["guard_run_id"] and row["clustering_id"]
        assert row["manifest_hash"] and row["training_id"] and json.loads(row["checkpoint"])["adapter"]
        assert row["tokens_trained"] > 0 and row["tokens_evaluated"] > 0
        cost = json.loads(row["cost"])
        assert cost["tokens"]["trained"] == row["tokens_trained"] and cost["services"] and cost["gpus"]
        comparison = json.loads(row["comparison"])
        assert comparison["metrics"][0]["metric"] == "chrf" and comparison["metrics"][0]["p_value"] < 0.05
        assert comparison["guard"][0]["difference"] == 0
        assert sum(c["fixed"] for c in comparison["clusters"]) > 0
    # Iteration 1 fixed the first 15 words: the clusters it targeted (the mining split's
    # failures only) say so.
    dev = {sample.id for sample in load_suite(suites["target"]).split("dev").samples}
    fixed = len(dev & set(sorted(WORDS)[:15]))
    first = json.loads(rows[1]["comparison"])["clusters"]
    assert sum(c["fixed"] for c in first) == fixed and sum(c["still_failing"] for c in first) == len(dev) - fixed
    assert 0 < fixed < len(dev) == 15
    # Both splits are evaluated each iteration; the decision used the held-out one.
    for row in rows:
        runs = harness_store.query(
            "SELECT split, run_id FROM runs WHERE run_id IN (?, ?)", [row["eval_run_id"], row["mining_run_id"]]
        )
        splits = {r["split"]: r["run_id"] for r in runs}
        assert splits == {"test": row["eval_run_id"], "dev": row["mining_run_id"]}

    # Retrained from the base each time on the grown dataset (LLM2LLM's default).
    calls = scripted_module(plugins).ScriptedTrainer.calls
    assert [c["base"].adapter for c in calls] == [None, None]
    assert calls[1]["rows"] > calls[0]["rows"]
    datasets = harness_store.query("SELECT n_rows, parent_hash FROM datasets ORDER BY n_rows")
    assert datasets[1]["parent_hash"] is not None
    curves = harness_store.scalar("SELECT count(*) FROM training_curves")
    assert curves == 8  # 3 train + 1 validation points per training run
    assert plugins.observer.seen == [(result.loop_id, 0, "baseline"), (result.loop_id, 1, "continue"), (result.loop_id, 2, "continue")]


def test_history_report_shows_iterations_and_the_overall_change(suites, plugins, harness_store) -> None:
    result = run_loop(config(suites, ["good-15", "good-30"]), harness_store, plugins)
    doc = build_report(harness_store, "history", plugins=plugins, loop=result.loop_id)
    data = doc.data
    assert [it["decision"] for it in data["iterations"]] == ["baseline", "continue", "continue"]
    change = {m["metric"]: m for m in data["change"]["metrics"] if m["suite"] == "test"}
    assert change["chrf"]["outcome"] == "better" and change["chrf"]["after"] == pytest.approx(100.0)
    from harness.render import render

    text = render(doc, "markdown")
    assert "iteration 0 → iteration 2" in text and "continue" in text
    # The suite gives `data:` only: the history says the harness made its split.
    assert "mined on dev (15 samples), decided on test (15); made by the harness" in text
    assert "dev (mined)" in text and data["loop"]["split_auto"] is True


def test_no_significant_gain_stops_and_keeps_the_last_checkpoint(suites, plugins, harness_store) -> None:
    result = run_loop(config(suites, ["good-15", "good-15"], iterations=3), harness_store, plugins)
    assert [r.decision for r in result.iterations] == ["baseline", "continue", "no_gain"]
    assert result.final_iteration == 1
    assert "no significant gain on terms" in result.iterations[-1].reason and "p=1" in result.iterations[-1].reason


def test_a_poisoned_dataset_is_rolled_back_with_the_reason(suites, plugins, harness_store) -> None:
    result = run_loop(config(suites, ["good-30"], suite=str(suites["poisoned"])), harness_store, plugins)
    assert [r.decision for r in result.iterations] == ["baseline", "rollback"]
    assert result.final_iteration == 0
    reason = result.iterations[-1].reason
    assert reason.startswith("poisoned got significantly worse: chrf") and "p=" in reason
    assert harness_store.scalar("SELECT accepted FROM iterations WHERE iteration = 1") is False
    assert harness_store.scalar("SELECT final_iteration FROM loops") == 0


def test_forgetting_on_the_guard_suite_rolls_back(suites, plugins, harness_store, tmp_path) -> None:
    # The target suite improves, but the checkpoint ruins the guard suite.
    module = scripted_module(plugins)
    module.ScriptedBackend.references = {w: reference(w) for w in WORDS}
    original = module.ScriptedBackend.generate

    def forgetful(self, prompts, config, *, seeds=None, progress=None):
        out = original(self, prompts, config, seeds=seeds, progress=progress)
        if self.spec.adapter and "keep this sentence" in prompts[0]:
            return [type(c)("lost", c.prompt_tokens, 1, "eos") for c in out]
        return out

    module.ScriptedBackend.generate = forgetful
    try:
        result = run_loop(config(suites, ["good-30"]), harness_store, plugins)
    finally:
        module.ScriptedBackend.generate = original
    assert [r.decision for r in result.iterations] == ["baseline", "rollback"]
    assert "guard suite guard got significantly worse (forgetting): chrf" in result.iterations[-1].reason


def test_reaching_the_target_stops(suites, plugins, harness_store) -> None:
    suite = suites["target"] / "suite.yaml"
    suite.write_text(suite.read_text().replace("sample_threshold: 60", "sample_threshold: 60\n    target: 50"))
    result = run_loop(config(suites, ["good-30", "good-30"], iterations=3), harness_store, plugins)
    assert [r.decision for r in result.iterations] == ["baseline", "target_met"]
    assert "reaches the target 50" in result.iterations[-1].reason


def test_resume_continues_the_same_loop_without_redoing_finished_steps(suites, plugins, harness_store) -> None:
    module = scripted_module(plugins)
    calls = {"n": 0}
    original = module.ScriptedTrainer.train

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the machine went away mid-training")
        return original(self, *args, **kwargs)

    module.ScriptedTrainer.train = flaky
    try:
        with pytest.raises(RuntimeError, match="mid-training"):
            run_loop(config(suites, ["good-15", "good-30"]), harness_store, plugins)
        before = {t: harness_store.scalar(f"SELECT count(*) FROM {t}") for t in ("runs", "clusterings", "datasets")}
        assert harness_store.scalar("SELECT status FROM loops") == "failed"
        assert harness_store.scalar("SELECT step FROM iterations WHERE iteration = 1") == "data"
        assert harness_store.scalar("SELECT status FROM training_runs") == "failed"
        result = run_loop(config(suites, ["good-15", "good-30"]), harness_store, plugins)
    finally:
        module.ScriptedTrainer.train = original
    assert result.resumed and result.loop_id == 1
    assert [r.decision for r in result.iterations] == ["baseline", "continue", "continue"]
    # Iteration 0's evaluation and iteration 1's clusters and data were not redone: the
    # resumed run added only iteration 1's evaluations and iteration 2's work.
    first = harness_store.query("SELECT eval_run_id, clustering_id FROM iterations WHERE iteration <= 1 ORDER BY iteration")
    assert first[0]["eval_run_id"] <= before["runs"] and first[1]["clustering_id"] <= before["clusterings"]
    assert harness_store.scalar("SELECT count(*) FROM runs") == before["runs"] + 6  # dev, test and guard, twice
    assert harness_store.scalar("SELECT count(*) FROM clusterings") == before["clusterings"] + 1
    assert harness_store.scalar("SELECT count(*) FROM loops") == 1


def test_random_selection_is_the_same_loop_with_random_data(suites, plugins, harness_store) -> None:
    result = run_loop(config(suites, ["good-15"], iterations=1, selection="random"), harness_store, plugins)
    assert result.iterations[-1].decision == "continue"
    assert harness_store.scalar("SELECT selection FROM datasets") == "random"


def test_continuing_from_the_last_adapter_replays_earlier_rows(suites, plugins, harness_store) -> None:
    run_loop(config(suites, ["good-15", "good-30"], retrain_from="last", replay_ratio=0.5), harness_store, plugins)
    calls = scripted_module(plugins).ScriptedTrainer.calls
    assert calls[0]["base"].adapter is None
    assert calls[1]["base"].adapter and calls[1]["base"].adapter.endswith("good-15")
    new_rows = calls[1]["rows"] - round(0.5 * (calls[1]["rows"] / 1.5))
    assert calls[1]["rows"] < 2 * calls[0]["rows"] + 1 and new_rows > 0


def test_bad_settings_are_refused_before_anything_is_written(suites, plugins, harness_store) -> None:
    with pytest.raises(UnknownComponentError, match="unknown trainer 'lorra'"):
        run_loop(config(suites, [], trainer="lorra"), harness_store, plugins)
    with pytest.raises(ConfigError, match="guard suite must differ"):
        run_loop(config(suites, [], guard=str(suites["target"])), harness_store, plugins)
    with pytest.raises(ConfigError, match="unknown argument"):
        run_loop(config(suites, [], trainer_args={"plan": [], "epochz": 1}), harness_store, plugins)
    assert harness_store.scalar("SELECT count(*) FROM loops") == 0
    assert harness_store.scalar("SELECT count(*) FROM runs") == 0


def _comparison(before: float, after: float, p: float, low: float, high: float, higher: bool = True) -> MetricComparison:
    test = PairedTest("paired bootstrap", before, after, after - before, p, low, high, 1.0, 100)
    return MetricComparison("chrf", higher, 100, 0, 0, test=test)


def test_decide_needs_p_and_an_interval_that_excludes_zero() -> None:
    assert decide(_comparison(10, 12, 0.01, 0.5, 3.5), [], suite="s", target=None)[0] == "continue"
    # sacrebleu's p says significant, the interval does not: not enough evidence.
    assert decide(_comparison(10, 12, 0.03, -0.2, 3.5), [], suite="s", target=None)[0] == "no_gain"
    assert decide(_comparison(10, 8, 0.01, -3.0, -0.5), [], suite="s", target=None)[0] == "rollback"
    # Lower-is-better metrics: a fall is an improvement.
    assert decide(_comparison(0.5, 0.3, 0.01, -0.3, -0.1, higher=False), [], suite="s", target=None)[0] == "continue"
    guard = _comparison(50, 40, 0.001, -15, -5)
    decision, reason = decide(_comparison(10, 12, 0.01, 0.5, 3.5), [guard], suite="s", guard_suite="general", target=None)
    assert decision == "rollback" and "forgetting" in reason
    assert decide(_comparison(10, 12, 0.2, -1, 4), [], suite="s", target=11)[0] == "target_met"


# -- the held-out split never steers selection ------------------------------------------

ZEBRAS = [f"zebra{i}" for i in range(6)]


def zebra_reference(word: str) -> str:
    return f"A striped wild horse of the African plains, the one called {word}."


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path]:
    """A suite whose dev split holds made-up terms and whose test split holds zebras; a
    pool with rows near each. Mining the test split would pull zebra rows into the data."""
    root = tmp_path / "planted"
    root.mkdir()
    terms = WORDS[:6]
    with open(root / "dev.jsonl", "w") as f:
        for w in terms:
            f.write(json.dumps({"id": w, "input": w, "reference": reference(w)}) + "\n")
    with open(root / "test.jsonl", "w") as f:
        for w in ZEBRAS:
            f.write(json.dumps({"id": w, "input": w, "reference": zebra_reference(w)}) + "\n")
    with open(root / "pool.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"instruction": "Define the word.", "input": f"term{i:02d}x",
                                "output": f"A made-up concept named term{i:02d}x, invented for row {i}."}) + "\n")
            f.write(json.dumps({"instruction": "Define the word.", "input": f"zebra{i:02d}x",
                                "output": f"A striped wild horse, zebra number {i} of the herd."}) + "\n")
    head = ("version: 1\npool: pool.jsonl\ninstruction: Define the word.\nsplits:\n  dev: dev.jsonl\n"
            "  test: test.jsonl\nmetrics:\n  - name: chrf\n    sample_threshold: 60\n")
    (root / "suite.yaml").write_text("name: planted\n" + head)
    # The same files with the roles swapped: the zebras are mined (the counterfactual).
    swapped = tmp_path / "swapped"
    shutil.copytree(root, swapped)
    (swapped / "suite.yaml").write_text("name: swapped\n" + head + "mining_split: test\nheldout_split: dev\n")
    return {"planted": root / "suite.yaml", "swapped": swapped / "suite.yaml"}


class DataPathSpy:
    """Records every sample id the loop's data path reads: the failures loaded for
    clustering and data, and what each data request hands the source."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, plugins) -> None:
        import harness.clustering
        import harness.datasets

        self.loaded: set[str] = set()
        self.requested: set[str] = set()
        self.suite_samples: set[str] = set()
        original = harness.clustering.load_failures

        def load_failures(store, run_id):
            failures = original(store, run_id)
            self.loaded.update(f.sample.id for f in failures)
            return failures

        monkeypatch.setattr(harness.clustering, "load_failures", load_failures)
        monkeypatch.setattr(harness.datasets, "load_failures", load_failures)
        source = plugins.registry.data_source("pool")
        gather = source.gather

        def spy_gather(request, args):
            self.requested.update(request.cluster.members)
            self.requested.update(f.sample.id for f in request.failures)
            self.suite_samples.update(s.id for s in request.suite.samples)
            return gather(request, args)

        monkeypatch.setattr(source, "gather", spy_gather)

    def seen(self) -> set[str]:
        return self.loaded | self.requested | self.suite_samples


def _zebra_rows(store, loop_id: int) -> int:
    from harness.datasets import load_manifest_rows

    digest = store.scalar("SELECT manifest_hash FROM iterations WHERE loop_id = ? AND iteration = 1", [loop_id])
    return sum("zebra" in row.input for row in load_manifest_rows(store, digest))


def test_the_loop_never_reads_held_out_samples_when_it_clusters_or_gathers_data(
    planted, plugins, harness_store, monkeypatch
) -> None:
    scripted_module(plugins).ScriptedBackend.references = {
        **{w: reference(w) for w in WORDS[:6]}, **{z: zebra_reference(z) for z in ZEBRAS}
    }
    settings = dict(guard=None, iterations=1, budget=12, featurizer="tfidf", clusterer_args={"min_cluster_size": 2},
                    resamples=200, backend="scripted", model="base-model", trainer="scripted",
                    trainer_args={"plan": ["same"]})
    spy = DataPathSpy(monkeypatch, plugins)
    result = run_loop(LoopConfig(suite=str(planted["planted"]), **settings), harness_store, plugins)
    # The zebras fail on the held-out split, yet no step of the data path read them.
    test_run = result.iterations[0].eval_run_id
    assert set(ZEBRAS) <= {r["sample_id"] for r in harness_store.query("SELECT sample_id FROM failures WHERE run_id = ?", [test_run])}
    assert spy.seen() and spy.seen() <= set(WORDS[:6])
    assert _zebra_rows(harness_store, result.loop_id) == 0
    # Curation still checked the rows against every split (the whole suite).
    whole = load_suite(planted["planted"])
    against = json.loads(harness_store.scalar("SELECT decontaminated_against FROM datasets"))
    assert {"name": "planted", "hash": whole.hash} in against

    # The counterfactual: mine the zebras instead, and they do steer the selection.
    spy_swapped = DataPathSpy(monkeypatch, plugins)
    swapped = run_loop(LoopConfig(suite=str(planted["swapped"]), **settings), harness_store, plugins)
    assert spy_swapped.seen() <= set(ZEBRAS)
    assert _zebra_rows(harness_store, swapped.loop_id) >= 6


def _splits_migration() -> int:
    from harness.store.core import migrations

    return next(version for version, name, _ in migrations() if name == "splits")


def _downgrade_to_before_splits(path: Path) -> None:
    """Make a store look as a harness before splits wrote it: no split columns, no
    splits migration, comparisons without the mining split. (The splits migration is
    the last one; a later migration would have to be undone here too.)"""
    import duckdb

    con = duckdb.connect(str(path))
    for table, column in (("runs", "split"), ("loops", "mining_split"), ("loops", "heldout_split"),
                          ("loops", "split_auto"), ("loops", "split_sizes"), ("iterations", "mining_run_id")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    for loop_id, iteration, raw in con.execute("SELECT loop_id, iteration, comparison FROM iterations").fetchall():
        if raw:
            old = {k: v for k, v in json.loads(raw).items() if k in ("metrics", "guard", "clusters", "issues")}
            con.execute("UPDATE iterations SET comparison = ? WHERE loop_id = ? AND iteration = ?",
                        [json.dumps(old), loop_id, iteration])
    con.execute("DELETE FROM schema_migrations WHERE version >= ?", [_splits_migration()])
    con.close()


def test_a_store_from_before_splits_opens_and_its_history_reads(suites, plugins, tmp_path) -> None:
    from harness.errors import HarnessError
    from harness.store import Store

    path = tmp_path / "old.duckdb"
    with Store.writer(path) as store:
        loop = run_loop(config(suites, ["good-30"], iterations=1, guard=None), store, plugins)
    _downgrade_to_before_splits(path)
    with pytest.raises(HarnessError, match=f"schema version {_splits_migration() - 1}"):
        Store.reader(path)  # a reader asks for the upgrade ...
    with Store.writer(path):  # ... which any writer makes
        pass
    with Store.reader(path) as store:
        assert store.scalar("SELECT count(*) FROM runs WHERE split IS NOT NULL") == 0
        doc = build_report(store, "history", plugins=plugins, loop=loop.loop_id)
    from harness.render import render

    text = render(doc, "markdown")
    assert "made before held-out splits" in text and "none (mined and decided on the same samples)" in text
    assert [it["decision"] for it in doc.data["iterations"]] == ["baseline", "continue"]
    assert doc.data["iterations"][1]["mining_run_id"] is None
    listed = CliRunner().invoke(cli_main, ["--store", str(path), "runs"])
    assert listed.exit_code == 0, listed.output
