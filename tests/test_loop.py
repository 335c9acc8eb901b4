"""The improvement loop: iterations recorded and linked, decisions with reasons, resume,
rollback on a planted regression, and the history report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import main as cli_main
from harness.components.hookspecs import hookimpl
from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError, UnknownComponentError
from harness.loop.config import LoopConfig
from harness.loop.decide import DECISION_RULE, GuardCheck, decide
from harness.loop.run import run_loop
from harness.report.show import build_report
from harness.score.comparison import MetricComparison
from harness.stats import PairedTest
from harness.suite.load import load_suite

PLUGIN = Path(__file__).parent / "data" / "plugins" / "scripted_loop.py"
WORDS = [f"term{i:02d}" for i in range(30)]


def reference(word: str) -> str:
    return f"A made-up concept named {word} that the base model cannot possibly know about."


@pytest.fixture
def suites(tmp_path: Path) -> dict[str, Path]:
    return build_suites(tmp_path)


def build_suites(tmp_path: Path) -> dict[str, Path]:
    """The target suite (30 made-up words), a poisoned copy of it and a guard suite."""
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
    from harness.report.render import render

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
    assert "guard suite guard may have got worse (forgetting not ruled out): chrf" in result.iterations[-1].reason


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


def _decision(main: MetricComparison, *guards: GuardCheck, target: float | None = None, margin: float = 1.0) -> str:
    return decide(main, list(guards), suite="s", guard_suite="general", target=target, main_margin=margin).decision


def test_decide_needs_p_and_an_interval_that_excludes_zero() -> None:
    assert _decision(_comparison(10, 12, 0.01, 0.5, 3.5)) == "continue"
    # sacrebleu's p says significant, the interval does not: not enough evidence.
    assert _decision(_comparison(10, 12, 0.03, -0.2, 3.5)) == "underpowered"
    assert _decision(_comparison(10, 8, 0.01, -3.0, -0.5)) == "rollback"
    # Lower-is-better metrics: a fall is an improvement.
    assert _decision(_comparison(0.5, 0.3, 0.01, -0.3, -0.1, higher=False), margin=0.05) == "continue"
    assert _decision(_comparison(10, 12, 0.2, -1, 4), target=11) == "target_met"


def test_the_guard_rolls_back_a_drop_that_is_not_significant_but_exceeds_the_margin() -> None:
    """An underpowered guard proves nothing: a drop of 3 with 95% CI [-7, +1] is not
    significant, but a loss of 7 is not ruled out, beyond the margin of 2."""
    main = _comparison(10, 12, 0.001, 0.5, 3.5)
    drop = GuardCheck(_comparison(50, 47, 0.2, -7, 1), margin=2.0)
    result = decide(main, [drop], suite="s", guard_suite="general", target=None, main_margin=1.0)
    assert result.decision == "rollback" and "forgetting not ruled out" in result.reason
    assert "beyond the margin 2" in result.reason
    (guard,) = result.record["guards"]
    assert guard["verdict"] == "inferior" and guard["margin"] == 2.0 and guard["ci"] == [-7, 1]
    assert guard["significantly_worse"] is False
    assert result.record["rule"] == DECISION_RULE


def test_the_guard_accepts_a_change_inside_the_margin_even_a_significant_one() -> None:
    main = _comparison(10, 12, 0.001, 0.5, 3.5)
    small = GuardCheck(_comparison(50, 49.5, 0.3, -1.5, 0.5), margin=2.0)
    assert _decision(main, small) == "continue"
    # Significantly worse, but by less than the margin: non-inferior, accepted.
    slight = GuardCheck(_comparison(50, 49.2, 0.001, -1.5, -0.2), margin=2.0)
    result = decide(main, [slight], suite="s", guard_suite="general", target=None, main_margin=1.0)
    assert result.decision == "continue"
    assert result.record["guards"][0]["verdict"] == "non-inferior"
    assert result.record["guards"][0]["significantly_worse"] is True
    # Lower-is-better guard (perplexity): a rise is the loss.
    rise = GuardCheck(_comparison(4.0, 4.3, 0.2, -0.1, 0.7, higher=False), margin=0.2)
    assert _decision(main, rise) == "rollback"


def test_holm_adjusts_the_main_test_for_the_guard_tests_of_the_same_decision() -> None:
    main = _comparison(10, 12, 0.03, 0.2, 3.5)
    assert _decision(main, margin=5.0) == "continue"
    guard = GuardCheck(_comparison(50, 50.5, 0.04, -0.5, 1.5), margin=2.0)
    result = decide(main, [guard], suite="s", guard_suite="general", target=None, main_margin=5.0)
    # Holm: 0.03 x 2 = 0.06, not below 0.05; the gain of 5 (the margin) is ruled out.
    assert result.decision == "no_gain"
    assert [f["p_holm"] for f in result.record["family"]] == pytest.approx([0.06, 0.06])


def test_a_no_gain_that_cannot_rule_out_a_gain_of_the_margin_is_underpowered() -> None:
    assert _decision(_comparison(10, 10.5, 0.4, -1.0, 2.0), margin=1.0) == "underpowered"
    assert _decision(_comparison(10, 10.1, 0.4, -0.4, 0.6), margin=1.0) == "no_gain"


def _guard_loses(module, lost: dict[str, str]):
    """Patch the scripted backend: on adapters, the guard samples in `lost` answer so."""
    original = module.ScriptedBackend.generate

    def patched(self, prompts, config, *, seeds=None, progress=None):
        out = original(self, prompts, config, seeds=seeds, progress=progress)
        if not self.spec.adapter:
            return out
        replaced = []
        for prompt, c in zip(prompts, out):
            key = next((k for k in lost if f"keep this sentence number {k} intact" in prompt), None)
            replaced.append(type(c)(lost[key], c.prompt_tokens, 1, "eos") if key is not None else c)
        return replaced

    module.ScriptedBackend.generate = patched
    return original


def test_the_loop_rolls_back_an_unproven_guard_and_keeps_a_change_inside_the_margin(suites, plugins, tmp_path) -> None:
    """Two of the 20 guard samples lost: a drop the bootstrap cannot call significant,
    but one whose interval reaches past the default margin (5%): rollback. One sample
    slightly changed: inside the margin: continue."""
    from harness.store import Store

    module = scripted_module(plugins)
    original = _guard_loses(module, {"3": "lost", "7": "lost"})
    try:
        with Store.writer(tmp_path / "drop.duckdb") as store:
            result = run_loop(config(suites, ["good-30"], iterations=1), store, plugins)
            record = json.loads(store.scalar("SELECT comparison FROM iterations WHERE iteration = 1"))
    finally:
        module.ScriptedBackend.generate = original
    assert [r.decision for r in result.iterations] == ["baseline", "rollback"]
    (guard,) = record["decision"]["guards"]
    assert guard["verdict"] == "inferior" and not guard["significantly_worse"]
    assert guard["ci_better"][0] < -guard["margin"] and guard["margin"] == pytest.approx(5.0)
    assert "forgetting not ruled out" in result.iterations[-1].reason

    original = _guard_loses(module, {"3": "keep this sentence number 3 intact!"})
    try:
        with Store.writer(tmp_path / "inside.duckdb") as store:
            result = run_loop(config(suites, ["good-30"], iterations=1), store, plugins)
            record = json.loads(store.scalar("SELECT comparison FROM iterations WHERE iteration = 1"))
            rule = store.scalar("SELECT decision_rule FROM iterations WHERE iteration = 1")
    finally:
        module.ScriptedBackend.generate = original
    assert [r.decision for r in result.iterations] == ["baseline", "continue"]
    (guard,) = record["decision"]["guards"]
    assert guard["verdict"] == "non-inferior" and guard["change"] < 0
    assert rule == DECISION_RULE
    planned = {p["suite"]: p for p in record["decision"]["planned"]}
    # The baseline scores every target sample alike (it echoes the word): no spread, MDE 0.
    assert planned["terms"]["mde"] == 0 and planned["guard"]["margin"] == pytest.approx(5.0)


def test_decisions_of_an_older_store_read_as_made_under_the_old_rule(suites, plugins, tmp_path) -> None:
    from harness.report.render import render
    from harness.store import Store

    path = tmp_path / "old.duckdb"
    with Store.writer(path) as store:
        run_loop(config(suites, ["good-15"], iterations=1), store, plugins)
    _downgrade_to_schema_3(path)  # the store an earlier version wrote: no decision records
    with Store.writer(path) as store:
        assert store.scalar("SELECT count(*) FROM iterations WHERE decision_rule IS NULL") == 2
        doc = build_report(store, "history", plugins=plugins)
    assert [it["decision_rule"] for it in doc.data["iterations"]] == [None, None]
    assert "decided under rule 1 (before this version)" in render(doc, "markdown")


def test_train_seeds_train_k_adapters_and_decide_on_their_spread(suites, plugins, harness_store) -> None:
    """Two seeds that agree: continue, with the seed count recorded. Two seeds that
    disagree (one fixes every sample, one nothing): the average gains, but the spread
    between seeds says the data does not reliably help: no continue."""
    calls = scripted_module(plugins).ScriptedTrainer.calls
    result = run_loop(config(suites, ["good-30"], iterations=1, train_seeds=2, guard=None), harness_store, plugins)
    assert [r.decision for r in result.iterations] == ["baseline", "continue"]
    assert [c["checkpoint"] for c in calls] == ["good-30", "good-30"]
    assert len({str(c["base"]) for c in calls}) == 1
    row = harness_store.query("SELECT comparison, checkpoint, tokens_trained FROM iterations WHERE iteration = 1")[0]
    record = json.loads(row["comparison"])
    assert record["decision"]["train_seeds"] == 2 and len(record["decision"]["seed_runs"]) == 2
    assert record["metrics"][0]["seeds"] == 2
    seeds = json.loads(row["checkpoint"])["seeds"]
    assert [s["seed"] for s in seeds] == [1] and "seed-1" in seeds[0]["checkpoint"]["adapter"]
    both = harness_store.scalar("SELECT sum(tokens_trained) FROM training_runs")
    assert row["tokens_trained"] == both and harness_store.scalar("SELECT count(*) FROM training_runs") == 2

    calls.clear()
    result = run_loop(config(suites, ["good-30|same"], iterations=1, train_seeds=2, guard=None, seed=0,
                             budget=9), harness_store, plugins)
    assert [c["checkpoint"] for c in calls] == ["good-30", "same"]
    assert result.iterations[-1].decision in ("underpowered", "no_gain")
    record = json.loads(harness_store.scalar(
        "SELECT comparison FROM iterations WHERE loop_id = ? AND iteration = 1", [result.loop_id]))
    chrf = record["metrics"][0]
    assert chrf["difference"] > 0 and chrf["ci"][0] < 0 < chrf["ci"][1]


def test_the_cli_and_the_loop_train_through_one_recording_path(
    suites, plugins, harness_store, tiny_model_dir, tmp_path, monkeypatch
) -> None:
    """`harness train` and the loop record trainings the same way (they used to drift)."""
    from click.testing import CliRunner

    import harness.train.runs as training_runs
    from harness.cli import main

    callers: list[str] = []
    real = training_runs.train_and_record

    def spy(store, trainer, **kwargs):
        callers.append(kwargs["output"].parent.name)
        return real(store, trainer, **kwargs)

    monkeypatch.setattr(training_runs, "train_and_record", spy)
    run_loop(config(suites, ["good-15"], iterations=1), harness_store, plugins)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "Define the word.", "input": "x", "output": "y"}) + "\n")
    store = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(
        main,
        ["--store", str(store), "--plugin", str(PLUGIN), "--no-autoload", "train", str(rows),
         "--model", str(tiny_model_dir), "--trainer", "scripted", "--output", str(tmp_path / "cli" / "run-1")],
    )
    assert result.exit_code == 0, result.output
    assert len(callers) == 2 and callers[1] == "cli"
    import duckdb

    for path in (harness_store.path, store):
        with duckdb.connect(str(path), read_only=True) as con:
            details = con.execute("SELECT details FROM training_runs WHERE status = 'completed'").fetchall()
        assert details and all("prompt" in json.loads(d) for (d,) in details)


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
        import harness.cluster.clustering
        import harness.data.datasets

        self.loaded: set[str] = set()
        self.requested: set[str] = set()
        self.suite_samples: set[str] = set()
        original = harness.cluster.clustering.load_failures

        def load_failures(store, run_id):
            failures = original(store, run_id)
            self.loaded.update(f.sample.id for f in failures)
            return failures

        monkeypatch.setattr(harness.cluster.clustering, "load_failures", load_failures)
        monkeypatch.setattr(harness.data.datasets, "load_failures", load_failures)
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
    from harness.data.manifests import load_manifest_rows

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
                    trainer_args={"plan": ["same"]},
                    # Nearest rows only: diversity may pick a far row, which would blur what steers.
                    source_args={"diversity": 0.0})
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




def _downgrade_to_schema_3(path: Path) -> None:
    """Make a store look as a harness before decision rules and splits wrote it (schema
    3): none of the columns migrations 4 and 5 add, comparisons without the mining split
    or the decision record. (A later migration would have to be undone here too.)"""
    import duckdb

    con = duckdb.connect(str(path))
    for table, column in (("runs", "split"), ("loops", "mining_split"), ("loops", "heldout_split"),
                          ("loops", "split_auto"), ("loops", "split_sizes"), ("iterations", "mining_run_id"),
                          ("iterations", "decision_rule"), ("runs", "cluster_by")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    for loop_id, iteration, raw in con.execute("SELECT loop_id, iteration, comparison FROM iterations").fetchall():
        if raw:
            old = {k: v for k, v in json.loads(raw).items() if k in ("metrics", "guard", "clusters", "issues")}
            con.execute("UPDATE iterations SET comparison = ? WHERE loop_id = ? AND iteration = ?",
                        [json.dumps(old), loop_id, iteration])
    con.execute("DELETE FROM schema_migrations WHERE version >= 4")
    con.close()


def test_a_store_from_before_splits_opens_and_its_history_reads(suites, plugins, tmp_path) -> None:
    from harness.errors import HarnessError
    from harness.store import Store

    path = tmp_path / "old.duckdb"
    with Store.writer(path) as store:
        loop = run_loop(config(suites, ["good-30"], iterations=1, guard=None), store, plugins)
    _downgrade_to_schema_3(path)
    with pytest.raises(HarnessError, match="schema version 3"):
        Store.reader(path)  # a reader asks for the upgrade ...
    with Store.writer(path):  # ... which any writer makes
        pass
    with Store.reader(path) as store:
        assert store.scalar("SELECT count(*) FROM runs WHERE split IS NOT NULL") == 0
        doc = build_report(store, "history", plugins=plugins, loop=loop.loop_id)
    from harness.report.render import render

    text = render(doc, "markdown")
    assert "made before held-out splits" in text and "none (mined and decided on the same samples)" in text
    assert [it["decision"] for it in doc.data["iterations"]] == ["baseline", "continue"]
    assert doc.data["iterations"][1]["mining_run_id"] is None
    listed = CliRunner().invoke(cli_main, ["--store", str(path), "runs"])
    assert listed.exit_code == 0, listed.output


def test_fixed_iterations_run_every_iteration_each_on_the_one_before(suites, plugins, harness_store) -> None:
    plan = ["good-15", "good-15", "good-30"]
    stopped = run_loop(config(suites, plan, iterations=3), harness_store, plugins)
    assert [r.decision for r in stopped.iterations] == ["baseline", "continue", "no_gain"]
    scripted_module(plugins).ScriptedTrainer.calls = []
    fixed = run_loop(config(suites, plan, iterations=3, fixed_iterations=True), harness_store, plugins)
    assert fixed.loop_id != stopped.loop_id, "the option is part of the loop's identity"
    assert [r.decision for r in fixed.iterations] == ["baseline", "continue", "no_gain", "continue"]
    assert fixed.stop_reason == "ran all 3 iteration(s)"
    rows = harness_store.query(
        "SELECT iteration, compared_to FROM iterations WHERE loop_id = ? ORDER BY iteration", [fixed.loop_id]
    )
    # Iteration 3 builds on iteration 2 although iteration 2 was not accepted.
    assert [(r["iteration"], r["compared_to"]) for r in rows[1:]] == [(1, 0), (2, 1), (3, 2)]


def test_the_loops_evaluations_go_to_the_given_executor(suites, plugins, harness_store) -> None:
    from harness.generate.executors import LocalExecutor

    class Recording(LocalExecutor):
        """Where `harness loop --ray` passes a RayExecutor: records the shards it is given."""

        def __init__(self) -> None:
            super().__init__()
            self.checkpoints: list[str | None] = []

        def run(self, backend, shards, **kwargs):
            self.checkpoints.append(backend.spec.adapter)
            yield from super().run(backend, shards, **kwargs)

    executor = Recording()
    shipped = run_loop(config(suites, ["good-15"], iterations=1), harness_store, plugins, executor=executor)
    local = run_loop(config(suites, ["good-15"], iterations=1, seed=1), harness_store, plugins)
    # The base and the iteration's adapter, each on the suite's two splits and the guard suite.
    assert len(executor.checkpoints) == 6 and executor.checkpoints[0] is None and executor.checkpoints[-1]
    assert [r.main_value for r in shipped.iterations] == [r.main_value for r in local.iterations]


def test_loop_ray_flags_need_ray(suites, tmp_path) -> None:
    from click.testing import CliRunner

    from harness.cli.main import main

    out = CliRunner().invoke(main, ["--store", str(tmp_path / "s.duckdb"), "loop", str(suites["target"]),
                                    "--ray-address", "auto"])
    assert out.exit_code == 2 and "only apply with --ray" in out.output, out.output
