"""The typed registry that registration hooks fill.

One registry per plugin manager (per run, per test). Each entry remembers which plugin
registered it, so duplicates and wrong types are errors that name the plugin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from harness.components.contracts import (
    COMPONENT_KINDS,
    Backend,
    Clusterer,
    DataSource,
    Detector,
    Featurizer,
    Metric,
    ReportView,
    Trainer,
)
from harness.errors import PluginError, UnknownComponentError

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """Where a plugin came from."""

    name: str
    source: str
    """'builtin', 'entry point (dist)' or 'file (path)'."""
    version: str


@dataclass(frozen=True, slots=True)
class Registration:
    kind: str
    name: str
    component: Any
    plugin: PluginInfo

    @property
    def description(self) -> str:
        return getattr(self.component, "description", "") or ""


class Registry:
    """Components by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Registration]] = {kind: {} for kind in COMPONENT_KINDS}
        self._plugin: PluginInfo | None = None
        self._hook = ""
        self.notices: list[str] = []
        """What the user should know about the registrations (a plugin file overriding
        an installed plugin); the CLI prints them."""

    @contextmanager
    def registering(self, plugin: PluginInfo, hook: str) -> Iterator[None]:
        """Attribute what is added inside the block to `plugin`, called through `hook`."""
        self._plugin, self._hook = plugin, hook
        try:
            yield
        finally:
            self._plugin, self._hook = None, ""

    # -- adding ---------------------------------------------------------------

    def add_metric(self, metric: Metric) -> None:
        self._add("metric", metric)

    def add_detector(self, detector: Detector) -> None:
        self._add("detector", detector)

    def add_backend(self, backend: type[Backend]) -> None:
        self._add("backend", backend)

    def add_featurizer(self, featurizer: Featurizer) -> None:
        self._add("featurizer", featurizer)

    def add_clusterer(self, clusterer: Clusterer) -> None:
        self._add("clusterer", clusterer)

    def add_data_source(self, source: DataSource) -> None:
        self._add("data_source", source)

    def add_trainer(self, trainer: Trainer) -> None:
        self._add("trainer", trainer)

    def add_report(self, report: ReportView) -> None:
        self._add("report", report)

    def _add(self, kind: str, component: Any) -> None:
        plugin = self._plugin or PluginInfo("<direct>", "direct call", "")
        hook = self._hook or f"registry.add_{kind}"
        expected = COMPONENT_KINDS[kind]
        ok = (
            isinstance(component, type) and issubclass(component, expected)
            if kind == "backend"
            else isinstance(component, expected)
        )
        if not ok:
            shape = "a subclass" if kind == "backend" else "an instance"
            got = component.__name__ if isinstance(component, type) else type(component).__name__
            raise PluginError(
                plugin.name, hook, f"{kind} must be {shape} of {expected.__name__}, got {got}"
            )
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                plugin.name,
                hook,
                f"{kind} name {name!r} is not valid: use lower-case letters, digits, '_', '-', '.'",
            )
        existing = self._entries[kind].get(name)
        if existing is not None and _overrides(existing.plugin, plugin):
            self._notice(kind, name, existing.plugin, plugin)  # the file registered first
            return
        if existing is not None and _overrides(plugin, existing.plugin):
            self._override(kind, name, component, plugin, existing.plugin)
            return
        if existing is not None:
            raise _duplicate(kind, name, hook, newcomer=plugin, holder=existing.plugin)
        self._entries[kind][name] = Registration(kind, name, component, plugin)

    def _override(self, kind: str, name: str, component: Any, new: PluginInfo, old: PluginInfo) -> None:
        self._entries[kind][name] = Registration(kind, name, component, new)
        self._notice(kind, name, new, old)

    def _notice(self, kind: str, name: str, file: PluginInfo, installed: PluginInfo) -> None:
        self.notices.append(
            f"{kind} {name!r}: using plugin {file.name!r} from {file.source.removeprefix('file ').strip('()')}, "
            f"not the installed plugin {installed.name!r} ({installed.source})"
        )

    # -- looking up -----------------------------------------------------------

    def get(self, kind: str, name: str, where: str = "") -> Registration:
        """The registration of `name`, or an error that lists what exists."""
        try:
            return self._entries[kind][name]
        except KeyError:
            raise UnknownComponentError(
                kind.replace("_", " "), name, self._entries[kind], where
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None) -> list[Registration]:
        kinds = [kind] if kind else list(self._entries)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries[k])]

    def metric(self, name: str, where: str = "") -> Metric:
        return self.get("metric", name, where).component

    def detector(self, name: str, where: str = "") -> Detector:
        return self.get("detector", name, where).component

    def backend(self, name: str, where: str = "") -> type[Backend]:
        return self.get("backend", name, where).component

    def featurizer(self, name: str, where: str = "") -> Featurizer:
        return self.get("featurizer", name, where).component

    def clusterer(self, name: str, where: str = "") -> Clusterer:
        return self.get("clusterer", name, where).component

    def data_source(self, name: str, where: str = "") -> DataSource:
        return self.get("data_source", name, where).component

    def trainer(self, name: str, where: str = "") -> Trainer:
        return self.get("trainer", name, where).component

    def report(self, name: str, where: str = "") -> ReportView:
        return self.get("report", name, where).component


def _duplicate(kind: str, name: str, hook: str, *, newcomer: PluginInfo, holder: PluginInfo) -> PluginError:
    """A name registered twice blames the plugin that is not built in (whichever hook ran
    first), and says where it came from, so that the user knows which file to change."""
    blamed, other = (holder, newcomer) if newcomer.source == "builtin" and holder.source != "builtin" else (newcomer, holder)
    origin = "" if blamed.source == "builtin" else f" from {blamed.source}"
    holder_text = (
        f"built-in plugin {other.name!r}" if other.source == "builtin" else f"plugin {other.name!r} from {other.source}"
    )
    return PluginError(
        blamed.name,
        hook,
        f"{kind} {name!r}{origin} is already registered by {holder_text}; "
        "rename it",
    )


def _overrides(new: PluginInfo, old: PluginInfo) -> bool:
    """A plugin file (--plugin, or a suite's plugins:) may replace a component of an
    installed (entry-point) plugin of the same name, so that one can develop a new
    version of an installed plugin without uninstalling it or turning autoload off."""
    return new.source.startswith("file") and old.source.startswith("entry point")
