"""Byte-exact serialisation of suite data files, shared by the suite builders.

The same rows must always give the same bytes, so that running the build twice (or on
another machine) changes nothing that git would see: keys keep the order the builder
gives them, JSON is written with fixed separators, and gzip carries no timestamp or
file name.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

Row = Mapping[str, Any]


def jsonl_bytes(rows: Iterable[Row], *, compact: bool = False) -> bytes:
    """One JSON object per line, UTF-8, newline-terminated.

    Eval files are written readable (they are reviewed by hand); pools compact (they are
    large and only read by code).
    """
    separators = (",", ":") if compact else (", ", ": ")
    lines = [json.dumps(dict(row), ensure_ascii=False, separators=separators) for row in rows]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """gzip with mtime 0 and no embedded name, so the output depends on `data` alone."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as handle:
        handle.write(data)
    return buffer.getvalue()


def drop_empty(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row without empty optional fields (empty tags, no group), to keep files lean."""
    return {key: value for key, value in row.items() if value not in (None, [], {}, "")}
