"""Property tests: whatever the bytes or values, the loaders and the command line give a
valid result or one `HarnessError` line; never a traceback, never a file written."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli.main import main
from harness.errors import HarnessError
from harness.suite.config import RowModel
from harness.suite.files import read_jsonl
from harness.suite.load import Suite, load_suite

ECHO_DATA = (Path(__file__).parent / "data" / "echo_suite" / "data.jsonl").read_bytes()
# Sized so that the file runs in well under 20 s on a quiet 2-core machine.
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STRUCTURES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-like values, nested a little: what a YAML or JSON file can hold.
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)
suite_keys = st.sampled_from(
    ["name", "version", "data", "instruction", "metrics", "detectors", "generation", "prompt", "main",
     "plugins", "description", "failure", "pool"]
)
suite_like = st.dictionaries(suite_keys, values, max_size=8).map(lambda d: {"data": "data.jsonl", **d})
row_keys = st.sampled_from(["id", "input", "instruction", "reference", "references", "tags", "metadata", "group", "x"])
rows = st.dictionaries(row_keys, values, max_size=6)


def _one_harness_line(exc: HarnessError) -> None:
    message = str(exc)
    assert message.strip() and "\n" not in message and "Traceback" not in message, message


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _load_jsonl(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(data)
        try:
            for _, row in read_jsonl(path, RowModel):
                assert isinstance(row, RowModel)
        except HarnessError as exc:
            _one_harness_line(exc)
        assert _files(Path(tmp)) == [path.name]


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_jsonl(data: bytes) -> None:
    _load_jsonl(data, ".jsonl")


@FAST
@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_as_jsonl_gz(data: bytes, compress: bool) -> None:
    _load_jsonl(gzip.compress(data) if compress else data, ".jsonl.gz")


@STRUCTURES
@given(st.lists(rows, min_size=1, max_size=4))
def test_any_rows_as_jsonl(lines: list[dict]) -> None:
    _load_jsonl("\n".join(json.dumps(r) for r in lines).encode(), ".jsonl")


def _load_suite_text(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data.jsonl").write_bytes(ECHO_DATA)
        (root / "suite.yaml").write_bytes(text)
        before = _files(root)
        try:
            assert isinstance(load_suite(root / "suite.yaml"), Suite)
        except HarnessError as exc:
            _one_harness_line(exc)
        assert _files(root) == before


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_a_suite(data: bytes) -> None:
    _load_suite_text(data)


@STRUCTURES
@given(suite_like)
def test_any_structure_as_a_suite(config: dict) -> None:
    _load_suite_text(yaml.safe_dump(config, allow_unicode=True).encode())


# Option values as a user might type them, good or bad.
typed = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=12),
)


def _cli_in_empty_dir(*args: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store" / "s.duckdb"
        result = CliRunner().invoke(main, ["--no-autoload", "--store", str(store), *args])
        assert result.exit_code in (0, 2), (args, result.output, result.exception)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert len(result.output.strip().splitlines()) == 1, result.output
        assert _files(Path(tmp)) == [], args  # nothing written: the suite does not exist


@FAST
@given(alpha=typed, seed=typed, budget=typed)
def test_loop_values(alpha: str, seed: str, budget: str) -> None:
    _cli_in_empty_dir("loop", "no-such-suite", "--alpha", alpha, "--seed", seed, "--budget", budget)


@FAST
@given(limit=typed, seed=typed, tokens=typed)
def test_eval_values(limit: str, seed: str, tokens: str) -> None:
    _cli_in_empty_dir(
        "eval", "no-such-suite", "--limit", limit, "--seed", seed, "--max-new-tokens", tokens
    )


@FAST
@given(n=typed)
def test_runs_values(n: str) -> None:
    _cli_in_empty_dir("runs", "-n", n)
