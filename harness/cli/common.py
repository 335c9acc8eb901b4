"""What every command shares: the context settings and the state of the root options.

Command modules import from here, never from `harness.cli.main`, which imports them to
attach them to the root command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class CliState:
    """Options given before the command name, shared by every command."""

    store: Path | None = None
    plugin_files: list[Path] = field(default_factory=list)
    autoload: bool | None = None
    console: Console = field(default_factory=lambda: Console())
    err: Console = field(default_factory=lambda: Console(stderr=True))

    def load_plugins(self, extra_files: Sequence[Path] = ()) -> Any:
        from harness.components.plugin_manager import load_plugins

        plugins = load_plugins([*self.plugin_files, *extra_files], autoload=self.autoload)
        for notice in plugins.registry.notices:
            self.err.print(f"[yellow]notice:[/] {notice}", highlight=False, soft_wrap=True)
        return plugins

    def writer(self) -> Any:
        from harness.store import Store

        return Store.writer(self.store)

    def reader(self) -> Any:
        from harness.store import Store

        return Store.reader(self.store)


pass_state = click.make_pass_decorator(CliState)
