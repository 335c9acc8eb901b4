"""Bad input is one line that says what and where, with exit code 2; never a traceback."""

from __future__ import annotations

import gzip
import json
import os
import py_compile
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from harness.cli import params
from harness.cli.main import main
from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError, PluginError, StoreDamagedError, StoreLockedError, StorePermissionError
from harness.loop.cost import load_prices
from harness.scaffold import new_detector
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.config import RowModel
from harness.suite.files import read_jsonl
from harness.suite.load import load_suite
from harness.testing import mock_backend_plugin, mock_spec

ECHO_SUITE = Path(__file__).parent / "data" / "echo_suite"
AS_ROOT = os.geteuid() == 0


MOCK_PLUGIN = (
    "from harness import hookimpl\nfrom harness.testing import MockBackend\n\n"
    "@hookimpl\ndef harness_register_backends(registry):\n    registry.add_backend(MockBackend)\n"
)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--no-autoload", *args])
    return result.exit_code, result.output


@pytest.fixture
def mock_plugin(tmp_path: Path) -> str:
    path = tmp_path / "mock_plugin.py"
    path.write_text(MOCK_PLUGIN)
    return str(path)


def _one_line_error(code: int, output: str, *needles: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    for needle in needles:
        assert needle in output, output


# -- data files ---------------------------------------------------------------


def test_non_utf8_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "a", "input": "x", "reference": "y"}\n{"id": "b", "input": "caf\xe9"}\n')
    with pytest.raises(ConfigError, match=rf"^{path}:2: byte 0xe9 at column 26 is not UTF-8"):
        list(read_jsonl(path, RowModel))


def test_a_gz_that_is_not_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(b'{"id": "a"}\n')
    with pytest.raises(ConfigError, match=rf"^{path}: not a readable gzip file"):
        list(read_jsonl(path, RowModel))
    good = gzip.compress(b'{"id": "a", "input": "x", "reference": "y"}\n' * 50)
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ConfigError, match="not a readable gzip file"):
        list(read_jsonl(path, RowModel))


def test_a_non_utf8_suite_is_refused_not_mangled(tmp_path: Path) -> None:
    suite = shutil.copytree(ECHO_SUITE, tmp_path / "suite")
    yaml_path = suite / "suite.yaml"
    yaml_path.write_bytes(yaml_path.read_bytes().replace(b"Repeat the input exactly.", b"R\xe9p\xe9ter."))
    with pytest.raises(ConfigError, match=rf"{yaml_path}:5: byte 0xe9 .* not UTF-8; save the file as UTF-8"):
        load_suite(suite)


# -- the store ----------------------------------------------------------------


def test_damaged_stores_are_told_apart_from_locked_ones(tmp_path: Path) -> None:
    good = tmp_path / "good.duckdb"
    with Store.writer(good) as store:
        store.scalar("SELECT 1")
    truncated = tmp_path / "truncated.duckdb"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"not a database" * 100)
    for path in (truncated, garbage):
        for opener in (Store.writer, Store.reader):
            with pytest.raises(StoreDamagedError, match=f"store {path} is damaged or not a DuckDB file") as info:
                opener(path)
            assert not isinstance(info.value, StoreLockedError)
    code, out = _cli("--store", str(garbage), "runs")
    _one_line_error(code, out, "is damaged")


