"""Value types shared by every command, so that an out-of-range value is one line, exit 2.

Each range is checked by click while it parses the command line, before a store is
opened or a model is loaded; `tests/test_cli_values.py` checks that every numeric or
output option of every command uses one of these (or a range of its own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

COUNT = click.IntRange(min=1)
"""How many of something: at least one."""

NON_NEGATIVE = click.IntRange(min=0)

SEED = click.IntRange(min=0, max=2**32 - 1)
"""What numpy, torch and Python's random all accept as a seed."""

SIGNIFICANCE = click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True)
"""A significance level or a confidence: strictly between 0 and 1."""


class OutputPath(click.Path):
    """A path to write: refused at parse time when its folder cannot hold it (a parent
    that is a file, a folder without write permission), not after the work is done."""

    def __init__(self, *, file_okay: bool = True, dir_okay: bool = False, allow_dash: bool = False):
        super().__init__(file_okay=file_okay, dir_okay=dir_okay, allow_dash=allow_dash, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        if self.allow_dash and str(converted) == "-":
            return converted
        path = Path(os.fsdecode(converted))
        if path.exists():
            if not os.access(path, os.W_OK):
                self.fail(f"{path} is not writable (permission denied)", param, ctx)
            return path
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            self.fail(f"cannot write {path}: {ancestor} is a file, not a folder", param, ctx)
        if not os.access(ancestor, os.W_OK):
            self.fail(f"cannot write {path}: {ancestor} is not writable (permission denied)", param, ctx)
        return path


OUTPUT_FILE = OutputPath()
OUTPUT_DIR = OutputPath(file_okay=False, dir_okay=True)
