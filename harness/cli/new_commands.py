"""`harness new detector NAME`: scaffold a plugin package."""

from __future__ import annotations

from pathlib import Path

import click

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state


@click.group("new", context_settings=CONTEXT_SETTINGS)
def new_group() -> None:
    """Scaffold a plugin package."""


@new_group.command("detector", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--directory", type=click.Path(file_okay=False, path_type=Path), help="Where to write it (default: ./harness-NAME).")
@click.option("--description", default="", help="One line saying what the detector finds.")
@pass_state
def new_detector_command(state: CliState, name: str, directory: Path | None, description: str) -> None:
    """Write a detector plugin package NAME (code, test, entry point) that installs and
    passes its own tests as generated; then edit its detect function.

    \b
    Example:
      harness new detector forbidden_phrase
      pip install -e harness-forbidden-phrase && python -m pytest harness-forbidden-phrase
    """
    from harness.scaffold import new_detector

    target = directory or Path(f"harness-{name.replace('_', '-')}")
    files = new_detector(name, target, description=description)
    for path in files:
        state.console.print(f"wrote {path}", highlight=False)
    state.console.print(
        f"\nnext: pip install -e {target} && python -m pytest {target}\n"
        f"then enable it in a suite:  detectors: [{{name: {name}}}]",
        highlight=False,
    )


@new_group.command("metric", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--directory", type=click.Path(file_okay=False, path_type=Path), help="Where to write it (default: ./harness-NAME).")
@click.option("--description", default="", help="One line saying what the metric measures.")
@pass_state
def new_metric_command(state: CliState, name: str, directory: Path | None, description: str) -> None:
    """Write a metric plugin package NAME (a per-sample @metric function, its test, the
    entry point) that installs and passes its own tests as generated; then edit it.

    \b
    Example:
      harness new metric contains_reference
      pip install -e harness-contains-reference && python -m pytest harness-contains-reference
    """
    from harness.scaffold import new_metric

    target = directory or Path(f"harness-{name.replace('_', '-')}")
    for path in new_metric(name, target, description=description):
        state.console.print(f"wrote {path}", highlight=False)
    state.console.print(
        f"\nnext: pip install -e {target} && python -m pytest {target}\n"
        f"then use it in a suite:  metrics: [{{name: {name}}}]",
        highlight=False,
    )


def register(group: click.Group) -> None:
    group.add_command(new_group)
