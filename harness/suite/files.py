"""Reading a suite's files: YAML validated by a pydantic model, JSONL rows, UTF-8.

Every error names the file, the line and the field, and says how to fix it: a YAML
mapping is indexed by line, so a pydantic error points at the line of its field, with
the allowed fields when a name is unknown (`did_you_mean`). The same readers serve the
suite, the price table, training rows and component arguments (`validate_args`).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from harness.errors import ConfigError, did_you_mean
from harness.suite.config import SuiteConfig, TrainRowModel
from harness.types import TrainingExample


def parse_suite_config(text: str, path: Path) -> SuiteConfig:
    """Parse and validate suite YAML; errors give file, line, field and a fix."""
    config = parse_yaml_model(text, path, SuiteConfig, "suite")
    assert isinstance(config, SuiteConfig)
    return config


def parse_yaml_model(text: str, path: Path, model: type[BaseModel], what: str) -> BaseModel:
    """YAML text validated by `model` (a suite, a price table); errors are one line with
    file, line and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} file must be a YAML mapping of fields")
    lines = line_index(root)
    if model is SuiteConfig:
        _check_data_or_splits(data, path, lines)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path, lines, model, what)) from None


def _check_data_or_splits(data: Mapping[str, Any], path: Path, lines: Mapping[tuple[Any, ...], int]) -> None:
    """`data` and `splits` are exclusive and one is required; say so at the right line."""
    if "data" not in data and "splits" not in data:
        raise ConfigError(
            f"{path}:{lines.get((), 1)}: data: required field is missing; add it "
            "(or declare 'splits': name -> JSONL file)"
        )
    if "data" in data and "splits" in data:
        raise ConfigError(
            f"{path}:{lines.get(('splits',), 1)}: splits: give either 'data' (one JSONL file, split by "
            "the harness) or 'splits' (name -> JSONL file), not both"
        )


def line_index(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Field path -> 1-based line, for every node of a composed YAML document."""
    index: dict[tuple[Any, ...], int] = {}
    if node is None:
        return index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            index[child] = key.start_mark.line + 1
            index.update({k: v for k, v in line_index(value, child).items() if k != child})
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            index.update(line_index(value, path + (i,)))
    return index


def _describe_validation_error(
    exc: ValidationError,
    path: Path,
    lines: Mapping[tuple[Any, ...], int],
    model: type[BaseModel],
    what: str = "suite",
) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    line = None
    for depth in range(len(loc), -1, -1):
        line = lines.get(loc[:depth])
        if line is not None:
            break
    field = ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in loc)
    field = field.replace(".[", "[")
    where = f"{path}:{line}" if line else str(path)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        siblings = _allowed_fields(model, loc[:-1])
        message = f"unknown field.{did_you_mean(str(loc[-1]), siblings)}"
        if siblings:
            message += f" Allowed here: {', '.join(siblings)}"
    elif error["type"] == "missing":
        message = "required field is missing; add it"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{where}: {field or what}: {message}{more}"


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names allowed at `loc` inside `model` (best effort, for hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def decode_utf8(data: bytes, path: Path, first_line: int = 1) -> str:
    """Text of a suite or data file; bytes that are not UTF-8 are refused, not replaced
    (replacement characters would run with mangled text)."""
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} at column {column} is not UTF-8; "
            "save the file as UTF-8"
        ) from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a text or gzip-compressed file; a file that cannot be read
    or decompressed is one line naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                yield line_no, decode_utf8(raw, path, line_no)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        where = f"{path}:{line_no + 1}" if line_no else str(path)
        raise ConfigError(
            f"{where}: not a readable gzip file ({exc or type(exc).__name__}); "
            "compress it again with gzip, or drop the .gz suffix if it is plain text"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a JSONL file") from None
    except PermissionError:
        raise ConfigError(f"{path} cannot be read (permission denied)") from None


def read_jsonl(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, Any]]:
    """(line number, validated row) for every non-blank line; errors give file and line."""
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from None
        except RecursionError:
            raise ConfigError(f"{path}:{line_no}: JSON nested too deeply") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}:{line_no}: each line must be a JSON object")
        try:
            yield line_no, model.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "required field is missing"
            elif error["type"] == "extra_forbidden":
                allowed = sorted(model.model_fields)
                message = f"unknown field.{did_you_mean(field, allowed)} Allowed: {', '.join(allowed)}"
            prefix = f"field {field!r}: " if field else ""
            raise ConfigError(f"{path}:{line_no}: {prefix}{message}") from None


def read_training_rows(path: Path) -> list[TrainingExample]:
    """Training rows from a JSONL file (pool, dataset); errors give file and line."""
    return [
        TrainingExample(
            instruction=row.instruction,
            input=row.input,
            output=row.output,
            source=row.source or path.name,
            provenance={"file": str(path), "line": line_no, **({"id": str(row.id)} if row.id is not None else {})},
        )
        for line_no, row in read_jsonl(path, TrainRowModel)
    ]


def validate_args(component: Any, args: Mapping[str, Any], where: str) -> BaseModel:
    """A component's arguments, validated by its Args model; errors say where."""
    try:
        return component.Args.model_validate(dict(args))
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = sorted(component.Args.model_fields)
            message = (
                f"unknown argument.{did_you_mean(field, allowed)} "
                f"Allowed: {', '.join(allowed) if allowed else 'none'}"
            )
        raise ConfigError(f"{where}.{field}: {message}") from None
