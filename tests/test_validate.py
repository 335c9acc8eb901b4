"""`harness validate SUITE`: checks a suite, its data and every component without
loading a model; a mistake is one line naming file, line and field, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from harness.cli import main


def _suite(tmp_path: Path, metrics: str, detectors: str = "", pool: bool = False) -> Path:
    root = tmp_path / "s"
    root.mkdir(exist_ok=True)
    (root / "data.jsonl").write_text(
        "\n".join(json.dumps({"id": f"r{i}", "input": f"x{i}", "reference": f"y{i}"}) for i in range(3))
    )
    if pool:
        (root / "pool.jsonl").write_text(json.dumps({"instruction": "Say.", "input": "a", "output": "b"}) + "\n")
    (root / "suite.yaml").write_text(
        "name: mine\nversion: 1\ndata: data.jsonl\ninstruction: Repeat.\n"
        + ("pool: pool.jsonl\n" if pool else "")
        + "metrics:\n" + metrics + (("detectors:\n" + detectors) if detectors else "")
    )
    return root


def _validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--no-autoload", "validate", str(path)])
    return result.exit_code, result.output


def test_a_good_suite_passes_with_a_summary(tmp_path: Path) -> None:
    code, out = _validate(_suite(tmp_path, "  - chrf\n  - name: bleu\n", "  - repetition\n", pool=True))
    assert code == 0, out
    assert "ok: mine v1: 3 samples, metrics chrf, bleu (main chrf), detectors repetition, pool of 1 rows" in out


def test_an_unknown_metric_names_file_line_and_field_and_how_to_load_it(tmp_path: Path) -> None:
    root = _suite(tmp_path, "  - chrf\n  - name: chrff\n")
    code, out = _validate(root)
    assert code == 2
    line = " ".join(out.split())
    assert f"{root / 'suite.yaml'}:7: metrics[1].name: unknown metric 'chrff'" in line
    assert "Did you mean 'chrf'?" in line and "--plugin FILE.py" in line


def test_a_bad_detector_argument_names_its_line(tmp_path: Path) -> None:
    root = _suite(tmp_path, "  - chrf\n", "  - name: repetition\n    args:\n      ngramm: 3\n")
    code, out = _validate(root)
    assert code == 2
    line = " ".join(out.split())
    assert f"{root / 'suite.yaml'}:9: detectors[0] (repetition).args.ngramm: unknown argument" in line


def test_bad_data_is_reported_with_its_line(tmp_path: Path) -> None:
    root = _suite(tmp_path, "  - chrf\n")
    (root / "data.jsonl").write_text('{"id": "a", "input": "x", "reference": "y"}\n{"id": "a", "input": "y", "reference": "y"}\n')
    code, out = _validate(root)
    assert code == 2 and "data.jsonl:2: id 'a' is already used on line 1" in " ".join(out.split())


def test_the_complete_example_of_docs_suites_md_validates(tmp_path: Path) -> None:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "suites.md").read_text()
    yaml_block = re.search(r"```yaml\n(# my-suite/suite.yaml\n.*?)```", text, flags=re.S).group(1)
    data_block, pool_block = re.findall(r"```jsonl\n(.*?)```", text, flags=re.S)[:2]
    root = tmp_path / "my-suite"
    root.mkdir()
    (root / "suite.yaml").write_text(yaml_block)
    (root / "data.jsonl").write_text(data_block)
    (root / "pool.jsonl").write_text(pool_block)
    code, out = _validate(root)
    assert code == 0, out
    assert "ok: glossary v3: 3 samples, metrics chrf, bleu, exact_match (main chrf), detectors repetition, length, pool of 1 rows" in " ".join(out.split())
