"""Suite files: validation errors name the file, the line and the field, and say how to fix."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError, NotFoundError, UnknownComponentError
from harness.score.scoring import resolve_components
from harness.suite.load import load_suite

GOOD_YAML = """\
name: tiny
version: 1
data: data.jsonl
instruction: Repeat the input.
generation:
  max_new_tokens: 8
metrics:
  - name: exact_match
    target: 0.9
  - chrf
"""


def write_suite(tmp_path: Path, yaml_text: str = GOOD_YAML, rows: list[object] | None = None) -> Path:
    (tmp_path / "suite.yaml").write_text(textwrap.dedent(yaml_text))
    rows = rows if rows is not None else [{"id": "a", "input": "hello", "reference": "hello"}]
    (tmp_path / "data.jsonl").write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    )
    return tmp_path / "suite.yaml"


def test_a_valid_suite_loads(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path))
    assert suite.name == "tiny" and suite.version == "1"
    assert suite.samples[0].instruction == "Repeat the input."
    assert suite.samples[0].references == ("hello",)
    assert [m.name for m in suite.config.metrics] == ["exact_match", "chrf"]
    assert suite.config.main == "exact_match"
    assert len(suite.hash) == 64


def test_loading_by_directory_and_hash_changes_with_data(tmp_path: Path) -> None:
    path = write_suite(tmp_path)
    first = load_suite(tmp_path)
    (tmp_path / "data.jsonl").write_text(json.dumps({"id": "a", "input": "x", "reference": "y"}) + "\n")
    second = load_suite(path)
    assert first.hash != second.hash


def test_malformed_yaml_gives_file_and_line(tmp_path: Path) -> None:
    path = write_suite(tmp_path, "name: tiny\nversion: 1\ndata: [unclosed\nmetrics: []\n")
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}:")
    assert "not valid YAML" in str(info.value)


def test_unknown_field_gives_line_and_did_you_mean(tmp_path: Path) -> None:
    text = GOOD_YAML.replace("generation:\n  max_new_tokens: 8", "generation:\n  max_new_token: 8")
    path = write_suite(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(f"{path}:6: generation.max_new_token: unknown field.")
    assert "Did you mean 'max_new_tokens'?" in message


def test_wrong_type_names_the_nested_field(tmp_path: Path) -> None:
    text = GOOD_YAML.replace("target: 0.9", "target: high")
    path = write_suite(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}:9: metrics[0].target:")
    assert "number" in str(info.value)


def test_missing_required_field(tmp_path: Path) -> None:
    path = write_suite(tmp_path, GOOD_YAML.replace("data: data.jsonl\n", ""))
    with pytest.raises(ConfigError, match=r"suite.yaml:1: data: required field is missing; add it"):
        load_suite(path)


def test_unknown_metric_answers_did_you_mean(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, GOOD_YAML.replace("- chrf", "- chrff")))
    with pytest.raises(UnknownComponentError) as info:
        resolve_components(suite, load_plugins(autoload=False).registry)
    message = str(info.value)
    assert "metrics[1]" in message and "unknown metric 'chrff'" in message
    assert "Did you mean 'chrf'?" in message


def test_unknown_metric_argument_is_refused(tmp_path: Path) -> None:
    text = GOOD_YAML.replace("- chrf", "- name: chrf\n    args: {word_ordr: 2}")
    suite = load_suite(write_suite(tmp_path, text))
    with pytest.raises(ConfigError, match=r"metrics\[1\] \(chrf\)\.args\.word_ordr: unknown argument\. Did you mean 'word_order'\?"):
        resolve_components(suite, load_plugins(autoload=False).registry)


def test_jsonl_row_missing_a_field_gives_row_number(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "input": "hello", "reference": "hello"},
        {"id": "b", "input": "there"},
    ]
    path = write_suite(tmp_path, rows=rows)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{tmp_path / 'data.jsonl'}:2:")
    assert "reference" in str(info.value)


def test_jsonl_row_that_is_not_json_gives_row_number(tmp_path: Path) -> None:
    rows = [{"id": "a", "input": "x", "reference": "y"}, "{not json", {"id": "c", "input": "z", "reference": "z"}]
    path = write_suite(tmp_path, rows=rows)
    with pytest.raises(ConfigError, match=r"data\.jsonl:2: not valid JSON"):
        load_suite(path)


def test_jsonl_unknown_field_and_duplicate_ids(tmp_path: Path) -> None:
    path = write_suite(tmp_path, rows=[{"id": "a", "inptu": "x", "reference": "y"}])
    with pytest.raises(ConfigError, match=r"data\.jsonl:1: field 'inptu': unknown field\. Did you mean 'input'\?"):
        load_suite(path)
    path = write_suite(
        tmp_path,
        rows=[{"id": "a", "input": "x", "reference": "y"}, {"id": "a", "input": "z", "reference": "z"}],
    )
    with pytest.raises(ConfigError, match=r"data\.jsonl:2: id 'a' is already used on line 1"):
        load_suite(path)


def test_missing_data_file_and_unknown_suite(tmp_path: Path) -> None:
    path = write_suite(tmp_path)
    (tmp_path / "data.jsonl").unlink()
    with pytest.raises(ConfigError, match="'data' names 'data.jsonl'"):
        load_suite(path)
    with pytest.raises(NotFoundError, match="no suite file or built-in suite 'no-such-suite'"):
        load_suite("no-such-suite")


def test_main_metric_must_be_listed(tmp_path: Path) -> None:
    path = write_suite(tmp_path, GOOD_YAML + "main_metric: bleu\n")
    with pytest.raises(ConfigError, match="main_metric 'bleu' is not one of the suite's metrics"):
        load_suite(path)


def test_custom_template_is_checked(tmp_path: Path) -> None:
    path = write_suite(tmp_path, GOOD_YAML + "prompt:\n  format: custom\n  template: 'Q: {question}'\n")
    with pytest.raises(ConfigError, match=r"prompt: template may only use \{instruction\} and \{input\}"):
        load_suite(path)
