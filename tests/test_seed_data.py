"""A loop's seed dataset and the "no new data" control: the seed is curated and stored
before the loop adds to it, every iteration trains on it, `--selection none` trains on it
alone, and a bad seed file is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from test_loop import WORDS, config, reference, scripted_module
from test_loop import plugins as plugins  # noqa: F401  (the fixture)
from test_loop import suites as suites  # noqa: F401  (the fixture)

from harness.cli.main import main as cli_main
from harness.data.manifests import load_manifest
from harness.data.seed import seed_manifest
from harness.errors import ConfigError, HarnessError
from harness.loop.config import LoopConfig, loop_fingerprint
from harness.loop.run import run_loop
from harness.report.show import build_report
from harness.suite.load import load_suite


def write_seed(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def seed_rows(n: int = 6) -> list[dict]:
    return [
        {"instruction": "Define the word.", "input": f"seed{i:02d}", "output": f"A seeded concept, number {i}."}
        for i in range(n)
    ]


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    leaked = {"instruction": "Define the word.", "input": WORDS[3], "output": reference(WORDS[3])}
    duplicate = seed_rows(1)[0]
    return write_seed(tmp_path / "seed.jsonl", seed_rows() + [leaked, duplicate])


def test_a_seed_file_is_curated_against_every_split_and_the_guard(suites, seed_file) -> None:
    suite, guard = load_suite(suites["target"]), load_suite(suites["guard"])
    manifest = seed_manifest(seed_file, [suite, guard])
    assert manifest.selection == "seed" and manifest.parent is None
    assert [r.input for r in manifest.rows] == [f"seed{i:02d}" for i in range(6)]
    # The eval word (of either split) and the repeated row are dropped, each counted.
    assert manifest.dropped == {"duplicate": 1, "eval_input": 1}
    assert {s["name"] for s in manifest.decontaminated_against} == {"terms", "guard"}
    assert manifest.sources == {"seed": 6}
    assert manifest.rows[2].provenance == {"seed_file": "seed.jsonl", "line": 3}


def test_bad_seed_files_name_the_file_and_line(tmp_path: Path, suites) -> None:
    suite = load_suite(suites["target"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(seed_rows(1)[0]) + "\n" + json.dumps({"input": "x", "answer": "y"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:2"):
        seed_manifest(bad, [suite])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(HarnessError, match="holds no rows"):
        seed_manifest(empty, [suite])
    leaked = write_seed(tmp_path / "leaked.jsonl", [{"input": WORDS[0], "output": reference(WORDS[0])}])
    with pytest.raises(HarnessError, match="dropped every row"):
        seed_manifest(leaked, [suite])


def test_every_iteration_trains_on_the_seed_and_the_rows_the_loop_adds(
    suites, plugins, harness_store, seed_file
) -> None:
    cfg = config(suites, ["good-15", "good-30"], seed_data=str(seed_file))
    result = run_loop(cfg, harness_store, plugins)
    assert [r.decision for r in result.iterations] == ["baseline", "continue", "continue"]
    rows = harness_store.query("SELECT iteration, manifest_hash FROM iterations ORDER BY iteration")
    seed = load_manifest(harness_store, rows[0]["manifest_hash"])
    assert seed.selection == "seed" and seed.n_rows == 6
    first, second = (load_manifest(harness_store, r["manifest_hash"]) for r in rows[1:])
    assert first.parent == seed.hash and first.rows[:6] == seed.rows and first.n_added == 10
    assert second.parent == first.hash and second.n_rows == 26
    calls = scripted_module(plugins).ScriptedTrainer.calls
    assert [c["rows"] for c in calls] == [16, 26]
    from harness.report.render import render

    text = render(build_report(harness_store, "history", plugins=plugins, loop=result.loop_id), "markdown")
    assert "targeted selection from pool, 10 rows per iteration, on top of the seed seed.jsonl" in text


def test_no_new_data_trains_on_the_seed_alone(suites, plugins, harness_store, seed_file) -> None:
    cfg = config(suites, ["good-15", "good-15"], seed_data=str(seed_file), selection="none",
                 fixed_iterations=True)
    run_loop(cfg, harness_store, plugins)
    rows = harness_store.query("SELECT iteration, manifest_hash FROM iterations ORDER BY iteration")
    assert len({r["manifest_hash"] for r in rows}) == 1  # one dataset, the seed, throughout
    assert harness_store.scalar("SELECT count(*) FROM datasets") == 1
    calls = scripted_module(plugins).ScriptedTrainer.calls
    assert [c["rows"] for c in calls] == [6, 6]
    doc = build_report(harness_store, "history", plugins=plugins, loop="latest")
    added = [it["rows_added"] for it in doc.data["iterations"]]
    assert added == [6, 0, 0]  # the seed at iteration 0; nothing added after
    from harness.report.render import render

    assert "no new data: the seed seed.jsonl alone" in render(doc, "markdown")


def test_no_new_data_without_a_seed_and_a_bad_seed_write_nothing(
    suites, plugins, harness_store, tmp_path
) -> None:
    with pytest.raises(ValidationError, match="--seed-data"):
        config(suites, [], selection="none")
    with pytest.raises(ValidationError, match="--retrain-from base"):
        config(suites, [], selection="none", seed_data=str(tmp_path / "x.jsonl"), retrain_from="last")
    bad = write_seed(tmp_path / "bad.jsonl", [{"input": "x"}])
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1"):
        run_loop(config(suites, [], seed_data=str(bad)), harness_store, plugins)
    assert harness_store.scalar("SELECT count(*) FROM loops") == 0
    assert harness_store.scalar("SELECT count(*) FROM datasets") == 0


def test_the_seed_files_content_is_part_of_the_loops_identity(suites, seed_file) -> None:
    suite, guard = load_suite(suites["target"]), load_suite(suites["guard"])
    plain = config(suites, [])
    seeded = config(suites, [], seed_data=str(seed_file))
    # A loop without a seed keeps the identity it had before seeds existed.
    legacy = LoopConfig(**{k: v for k, v in plain.model_dump().items() if k != "seed_data"})
    assert loop_fingerprint(plain, suite, guard, "m") == loop_fingerprint(legacy, suite, guard, "m")
    before = loop_fingerprint(seeded, suite, guard, "m", "hash-a")
    assert before != loop_fingerprint(seeded, suite, guard, "m", "hash-b")
    assert before != loop_fingerprint(plain, suite, guard, "m")


def test_the_cli_takes_a_seed_file_and_the_none_selection(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_main, ["loop", "--help"])
    assert "--seed-data" in result.output and "none" in result.output
    result = runner.invoke(cli_main, ["--store", str(tmp_path / "s.duckdb"), "loop", "numbers", "--selection", "none"])
    assert result.exit_code != 0 and "--seed-data" in result.output
    assert not (tmp_path / "s.duckdb").exists()
