"""The `harness` command line: thin commands over the library API.

User mistakes (`HarnessError`) print one line and exit with code 2; bugs keep their
traceback. Each command group lives in its own module and attaches to `main`.
"""

from harness.cli.main import main

__all__ = ["main"]
