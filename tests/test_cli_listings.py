"""`harness plugins` and `harness runs` stay readable at 80 columns: names whole,
descriptions wrapped at words, no line wider than the terminal. And `harness view`
refuses to serve beyond loopback unless told to."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from harness.cli import main
from harness.components.plugin_manager import load_plugins
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import mock_backend_plugin, mock_spec

ECHO_SUITE = Path(__file__).parent / "data" / "echo_suite"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def test_plugins_fit_80_columns_with_whole_names() -> None:
    out = _invoke("--no-autoload", "plugins")
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    for entry in load_plugins(autoload=False).registry.entries(None):
        assert f" {entry.name} " in out
    assert "builtin (plugins.metrics)" in out


def test_runs_fit_80_columns(tmp_path: Path) -> None:
    store_path = tmp_path / "store.duckdb"
    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "mock")])
    with Store.writer(store_path) as store:
        evaluate(load_suite(ECHO_SUITE), mock_spec(), store, plugins, EvalOptions(resamples=50))
    out = _invoke("--store", str(store_path), "runs")
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "mock-model" in out and "done" in out and "…" not in out


def test_view_refuses_a_public_host_without_allow_remote(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--store", str(tmp_path / "s.duckdb"), "view", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output
