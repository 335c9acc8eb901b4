"""`harness new detector|metric NAME`: a plugin package that installs and passes its own tests."""

from __future__ import annotations

import importlib.resources
import json
import keyword
import re
from pathlib import Path
from string import Template

from harness.errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


DEFAULT_DESCRIPTIONS = {
    "detector": "flags outputs that contain given phrases.",
    "metric": "whether the output contains a reference.",
}


def new_detector(name: str, directory: Path, *, description: str = "") -> list[Path]:
    """Write a detector plugin package for `name` into `directory`; returns the files written."""
    return new_plugin("detector", name, directory, description=description)


def new_metric(name: str, directory: Path, *, description: str = "") -> list[Path]:
    """Write a metric plugin package for `name` into `directory`; returns the files written."""
    return new_plugin("metric", name, directory, description=description)


def new_plugin(kind: str, name: str, directory: Path, *, description: str = "") -> list[Path]:
    """Write a `kind` ('detector' or 'metric') plugin package; `description` is what
    `harness plugins` shows for it."""
    if kind not in DEFAULT_DESCRIPTIONS:
        raise ConfigError(f"cannot scaffold a {kind!r}; choose one of {', '.join(DEFAULT_DESCRIPTIONS)}")
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"{kind} name {name!r} must be lower case letters, digits and '_', starting with a letter"
        )
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} already exists and is not empty; choose another --directory")
    package = f"harness_{name}"
    description = description.strip() or DEFAULT_DESCRIPTIONS[kind]
    values = {
        "kind": kind,
        "name": name,
        "function": name,
        "package": package,
        "dist_name": f"harness-{name.replace('_', '-')}",
    }
    text = " ".join(description.split())
    # Pasted as literals, never as raw text: quotes and backslashes must not break the code.
    values["description"] = text
    values["description_literal"] = repr(text)
    values["description_toml"] = json.dumps(f"A harness {kind} plugin: {text}")
    templates = importlib.resources.files("harness") / "templates" / kind
    layout = {
        "pyproject.toml.tmpl": directory / "pyproject.toml",
        "README.md.tmpl": directory / "README.md",
        "__init__.py.tmpl": directory / package / "__init__.py",
        "plugin.py.tmpl": directory / package / "plugin.py",
        "test_plugin.py.tmpl": directory / "tests" / f"test_{name}.py",
    }
    written = []
    for template, target in layout.items():
        text = Template((templates / template).read_text(encoding="utf-8")).substitute(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
