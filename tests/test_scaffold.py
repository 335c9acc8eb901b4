"""`harness new detector`: the generated package installs, passes its tests, and works in a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.scaffold import new_detector

PLUGINS = Path(__file__).parent / "data" / "plugins"


def test_bad_names_and_occupied_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lower case"):
        new_detector("Bad-Name", tmp_path / "x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        new_detector("fine", tmp_path / "taken")


@pytest.mark.slow
def test_generated_plugin_installs_passes_its_tests_and_is_used_in_a_run(tmp_path: Path) -> None:
    package = tmp_path / "harness-forbidden-phrase"
    out = subprocess.run(
        [sys.executable, "-m", "harness", "new", "detector", "forbidden_phrase", "--directory", str(package)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (package / "harness_forbidden_phrase" / "plugin.py").is_file()

    # Install it on its own path, so this test leaves the environment as it found it.
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(package)],
        capture_output=True, text=True,
    )
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout

    listed = subprocess.run(
        [sys.executable, "-m", "harness", "plugins", "--kind", "detector", "--json"],
        capture_output=True, text=True, env=env,
    )
    entry = next(e for e in json.loads(listed.stdout) if e["name"] == "forbidden_phrase")
    assert entry["source"] == "entry point (harness-forbidden-phrase)" and entry["version"] == "0.1.0"

    suite = tmp_path / "suite"
    suite.mkdir()
    rows = [
        {"id": "a", "input": "As an AI language model, I cannot define words.", "reference": "x"},
        {"id": "b", "input": "a small domesticated cat", "reference": "a small domesticated cat"},
    ]
    (suite / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (suite / "suite.yaml").write_text(
        "name: phrases\nversion: 1\ndata: data.jsonl\ninstruction: Define.\nmetrics: [chrf]\n"
        "detectors:\n  - name: forbidden_phrase\n    threshold: 0.5\n"
    )
    store = tmp_path / "store.duckdb"
    run_env = {**env, "SLOW_ECHO_LOG": str(tmp_path / "log"), "SLOW_ECHO_DELAY": "0"}
    evaluated = subprocess.run(
        [sys.executable, "-m", "harness", "--store", str(store), "--plugin", str(PLUGINS / "slow_echo.py"),
         "eval", str(suite), "--backend", "slow_echo", "--model", "m", "--no-report"],
        capture_output=True, text=True, env=run_env,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "harness", "--store", str(store), "show", "latest"],
        capture_output=True, text=True, env={**run_env, "COLUMNS": "120"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "forbidden_phrase" in shown.stdout
    assert "As an AI language model" in shown.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["detector", "metric"])
def test_generated_package_passes_its_tests_and_shows_its_description(tmp_path: Path, kind: str) -> None:
    name = f"my_{kind}"
    package = tmp_path / f"harness-my-{kind}"
    out = subprocess.run(
        [sys.executable, "-m", "harness", "new", kind, name, "--directory", str(package),
         "--description", "finds what I care about"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    env = {**os.environ, "PYTHONPATH": str(package)}  # importable from its source tree
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "harness", "--no-autoload", "--plugin", str(package / f"harness_{name}" / "plugin.py"),
         "plugins", "--kind", kind, "--json"],
        capture_output=True, text=True, env=env,
    )
    assert listed.returncode == 0, listed.stderr
    entry = next(e for e in json.loads(listed.stdout) if e["name"] == name)
    assert entry["description"] == "finds what I care about"
