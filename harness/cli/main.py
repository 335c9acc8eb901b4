"""The root command, shared options and error handling."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from harness.allocator import keep_freed_memory
from harness.cli.common import CONTEXT_SETTINGS, CliState
from harness.errors import HarnessError


class HarnessGroup(click.Group):
    """Turns HarnessError, and click's own usage errors, into one clear line and exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        group_main: Any = super().main  # click's overloads do not cover forwarding *args
        if not standalone_mode:
            return group_main(*args, standalone_mode=False, **kwargs)
        try:
            result = group_main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            # click prints the usage line, a hint and the error on three lines; one is enough.
            command = exc.ctx.command_path if exc.ctx else "harness"
            Console(stderr=True, highlight=False).print(
                f"[bold red]error:[/] {exc.format_message()} (see `{command} -h`)", soft_wrap=True
            )
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        # Without standalone mode click returns the exit code of ctx.exit() instead of exiting.
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            # escape: a message naming an extra ('harness-loop[vllm]') is not markup
            Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            Console(stderr=True).print(
                "[yellow]interrupted[/]: finished work is stored; run the same command again to resume"
            )
            ctx.exit(130)


@click.group(cls=HarnessGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HARNESS_STORE",
    help="DuckDB store file.  [env: HARNESS_STORE; default: .harness/harness.duckdb]",
)
@click.option(
    "--plugin",
    "plugin_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Load a plugin from a Python file (repeatable).",
)
@click.option(
    "--no-autoload",
    is_flag=True,
    default=False,
    help="Skip plugins installed under the 'harness' entry point.  "
    "[env: HARNESS_DISABLE_PLUGIN_AUTOLOAD=1]",
)
@click.version_option(package_name="harness-loop", prog_name="harness")
@click.pass_context
def main(ctx: click.Context, store: Path | None, plugin_files: tuple[Path, ...], no_autoload: bool) -> None:
    """Evaluate fine-tuned language models, cluster their errors, add targeted data,
    retrain, and compare: every result in one DuckDB store.

    \b
    Quick start:
      harness eval dictionary --model default     evaluate the default model
      harness show latest                         read the report
      harness loop dictionary --model default     run the improvement loop

    Set HARNESS_TRACE=1 to print every plugin hook call.
    """
    _quiet_libraries()
    keep_freed_memory()
    ctx.obj = CliState(
        store=store,
        plugin_files=list(plugin_files),
        autoload=False if no_autoload else None,
    )


def _quiet_libraries() -> None:
    """Our progress bars replace the libraries' own; their errors still show. Set through
    the environment so that commands that never load a model do not import transformers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def run() -> None:
    main(prog_name="harness")


def _register_commands() -> None:
    from harness.cli import (
        cluster_commands,
        data_commands,
        eval_commands,
        loop_commands,
        new_commands,
        report_commands,
        train_commands,
        view_commands,
    )

    for module in (eval_commands, report_commands, cluster_commands, data_commands, loop_commands, new_commands, train_commands, view_commands):
        module.register(main)


_register_commands()
