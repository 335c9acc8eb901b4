"""The CLI keeps freed memory in the heap: large blocks are no longer mmapped afresh."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Run in a fresh interpreter: the allocator's state is per process, and pytest's own
# process has had its thresholds moved by whatever ran before.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped_while_held(size):
        before = libc.mallinfo2().hblkhd
        block = libc.malloc(size)
        grown = libc.mallinfo2().hblkhd - before
        libc.free(block)
        return grown

    if sys.argv[1] == "tune":
        from harness.allocator import keep_freed_memory
        print("applied" if keep_freed_memory() else "left")
    print(mmapped_while_held(64 << 20))
    """
)


def _probe(mode: str, **env: str) -> list[str]:
    import os

    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True, text=True, check=True, env={**os.environ, **env},
    )
    return out.stdout.split()


def test_a_large_block_is_mmapped_without_tuning() -> None:
    (grown,) = _probe("plain")
    assert int(grown) >= 64 << 20


def test_tuned_a_large_block_comes_from_the_heap() -> None:
    applied, grown = _probe("tune")
    assert applied == "applied"
    assert int(grown) == 0


def test_the_opt_out_leaves_the_allocator_alone() -> None:
    applied, grown = _probe("tune", HARNESS_KEEP_FREED_MEMORY="0")
    assert applied == "left"
    assert int(grown) >= 64 << 20


def test_the_cli_tunes_its_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from click.testing import CliRunner

    cli_main = importlib.import_module("harness.cli.main")  # the package exports `main`, the group
    calls: list[bool] = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append(True) or True)
    result = CliRunner().invoke(cli_main.main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert calls == [True]
