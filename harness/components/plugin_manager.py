"""Finding, loading and calling plugins.

There is no global plugin manager: `load_plugins()` makes a fresh one (with its own
registry) for each run and each test. Built-in plugins are registered exactly like
third-party ones; only their discovery differs.

Environment:
    HARNESS_DISABLE_PLUGIN_AUTOLOAD=1  skip plugins from the `harness` entry-point group
    HARNESS_TRACE=1                    print every hook call (plugin, hook, time) to stderr
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from harness.components import hookspecs
from harness.components.registry import PluginInfo, Registry
from harness.errors import ConfigError, HarnessError, PluginError, did_you_mean

ENTRY_POINT_GROUP = "harness"
ENV_DISABLE_AUTOLOAD = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
ENV_TRACE = "HARNESS_TRACE"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "harness.plugins.backends.hf",
    "harness.plugins.metrics",
    "harness.plugins.clustering",
    "harness.plugins.detectors.repetition",
    "harness.plugins.detectors.length",
    "harness.plugins.detectors.grounding",
    "harness.plugins.detectors.self_consistency",
    "harness.plugins.detectors.misspelling",
    "harness.plugins.detectors.inconsistency",
    "harness.plugins.detectors.hallucination",
    "harness.reports.run",
    "harness.reports.compare",
    "harness.reports.history",
    "harness.plugins.trainers.lora",
    "harness.plugins.trainers.ia3",
    "harness.plugins.trainers.full",
    "harness.plugins.data_sources.pool",
    "harness.plugins.data_sources.augment",
    "harness.plugins.data_sources.teacher",
    "harness.plugins.data_sources.annotate",
    "harness.plugins.backends.openai",
    "harness.plugins.backends.vllm",
)
"""Modules of the built-in plugins, registered through the same hooks as any other."""

REGISTRATION_HOOKS: tuple[str, ...] = tuple(
    name for name in dir(hookspecs) if name.startswith("harness_register_")
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True, slots=True)
class HookFailure:
    """A hook implementation that raised while the harness went on (observer hooks)."""

    plugin: str
    hook: str
    message: str
    traceback: str


@dataclass
class Plugins:
    """A plugin manager, the registry its plugins filled, and where each plugin came from."""

    manager: pluggy.PluginManager
    registry: Registry
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    trace: bool = False

    def versions(self) -> dict[str, str]:
        """Plugin name -> version, as recorded with every run."""
        return {name: info.version for name, info in sorted(self.infos.items())}

    def notify(self, hook: str, **kwargs: Any) -> list[HookFailure]:
        """Call an observer hook on every plugin; failures are returned, not raised."""
        failures = []
        for plugin, impl in self._impls(hook):
            try:
                self._call(plugin, hook, impl, kwargs)
            except Exception as exc:  # an observer must not take the run down
                failures.append(
                    HookFailure(plugin, hook, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
        return failures

    def _impls(self, hook: str) -> Iterable[tuple[str, Any]]:
        caller = getattr(self.manager.hook, hook)
        # pluggy keeps implementations in call order reversed; register order reads better
        for impl in reversed(caller.get_hookimpls()):
            yield impl.plugin_name, impl

    def _call(self, plugin: str, hook: str, impl: Any, kwargs: dict[str, Any]) -> Any:
        args = {name: kwargs[name] for name in impl.argnames}
        if not self.trace:
            return impl.function(**args)
        start = time.perf_counter()
        try:
            return impl.function(**args)
        finally:
            elapsed = (time.perf_counter() - start) * 1000
            print(f"[harness trace] {hook} -> {plugin} ({elapsed:.1f} ms)", file=sys.stderr)

    def _register_components(self) -> None:
        for hook in REGISTRATION_HOOKS:
            for plugin, impl in self._impls(hook):
                info = self.infos[plugin]
                with self.registry.registering(info, hook):
                    try:
                        self._call(plugin, hook, impl, {"registry": self.registry})
                    except HarnessError:
                        raise
                    except Exception as exc:
                        raise PluginError(
                            plugin, hook, f"raised {type(exc).__name__}: {exc}"
                        ) from exc


def _file_version(path: Path) -> str:
    return "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _import_file(path: Path) -> ModuleType:
    """Import a plugin file as a module; errors name the file and the failing line."""
    if not path.is_file():
        raise ConfigError(f"plugin file {path} does not exist")
    module_name = f"harness_plugin_file_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin file {path} cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = f":{frames[-1].lineno}" if frames else ""
        raise PluginError(
            path.stem, "import", f"{path}{line} raised {type(exc).__name__}: {exc}"
        ) from exc
    return module


def load_plugins(
    plugin_files: Sequence[str | Path] = (),
    *,
    autoload: bool | None = None,
    trace: bool | None = None,
    extra: Sequence[tuple[object, str]] = (),
) -> Plugins:
    """A fresh plugin manager with built-ins, entry-point plugins and plugin files loaded.

    `extra` registers already-imported plugin objects as (object, name): handy in tests.
    """
    if autoload is None:
        autoload = not _env_flag(ENV_DISABLE_AUTOLOAD)
    if trace is None:
        trace = _env_flag(ENV_TRACE)
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager=manager, registry=Registry(), trace=trace)
    harness_version = _dist_version("harness-loop")

    def register(obj: object, info: PluginInfo) -> None:
        existing = plugins.infos.get(info.name)
        if existing is not None and info.source.startswith("file") and existing.source.startswith("entry point"):
            # Developing a new version of an installed plugin: the file replaces it.
            manager.unregister(name=info.name)
            del plugins.infos[info.name]
            plugins.registry.notices.append(
                f"plugin {info.name!r}: using {info.source.removeprefix('file ').strip('()')}, "
                f"not the installed plugin of that name ({existing.source})"
            )
        if info.name in plugins.infos:
            raise PluginError(
                info.name, "register", f"a plugin named {info.name!r} is already loaded "
                f"(from {plugins.infos[info.name].source})",
            )
        try:
            manager.register(obj, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(info.name, "register", str(exc)) from exc
        plugins.infos[info.name] = info
        _check_hook_names(obj, info.name)

    for module_name in BUILTIN_PLUGINS:
        register(importlib.import_module(module_name), PluginInfo(module_name, "builtin", harness_version))

    if autoload:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    ep.name, "import", f"entry point {ep.value!r} of {dist} raised "
                    f"{type(exc).__name__}: {exc}",
                ) from exc
            register(obj, PluginInfo(ep.name, f"entry point ({dist})", version))

    for raw in plugin_files:
        path = Path(raw).expanduser().resolve()
        register(_import_file(path), PluginInfo(path.stem, f"file ({path})", _file_version(path)))

    for obj, name in extra:
        register(obj, PluginInfo(name, "direct", "0"))

    plugins._register_components()
    return plugins


def _check_hook_names(obj: object, plugin: str) -> None:
    """A misspelt hook would otherwise be silently ignored."""
    known = [name for name in dir(hookspecs) if name.startswith("harness_")]
    for attr in dir(obj):
        if attr.startswith("harness_") and attr not in known:
            value = getattr(obj, attr)
            if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_impl"):
                raise PluginError(
                    plugin, attr, f"no such hook.{did_you_mean(attr, known)}"
                )


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
