"""A plugin file may override an installed (entry-point) plugin while one develops a
new version of it, with a notice saying so; two installed plugins still may not clash."""

from __future__ import annotations

import importlib.metadata
import textwrap
import types
from pathlib import Path

import pytest

from harness.components.hookspecs import hookimpl
from harness.components.plugin_manager import load_plugins
from harness.errors import PluginError
from harness.types import Issue


def _installed(label: str) -> types.SimpleNamespace:
    from harness import detector

    @detector("phrase", description=f"the {label} version")
    def phrase(item):
        return [Issue(severity=1.0, message=label)]

    module = types.SimpleNamespace()
    module.harness_register_detectors = hookimpl(lambda registry: registry.add_detector(phrase))
    return module


def _entry_points(monkeypatch: pytest.MonkeyPatch, **plugins: object) -> None:
    dist = types.SimpleNamespace(name="harness-phrase", version="1.0")
    eps = [
        types.SimpleNamespace(name=name, value=f"{name}.plugin", dist=dist, load=lambda obj=obj: obj)
        for name, obj in plugins.items()
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "harness" else [])


def _file(tmp_path: Path, stem: str) -> Path:
    path = tmp_path / f"{stem}.py"
    path.write_text(textwrap.dedent('''
        from harness import Issue, detector, hookimpl

        @detector("phrase", description="the development version")
        def phrase(item):
            return [Issue(severity=1.0, message="dev")]

        @hookimpl
        def harness_register_detectors(registry):
            registry.add_detector(phrase)
    '''))
    return path


def test_a_file_of_the_same_plugin_name_replaces_the_installed_plugin(tmp_path, monkeypatch) -> None:
    _entry_points(monkeypatch, phrase_plugin=_installed("installed"))
    plugins = load_plugins([_file(tmp_path, "phrase_plugin")], autoload=True)
    assert plugins.registry.get("detector", "phrase").component.description == "the development version"
    assert plugins.infos["phrase_plugin"].source.startswith("file")
    (notice,) = plugins.registry.notices
    assert "phrase_plugin" in notice and "entry point (harness-phrase)" in notice


def test_a_file_component_overrides_an_installed_one_of_the_same_name(tmp_path, monkeypatch) -> None:
    _entry_points(monkeypatch, phrase_plugin=_installed("installed"))
    plugins = load_plugins([_file(tmp_path, "my_dev_copy")], autoload=True)
    registration = plugins.registry.get("detector", "phrase")
    assert registration.plugin.name == "my_dev_copy"
    (notice,) = plugins.registry.notices
    assert "detector 'phrase'" in notice and "not the installed plugin 'phrase_plugin'" in notice


def test_two_installed_plugins_with_one_name_are_still_an_error(monkeypatch) -> None:
    _entry_points(monkeypatch, first=_installed("one"), second=_installed("two"))
    with pytest.raises(PluginError, match="already registered"):
        load_plugins(autoload=True)
