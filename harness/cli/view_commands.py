"""`harness view`: serve the read-only web viewer over the store."""

from __future__ import annotations

import click

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("view", context_settings=CONTEXT_SETTINGS)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host other than loopback (the viewer has no authentication).",
)
@pass_state
def view_command(state: CliState, host: str, port: int, allow_remote: bool) -> None:
    """Browse the store in a web browser: runs, a run's metrics, issues and clusters,
    a sample browser with filters, run vs run, loops as plots, datasets.

    Read-only: the store is opened read-only per request, never with the writer lock,
    so a running `harness eval` or `harness loop` can keep writing meanwhile. Every
    script ships in the package; nothing is fetched from the network.

    \b
    Examples:
      harness view                          http://127.0.0.1:8765
      harness --store other.duckdb view --port 9000
    """
    if host not in LOOPBACK and not allow_remote:
        raise ConfigError(
            f"--host {host} would serve the store beyond this machine, without authentication; "
            "add --allow-remote if that is what you want"
        )
    import uvicorn

    from harness.store import default_store_path
    from harness.view.app import create_app

    app = create_app(state.store or default_store_path(), registry=state.load_plugins().registry)
    state.err.print(f"harness view: http://{host}:{port}  (Ctrl-C stops it)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(group: click.Group) -> None:
    group.add_command(view_command)
