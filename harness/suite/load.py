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
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
from harness.suite.prompts import PromptConfig
from harness.types import GenerationConfig, Sample, TrainingExample

SUITE_FILE = "suite.yaml"
SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AUTO_SPLIT_SEED = "harness-split-0"
"""Fixed: the automatic split of a suite's data is the same on every machine and run."""


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
    data: str | None = None
    """JSONL (or .jsonl.gz) file of eval rows, relative to the suite file. The harness
    splits it into `mining_split` and `heldout_split` itself (see `auto_split`)."""
    splits: dict[str, str] | None = None
    """Split name -> JSONL file (same rows as `data`); instead of `data`."""
    mining_split: str = "dev"
    """The split whose failures the loop clusters and gathers data for."""
    heldout_split: str = "test"
    """The split the loop decides on and reports gains on; no selection step sees it."""
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

    @field_validator("splits")
    @classmethod
    def _split_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) < 2:
            raise ValueError("declare at least two splits (e.g. dev: dev.jsonl and test: test.jsonl)")
        for name in value:
            if not SPLIT_NAME.fullmatch(str(name)):
                raise ValueError(f"split name {name!r} must be letters, digits, '_', '-' or '.'")
        return value

    @model_validator(mode="after")
    def _check_data(self) -> SuiteConfig:
        if (self.data is None) == (self.splits is None):
            raise ValueError("give either 'data' (one JSONL file) or 'splits' (name -> JSONL file), not both")
        if self.mining_split == self.heldout_split:
            raise ValueError(f"mining_split and heldout_split are both {self.mining_split!r}; they must differ")
        if self.splits is not None:
            for field_name in ("mining_split", "heldout_split"):
                name = getattr(self, field_name)
                if name not in self.splits:
                    raise ValueError(
                        f"{field_name} {name!r} is not one of the declared splits "
                        f"({', '.join(self.splits)}){did_you_mean(name, list(self.splits))}"
                    )
        return self

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
    split_members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Split name -> the ids of its samples, in suite order (every split of the whole suite)."""
    auto_split: bool = False
    """True when the harness made the splits (the suite gives `data`, not `splits`)."""
    split_name: str | None = None
    """The split this suite is restricted to; None for the whole suite."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def split_names(self) -> list[str]:
        """The suite's splits, in the order the suite declares them (mining split first
        for an automatic split)."""
        return list(self.split_members)

    @property
    def mining_split(self) -> str:
        return self.config.mining_split

    @property
    def heldout_split(self) -> str:
        return self.config.heldout_split

    def split(self, name: str) -> Suite:
        """The suite restricted to one split; its runs record the split's name."""
        if name not in self.split_members:
            raise ConfigError(
                f"suite {self.name!r} has no split {name!r}.{did_you_mean(name, self.split_names)} "
                f"Splits: {', '.join(self.split_names)}"
            )
        if self.split_name is not None:
            if name == self.split_name:
                return self
            raise ConfigError(f"suite {self.name!r} is already restricted to split {self.split_name!r}")
        members = set(self.split_members[name])
        samples = tuple(s for s in self.samples if s.id in members)
        digest = hashlib.sha256(f"{self.hash}:split={name}".encode()).hexdigest()
        return Suite(self.config, self.path, samples, digest, self.split_members, self.auto_split, name)

    def describe_split(self) -> str:
        """One line on where the suite's splits come from, for reports and logs."""
        sizes = ", ".join(f"{n} {len(ids)}" for n, ids in self.split_members.items())
        how = "made by the harness (stratified by tags, seed fixed)" if self.auto_split else "declared by the suite"
        return f"splits {how}: {sizes}"

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def directory(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.directory / relative).resolve()

    def where(self, *field: str | int, label: str | None = None) -> str:
        """'suite.yaml:LINE: field' for a field of the suite file (for error messages);
        `label` names the field otherwise."""
        try:
            lines = _line_index(yaml.compose(self.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
        except (OSError, yaml.YAMLError):
            lines = {}
        line = next((lines[field[:d]] for d in range(len(field), 0, -1) if field[:d] in lines), None)
        name = label or "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in field).lstrip(".")
        return f"{self.path}:{line}: {name}" if line else f"{self.path}: {name}"

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
        return Suite(
            self.config, self.path, self.samples[:limit], digest, self.split_members, self.auto_split, self.split_name
        )


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
    against the registry, by `harness.score.scoring.resolve_components`."""
    path = find_suite(name_or_path).resolve()
    text = path.read_bytes()
    config = parse_suite_config(decode_utf8(text, path), path)
    files = {None: config.data} if config.data is not None else dict(config.splits or {})
    field_name = {None: "data"} | {name: f"splits.{name}" for name in config.splits or {}}
    samples: list[Sample] = []
    members: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    digest = hashlib.sha256(text)
    for split, relative in files.items():
        data_path = (path.parent / relative).resolve()
        if not data_path.is_file():
            raise ConfigError(
                f"{path}: {field_name[split]!r} names {relative!r}, but {data_path} does not exist"
            )
        loaded = _load_samples(data_path, config, seen)
        if not loaded:
            raise ConfigError(f"{data_path}: no rows; a suite needs at least one sample")
        samples.extend(loaded)
        if split is not None:
            members[split] = [s.id for s in loaded]
        digest.update(b"\0" + data_path.read_bytes())
    if config.splits is not None:
        _check_groups_stay_in_one_split(samples, members, path)
    else:
        members = auto_split(samples, (config.mining_split, config.heldout_split))
    return Suite(
        config=config,
        path=path,
        samples=tuple(samples),
        hash=digest.hexdigest(),
        split_members={name: tuple(ids) for name, ids in members.items()},
        auto_split=config.splits is None,
    )


def _load_samples(data_path: Path, config: SuiteConfig, seen: dict[str, str]) -> list[Sample]:
    """The samples of one data file; `seen` (id -> file:line) keeps ids unique across files."""
    samples = []
    for line_no, row in read_jsonl(data_path, RowModel):
        sample_id = str(row.id)
        if sample_id in seen:
            earlier_file, earlier_line = seen[sample_id].rsplit(":", 1)
            where = f"on line {earlier_line}" if earlier_file == str(data_path) else f"at {seen[sample_id]}"
            raise ConfigError(
                f"{data_path}:{line_no}: id {sample_id!r} is already used {where}; ids must be unique"
            )
        seen[sample_id] = f"{data_path}:{line_no}"
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
    return samples


def _check_groups_stay_in_one_split(
    samples: Sequence[Sample], members: Mapping[str, Sequence[str]], path: Path
) -> None:
    """A paraphrase group split across two splits would let the loop mine one wording
    and be judged on another of the same question."""
    split_of = {sample_id: name for name, ids in members.items() for sample_id in ids}
    group_split: dict[str, tuple[str, str]] = {}
    for sample in samples:
        if sample.group is None:
            continue
        first = group_split.setdefault(sample.group, (split_of[sample.id], sample.id))
        if first[0] != split_of[sample.id]:
            raise ConfigError(
                f"{path}: splits: group {sample.group!r} has sample {first[1]!r} in split {first[0]!r} and "
                f"sample {sample.id!r} in split {split_of[sample.id]!r}; a paraphrase group must stay in one split"
            )


def auto_split(samples: Sequence[Sample], names: tuple[str, str]) -> dict[str, list[str]]:
    """A deterministic, stratified half/half split of samples into `names`.

    Units are paraphrase groups (a sample without a group is a unit of its own), so a
    group never crosses the split. Units are ordered by their tags, then by a fixed hash
    of their key, and each goes to the split with fewer samples of its tags so far (ties:
    fewer samples overall): every tag combination is divided evenly and the odd ones out
    balance across them. The hash (not a shuffle of the rows) makes the split
    independent of the order of the rows."""
    units: dict[str, list[Sample]] = {}
    for sample in samples:
        units.setdefault(f"group:{sample.group}" if sample.group is not None else f"id:{sample.id}", []).append(sample)

    def order(key: str) -> tuple[tuple[str, ...], str]:
        tags = tuple(sorted({t for s in units[key] for t in s.tags}))
        return tags, hashlib.sha256(f"{AUTO_SPLIT_SEED}:{key}".encode()).hexdigest()

    taken = {name: 0 for name in names}
    chosen: dict[str, str] = {}
    stratum: tuple[str, ...] | None = None
    for key in sorted(units, key=order):
        if order(key)[0] != stratum:
            stratum, in_stratum = order(key)[0], {name: 0 for name in names}
        name = min(names, key=lambda n: (in_stratum[n], taken[n], names.index(n)))
        taken[name] += len(units[key])
        in_stratum[name] += len(units[key])
        for sample in units[key]:
            chosen[sample.id] = name
    return {name: [s.id for s in samples if chosen[s.id] == name] for name in names}


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
    lines = _line_index(root)
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