def _deny_writes(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Root may write anywhere, so where the tests run as root the permission is denied
    by os.access, the same question the store asks."""
    real = os.access

    def access(path: object, mode: int, **kwargs: object) -> bool:
        if mode & os.W_OK and Path(str(path)) == denied:
            return False
        return real(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


def test_a_read_only_store_file_is_not_called_locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store:
        store.scalar("SELECT 1")
    path.chmod(0o444)
    if AS_ROOT:
        _deny_writes(monkeypatch, path)
    with pytest.raises(StorePermissionError, match=f"store {path} is read-only.*chmod u\\+w"):
        Store.writer(path)
    with Store.reader(path) as store:  # reading it is still fine
        assert store.scalar("SELECT count(*) FROM runs") == 0


def test_an_unwritable_folder_is_not_called_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mock_plugin: str
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if AS_ROOT:
        _deny_writes(monkeypatch, folder)
    with pytest.raises(StorePermissionError, match=f"cannot write in {folder} \\(permission denied\\)"):
        Store.writer(folder / "deeper" / "s.duckdb").scalar("SELECT 1")
    code, out = _cli(
        "--store", str(folder / "s.duckdb"), "--plugin", mock_plugin,
        "eval", str(ECHO_SUITE), "--backend", "mock", "--model", "m", "--no-report",
    )
    _one_line_error(code, out, "permission denied")
    folder.chmod(0o755)


def test_a_store_path_under_a_file_is_one_line(tmp_path: Path, mock_plugin: str) -> None:
    (tmp_path / "afile").write_text("x")
    code, out = _cli(
        "--store", str(tmp_path / "afile" / "s.duckdb"), "--plugin", mock_plugin,
        "eval", str(ECHO_SUITE), "--backend", "mock", "--model", "m", "--no-report",
    )
    _one_line_error(code, out, "is a file, not a folder")


# -- command-line values ------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (("loop", "dictionary", "--alpha", "5"), "'--alpha': 5.0 is not in the range"),
        (("runs", "-n", "-1"), "-1 is not in the range x>=1"),
        (("eval", "x", "--seed", "-1"), "'--seed': -1 is not in the range"),
        (("eval", "x", "--max-new-tokens", "1000000000"), "'--max-new-tokens'"),
        (("compare", "--seed", "abc"), "'abc' is not a valid integer"),
        (("clusters", "1", "--examples", "-3"), "'--examples'"),
    ],
)
def test_out_of_range_values_are_one_line(args: tuple[str, ...], needle: str) -> None:
    code, out = _cli(*args)
    _one_line_error(code, out, needle)


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, out = _cli("show", "latest", "--output", str(tmp_path / "afile" / "report.html"))
    _one_line_error(code, out, "is a file, not a folder")
    code, out = _cli("loop", "dictionary", "--output-dir", str(tmp_path / "afile" / "ckpts"))
    _one_line_error(code, out, "is a file, not a folder")


# Integer options that are ids (negative ids are looked up and not found, or mean something).
_ID_OPTIONS = {"--previous", "--clustering", "--cluster"}


def _all_options(command: click.Command, path: str = "harness") -> list[tuple[str, click.Parameter]]:
    found = [(path, p) for p in command.params]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _all_options(sub, f"{path} {name}")
    return found


def test_every_numeric_and_output_option_has_a_checked_type() -> None:
    """The root of the class: a plain int, float or output path reaches the code unchecked."""
    unchecked = []
    for where, param in _all_options(main):
        name = param.opts[-1] if param.opts else param.name
        kind = param.type
        if isinstance(kind, click.types.IntParamType | click.types.FloatParamType) and not isinstance(
            kind, click.types._NumberRangeBase
        ):
            if not set(param.opts) & _ID_OPTIONS:
                unchecked.append(f"{where} {name}")
        if any(o.startswith("--output") for o in param.opts) and not isinstance(kind, params.OutputPath):
            unchecked.append(f"{where} {name}")
    assert not unchecked, f"options without a range or an output check: {unchecked}"


# -- price tables, generation limits, plugins, scaffolding ---------------------


def test_a_bad_price_table_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("as_of: '2026'\nservices:\n  - name: a\n    bogus: 1\n")
    with pytest.raises(ConfigError) as info:
        load_prices(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: services[0]") and "\n" not in message
    path.write_text("as_of: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: not valid YAML") as info:
        load_prices(path)
    assert "\n" not in str(info.value)


def test_max_new_tokens_is_bounded_by_the_models_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.testing import MockBackend

    monkeypatch.setattr(MockBackend, "context_length", 256, raising=False)
    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "mock")])
    suite = load_suite(ECHO_SUITE)
    with Store.writer(tmp_path / "s.duckdb") as store:
        with pytest.raises(ConfigError, match="--max-new-tokens: 1000 is more than the model's context of 256"):
            evaluate(suite, mock_spec(), store, plugins, EvalOptions(max_new_tokens=1000))
    assert not (tmp_path / "s.duckdb").exists()  # refused before anything was written
    suite_dir = shutil.copytree(ECHO_SUITE, tmp_path / "suite")
    yaml_path = suite_dir / "suite.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("max_new_tokens: 16", "max_new_tokens: 5000"))
    with Store.writer(tmp_path / "s.duckdb") as store, pytest.raises(ConfigError, match="generation.max_new_tokens: 5000"):
        evaluate(load_suite(suite_dir), mock_spec(), store, plugins)
    yaml_path.write_text(yaml_path.read_text().replace("max_new_tokens: 5000", "max_new_tokens: 1000000000"))
    with pytest.raises(ConfigError, match="generation.max_new_tokens: Input should be less than or equal to 1048576"):
        load_suite(suite_dir)


def test_a_duplicate_name_from_a_plugin_file_blames_the_file(tmp_path: Path) -> None:
    plugin = tmp_path / "mine.py"
    plugin.write_text(
        "from harness import hookimpl, metric\n\n"
        "@metric('exact_match')\ndef em(item):\n    return 1.0\n\n"
        "@hookimpl\ndef harness_register_metrics(registry):\n    registry.add_metric(em)\n"
    )
    with pytest.raises(PluginError) as info:
        load_plugins([plugin], autoload=False)
    message = str(info.value)
    assert message.startswith("plugin 'mine', hook harness_register_metrics")
    assert f"file ({plugin})" in message and "built-in plugin 'harness.plugins.metrics'" in message


def test_a_description_with_quotes_and_backslashes_compiles(tmp_path: Path) -> None:
    description = 'say "no" \\ don\'t """ end\\'
    written = new_detector("quoting", tmp_path / "pkg", description=description)
    plugin = next(p for p in written if p.name == "plugin.py")
    py_compile.compile(str(plugin), doraise=True)
    namespace: dict[str, object] = {}
    exec(compile(plugin.read_text(), str(plugin), "exec"), namespace)
    assert namespace["DESCRIPTION"] == description
    toml = next(p for p in written if p.name == "pyproject.toml").read_text()
    import tomllib

    assert tomllib.loads(toml)["project"]["description"].endswith(description)
    assert json.dumps(description)[1:-1] in toml
