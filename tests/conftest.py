"""Shared test setup: every test session gets its own HARNESS_HOME and store location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # Keep converted models and hash caches of tests out of the user's ~/.cache.
    cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
    home = cache.mkdir("harness-home") if cache else Path("/tmp/harness-test-home")
    os.environ["HARNESS_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the default store of the directory it runs in."""
    monkeypatch.setenv("HARNESS_STORE", str(tmp_path / "default-store.duckdb"))
