"""Errors the harness raises on purpose.

`HarnessError` and its subclasses are user mistakes (bad config, missing file, unknown
component): the CLI prints their message on one line and exits with code 2. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """A mistake the user can fix; its message says what, where and how."""

    exit_code = 2


class ConfigError(HarnessError):
    """A suite, data file or option is invalid."""


class UnknownComponentError(HarnessError):
    """A metric, detector, backend, ... name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], where: str = ""):
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        available = ", ".join(known) if known else "none registered"
        prefix = f"{where}: " if where else ""
        load = (
            " If a plugin provides it, load it: `harness --plugin FILE.py ...`, the suite's "
            "`plugins:` list, or install its package (found through the 'harness' entry point)."
        )
        super().__init__(f"{prefix}unknown {kind} {name!r}.{hint} Available: {available}.{load}")


class PluginError(HarnessError):
    """A plugin misbehaved: it failed to import, raised in a hook, or returned bad values."""

    def __init__(self, plugin: str, hook: str, message: str, sample_id: str | None = None):
        self.plugin, self.hook, self.sample_id = plugin, hook, sample_id
        where = f"plugin {plugin!r}, hook {hook}"
        if sample_id is not None:
            where += f", sample {sample_id!r}"
        super().__init__(f"{where}: {message}")


class StoreLockedError(HarnessError):
    """Another process is writing to the store."""


class StoreDamagedError(HarnessError):
    """The store file is truncated, corrupted or not a DuckDB file at all."""


class StorePermissionError(HarnessError):
    """The store file, or the folder it is to be created in, cannot be written."""


class NotFoundError(HarnessError):
    """A run, loop, cluster, file or model that does not exist."""


class TrainingError(HarnessError):
    """Training stopped: non-finite loss, empty dataset, ..."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
