"""`harness new detector NAME`: a plugin package that installs and passes its own tests."""

from __future__ import annotations

import importlib.resources
import json
import keyword
import re
from pathlib import Path
from string import Template

from harness.errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def new_detector(name: str, directory: Path, *, description: str = "") -> list[Path]:
    """Write a detector plugin package for `name` into `directory`; returns the files written."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ConfigError(
            f"detector name {name!r} must be lower case letters, digits and '_', starting with a letter"
        )
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory} already exists and is not empty; choose another --directory")
    package = f"harness_{name}"
    values = {
        "name": name,
        "function": name,
        "package": package,
        "dist_name": f"harness-{name.replace('_', '-')}",
    }
    text = " ".join((description or "flags outputs that contain given phrases.").split())
    # Pasted as literals, never as raw text: quotes and backslashes must not break the code.
    values["description_literal"] = repr(text)
    values["description_toml"] = json.dumps(f"A harness detector plugin: {text}")
    templates = importlib.resources.files("harness") / "templates" / "detector"
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
