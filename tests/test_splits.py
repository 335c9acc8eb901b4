"""Suite splits: declared splits, the harness's own stratified split, `Suite.split`,
`harness eval --split` and the `split` column of runs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import main
from harness.errors import ConfigError
from harness.score.evaluate import evaluate
from harness.suite.load import auto_split, load_suite
from harness.testing import mock_spec
from harness.types import Sample

PLUGIN = Path(__file__).parent / "data" / "plugins" / "scripted_loop.py"
HEAD = "name: s\nversion: 1\ninstruction: Repeat.\nmetrics:\n  - chrf\n"


def rows(prefix: str, n: int, **extra) -> str:
    return "".join(
        json.dumps({"id": f"{prefix}{i}", "input": f"{prefix} {i}", "reference": f"{prefix} {i}", **extra}) + "\n"
        for i in range(n)
    )


def write(tmp_path: Path, yaml_tail: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "suite.yaml").write_text(HEAD + yaml_tail)
    return tmp_path / "suite.yaml"


def test_declared_splits_load_in_order_and_restrict(tmp_path: Path) -> None:
    path = write(tmp_path, "splits:\n  dev: dev.jsonl\n  test: test.jsonl\n",
                 {"dev.jsonl": rows("d", 3), "test.jsonl": rows("t", 4)})
    suite = load_suite(path)
    assert suite.split_names == ["dev", "test"] and not suite.auto_split
    assert [s.id for s in suite.samples] == ["d0", "d1", "d2", "t0", "t1", "t2", "t3"]
    test = suite.split("test")
    assert [s.id for s in test.samples] == ["t0", "t1", "t2", "t3"] and test.split_name == "test"
    assert test.hash != suite.hash != suite.split("dev").hash
    assert test.split("test") is test
    assert "declared by the suite: dev 3, test 4" in suite.describe_split()
    with pytest.raises(ConfigError, match=r"no split 'tset'.*Did you mean 'test'"):
        suite.split("tset")


@pytest.mark.parametrize(
    ("tail", "files", "message"),
    [
        ("data: a.jsonl\nsplits:\n  dev: a.jsonl\n  test: a.jsonl\n", {"a.jsonl": rows("a", 2)},
         r"suite.yaml:7: splits: give either 'data'"),
        ("", {}, r"suite.yaml:1: data: required field is missing"),
        ("splits:\n  dev: dev.jsonl\n  test: test.jsonl\nheldout_split: tset\n",
         {"dev.jsonl": rows("d", 2), "test.jsonl": rows("t", 2)},
         r"heldout_split 'tset' is not one of the declared splits \(dev, test\).*Did you mean 'test'"),
        ("splits:\n  dev: dev.jsonl\n", {"dev.jsonl": rows("d", 2)}, r"suite.yaml:6: splits: declare at least two"),
        ("splits:\n  dev: dev.jsonl\n  test: missing.jsonl\n", {"dev.jsonl": rows("d", 2)},
         r"'splits.test' names 'missing.jsonl', but .* does not exist"),
        ("splits:\n  dev: dev.jsonl\n  test: test.jsonl\n", {"dev.jsonl": rows("x", 2), "test.jsonl": rows("x", 3)},
         r"test.jsonl:1: id 'x0' is already used at .*dev.jsonl:1; ids must be unique"),
        ("splits:\n  dev: dev.jsonl\n  test: test.jsonl\n",
         {"dev.jsonl": rows("d", 2, group="g"), "test.jsonl": rows("t", 2, group="g")},
         r"group 'g' has sample 'd0' in split 'dev' and sample 't0' in split 'test'"),
    ],
)
def test_bad_splits_name_file_line_and_field(tmp_path: Path, tail: str, files: dict[str, str], message: str) -> None:
    path = write(tmp_path, tail, files)
    with pytest.raises(ConfigError, match=message):
        load_suite(path)


def test_the_automatic_split_is_stratified_deterministic_and_keeps_groups_whole() -> None:
    samples = [Sample(id=f"n{i}", input=str(i), tags=("noun",)) for i in range(10)]
    samples += [Sample(id=f"v{i}", input=str(i), tags=("verb",)) for i in range(7)]
    samples += [Sample(id=f"p{i}", input=str(i), tags=("para",), group=f"g{i // 3}") for i in range(9)]
    split = auto_split(samples, ("dev", "test"))
    reordered = auto_split(list(reversed(samples)), ("dev", "test"))
    assert {k: sorted(v) for k, v in split.items()} == {k: sorted(v) for k, v in reordered.items()}
    side = {sid: name for name, ids in split.items() for sid in ids}
    assert sorted(side) == sorted(s.id for s in samples)
    for tag, n in (("noun", 10), ("verb", 7)):
        counts = Counter(side[s.id] for s in samples if s.tags == (tag,))
        assert abs(counts["dev"] - counts["test"]) <= 1 and sum(counts.values()) == n
    for g in range(3):
        assert len({side[f"p{3 * g + k}"] for k in range(3)}) == 1  # a paraphrase group stays together
    assert abs(len(split["dev"]) - len(split["test"])) <= 3
    # Adding rows does not move the ones already placed within their tag.
    more = auto_split(samples + [Sample(id="z0", input="z", tags=("zzz",))], ("dev", "test"))
    assert {sid for sid in more["test"] if sid != "z0"} == set(split["test"])


def test_a_data_suite_gets_the_automatic_split_named_by_the_suite(tmp_path: Path) -> None:
    path = write(tmp_path, "data: a.jsonl\nmining_split: mine\nheldout_split: judge\n", {"a.jsonl": rows("a", 9)})
    suite = load_suite(path)
    assert suite.auto_split and suite.split_names == ["mine", "judge"]
    assert len(suite.split("mine").samples) + len(suite.split("judge").samples) == 9
    assert "made by the harness" in suite.describe_split()


def test_runs_record_their_split(tmp_path: Path, harness_store, harness_plugins, mock_backend) -> None:
    path = write(tmp_path, "data: a.jsonl\n", {"a.jsonl": rows("a", 8)})
    suite = load_suite(path)
    plugins = harness_plugins()
    whole = evaluate(suite, mock_spec(), harness_store, plugins)
    test = evaluate(suite.split("test"), mock_spec(), harness_store, plugins)
    splits = {r["run_id"]: r["split"] for r in harness_store.query("SELECT run_id, split FROM runs")}
    assert splits == {whole.run_id: None, test.run_id: "test"}
    assert test.n_samples == len(suite.split("test").samples) == 4
    assert test.cached == 4 and test.generated == 0  # the whole-suite run already generated them


def test_eval_split_on_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "data: a.jsonl\n", {"a.jsonl": rows("a", 6)})
    store = tmp_path / "store.duckdb"
    runner = CliRunner()
    base = ["--store", str(store), "--plugin", str(PLUGIN)]
    out = runner.invoke(main, [*base, "eval", str(path), "--backend", "scripted", "--model", "m", "--split", "test"])
    assert out.exit_code == 0, out.output
    assert "made by the harness" in out.output and "split" in out.output
    listed = runner.invoke(main, [*base, "runs"])
    assert "test" in listed.output
    as_json = runner.invoke(main, [*base, "show", "1", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    bad = runner.invoke(main, [*base, "eval", str(path), "--backend", "scripted", "--model", "m", "--split", "tst"])
    assert bad.exit_code == 2 and "no split 'tst'" in bad.output
    assert "Traceback" not in bad.output
