"""Eval suites: a YAML file (validated with pydantic) and JSONL data beside it.

A suite holds no code. It names its data, prompt format, decoding parameters, the
metrics and detectors to run (with arguments and thresholds) and what counts as a
failing sample. Errors name the file, the line and the field, and say how to fix it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.errors import ConfigError, NotFoundError, did_you_mean
from harness.prompts import PromptConfig
from harness.types import GenerationConfig, Sample, TrainingExample

SUITE_FILE = "suite.yaml"


class MetricConfig(BaseModel):
    """A metric to compute, with its arguments and thresholds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    target: float | None = None
    """The corpus score the suite should reach; the report shows pass or fail against it."""
    sample_threshold: float | None = None
    """A sample scoring worse than this (in the metric's direction) is a failure."""
    margin: float | str | None = None
    """The smallest change of the corpus score that matters: absolute (1.5) or relative to
    the baseline's score ("2%"). A guard suite passes only when the confidence interval
    of the change stays above -margin (non-inferiority); unset, DEFAULT_MARGIN applies."""

    @field_validator("margin")
    @classmethod
    def _margin_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                share = float(text[:-1]) if text.endswith("%") else None
            except ValueError:
                share = None
            if share is None or not 0 <= share < 100:
                raise ValueError(f"margin {value!r} must be a number (1.5) or a percentage (\"2%\")")
            return text
        if value is not None and value < 0:
            raise ValueError(f"margin {value} must not be negative")
        return value

    @model_serializer(mode="wrap")
    def _omit_unset_margin(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # Without a margin the stored metric settings (and so the run fingerprints)
        # stay as they were before margins existed.
        data = handler(self)
        if isinstance(data, dict) and data.get("margin") is None:
            data.pop("margin", None)
        return data

    def margin_for(self, baseline: float) -> float:
        """The margin in the metric's units, for a baseline corpus score."""
        return resolve_margin(self.margin, baseline)


DEFAULT_MARGIN = "5%"
"""The margin of a metric that sets none: a loss of 5% of the baseline's score. A convention
(there is no universal value): small enough that a fine-tune within it keeps nearly all
general ability. A small guard cannot show it when nothing changes (the shipped general
suite's chrF MDE is 15 points against a margin of 2.6, docs/loop.md), and the loop warns
so before training. Set `margin:` per metric where the stakes are known."""


def resolve_margin(margin: float | str | None, baseline: float) -> float:
    """An absolute margin: `margin` itself, or its share of |baseline| for a percentage."""
    margin = DEFAULT_MARGIN if margin is None else margin
    if isinstance(margin, str):
        return abs(baseline) * float(margin.strip()[:-1]) / 100
    return float(margin)


CLUSTER_BY_FORMS = ("group", "none", "tag:PREFIX", "metadata.FIELD")


class DetectorConfig(BaseModel):
    """A detector to run, with its arguments and the severity at which a sample fails."""

    model_config = ConfigDict(extra="forbid")

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    """An issue at or above this severity makes its sample a failure."""


def _name_or_mapping(value: Any) -> Any:
    """Allow `- chrf` as shorthand for `- name: chrf`."""
    return {"name": value} if isinstance(value, str) else value


class SuiteConfig(BaseModel):
    """The schema of suite.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str
    description: str = ""
    data: str
    """JSONL (or .jsonl.gz) file of eval rows, relative to the suite file."""
    instruction: str = ""
    """Instruction used for rows that give none."""
    prompt: PromptConfig = PromptConfig()
    generation: GenerationConfig = GenerationConfig()
    metrics: list[MetricConfig] = Field(min_length=1)
    detectors: list[DetectorConfig] = Field(default_factory=list)
    main_metric: str | None = None
    """The metric the loop tries to improve; the first metric when not given."""
    pool: str | None = None
    """JSONL of candidate training rows (instruction, input, output) for targeted data."""
    plugins: list[str] = Field(default_factory=list)
    """Plugin files (relative to the suite) that provide components this suite uses."""
    cluster_by: str | None = Field(None, pattern=r"^(group|none|tag:.+|metadata\..+)$")
    """Which samples are not independent, so that confidence intervals and paired tests
    resample them together: `group` (the rows' `group`, the default when any row has one),
    `tag:PREFIX` (the first tag starting with PREFIX), `metadata.FIELD`, or `none`."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("metrics", "detectors", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_name_or_mapping(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check_names(self) -> SuiteConfig:
        names = [m.name for m in self.metrics]
        for kind, entries in (("metric", names), ("detector", [d.name for d in self.detectors])):
            dupes = {n for n in entries if entries.count(n) > 1}
            if dupes:
                raise ValueError(f"{kind} {sorted(dupes)[0]!r} is listed twice")
        if self.main_metric is not None and self.main_metric not in names:
            raise ValueError(
                f"main_metric {self.main_metric!r} is not one of the suite's metrics "
                f"({', '.join(names)}){did_you_mean(self.main_metric, names)}"
            )
        return self

    @property
    def main(self) -> str:
        return self.main_metric or self.metrics[0].name


class RowModel(BaseModel):
    """One eval row of a suite's JSONL data."""

    model_config = ConfigDict(extra="forbid")

    id: str | int
    instruction: str = ""
    input: str = ""
    reference: str | None = None
    references: list[str] | None = None
    tags: list[str] = Field(default_factory=list)
    group: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_prompt_and_reference(self) -> RowModel:
        if self.reference is None and not self.references:
            raise ValueError("a row needs 'reference' (a string) or 'references' (a list)")
        if self.reference is not None and self.references:
            raise ValueError("give either 'reference' or 'references', not both")
        return self


class TrainRowModel(BaseModel):
    """One training row (pool, annotations, datasets)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = ""
    input: str = ""
    output: str = Field(min_length=1)
    id: str | int | None = None
    tags: list[str] = Field(default_factory=list)
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_prompt(self) -> TrainRowModel:
        if not self.instruction.strip() and not self.input.strip():
            raise ValueError("a row needs 'instruction' or 'input'")
        return self


@dataclass(frozen=True)
class Suite:
    """A loaded, validated suite."""

    config: SuiteConfig
    path: Path
    samples: tuple[Sample, ...]
    hash: str
    """Content hash of the suite file and its data."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.directory / relative).resolve()

    @property
    def plugin_files(self) -> list[Path]:
        return [self.resolve(p) for p in self.config.plugins]

    @property
    def pool_path(self) -> Path | None:
        return self.resolve(self.config.pool) if self.config.pool else None

    def limited(self, limit: int | None) -> Suite:
        """The first `limit` samples (all when None); the hash records the limit."""
        if limit is None or limit >= len(self.samples):
            return self
        if limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {limit}")
        digest = hashlib.sha256(f"{self.hash}:limit={limit}".encode()).hexdigest()
        return Suite(self.config, self.path, self.samples[:limit], digest)


# ---------------------------------------------------------------------------
# Locating suites
# ---------------------------------------------------------------------------


def builtin_suites() -> dict[str, Path]:
    """Name -> suite file of the suites shipped with the harness."""
    root = importlib.resources.files("harness.suites")
    found = {}
    for entry in root.iterdir():
        candidate = entry / SUITE_FILE
        if candidate.is_file():
            found[entry.name] = Path(str(candidate))
    return dict(sorted(found.items()))


def find_suite(name_or_path: str | Path) -> Path:
    """The suite file for a path (file or directory) or a built-in suite's name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / SUITE_FILE).is_file():
        return path / SUITE_FILE
    if path.is_file():
        return path
    builtins = builtin_suites()
    if str(name_or_path) in builtins:
        return builtins[str(name_or_path)]
    raise NotFoundError(
        f"no suite file or built-in suite {str(name_or_path)!r}."
        f"{did_you_mean(str(name_or_path), builtins)} Built-in suites: {', '.join(builtins)}"
    )


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_suite(name_or_path: str | Path) -> Suite:
    """Load and validate a suite and its data. Component names are checked later,
    against the registry, by `harness.scoring.resolve_components`."""
    path = find_suite(name_or_path).resolve()
    text = path.read_bytes()
    config = parse_suite_config(text.decode("utf-8", errors="replace"), path)
    data_path = (path.parent / config.data).resolve()
    if not data_path.is_file():
        raise ConfigError(f"{path}: 'data' names {config.data!r}, but {data_path} does not exist")
    rows = list(read_jsonl(data_path, RowModel))
    if not rows:
        raise ConfigError(f"{data_path}: no rows; a suite needs at least one sample")
    samples = []
    seen: dict[str, int] = {}
    for line_no, row in rows:
        sample_id = str(row.id)
        if sample_id in seen:
            raise ConfigError(
                f"{data_path}:{line_no}: id {sample_id!r} is already used on line {seen[sample_id]}; "
                "ids must be unique"
            )
        seen[sample_id] = line_no
        instruction = row.instruction or config.instruction
        if not instruction.strip() and not row.input.strip():
            raise ConfigError(
                f"{data_path}:{line_no}: row {sample_id!r} has no 'instruction' or 'input', and the "
                "suite sets no default 'instruction'"
            )
        references = tuple(row.references) if row.references else (row.reference or "",)
        samples.append(
            Sample(
                id=sample_id,
                instruction=instruction,
                input=row.input,
                references=references,
                tags=tuple(row.tags),
                group=row.group,
                metadata=row.metadata,
            )
        )
    digest = hashlib.sha256(text + b"\0" + data_path.read_bytes()).hexdigest()
    return Suite(config=config, path=path, samples=tuple(samples), hash=digest)


def parse_suite_config(text: str, path: Path) -> SuiteConfig:
    """Parse and validate suite YAML; errors give file, line, field and a fix."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite file must be a YAML mapping (name: ..., data: ...)")
    lines = _line_index(root)
    try:
        return SuiteConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path, lines, SuiteConfig)) from None


def _line_index(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Field path -> 1-based line, for every node of a composed YAML document."""
    index: dict[tuple[Any, ...], int] = {}
    if node is None:
        return index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            index[child] = key.start_mark.line + 1
            index.update({k: v for k, v in _line_index(value, child).items() if k != child})
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            index.update(_line_index(value, path + (i,)))
    return index


def _describe_validation_error(
    exc: ValidationError, path: Path, lines: Mapping[tuple[Any, ...], int], model: type[BaseModel]
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
    return f"{where}: {field or 'suite'}: {message}{more}"


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


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_jsonl(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, Any]]:
    """(line number, validated row) for every non-blank line; errors give file and line."""
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from None
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
