"""Facts about the environment recorded with every run (versions, git revision, host)."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

TRACKED_LIBRARIES = (
    "torch", "transformers", "peft", "trl", "accelerate", "sacrebleu", "jiwer",
    "duckdb", "pluggy", "scikit-learn", "numpy", "harness-loop",
)


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The harness source's commit when it runs from a git checkout (None when installed
    from a wheel, where there is no repository to ask)."""
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5, check=False,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def hostname() -> str:
    return socket.gethostname()
