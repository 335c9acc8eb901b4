"""Eval suites: a YAML file (validated with pydantic) and JSONL data beside it, loaded.

A suite holds no code. It names its data, prompt format, decoding parameters, the
metrics and detectors to run (with arguments and thresholds) and what counts as a
failing sample (`harness.suite.config`). Loading finds the suite (a built-in name or a
path), reads its samples and splits them when the suite gives one data file; errors
name the file, the line and the field, and say how to fix it (`harness.suite.files`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import ConfigError, NotFoundError, did_you_mean
from harness.suite.config import RowModel, SuiteConfig
from harness.suite.files import decode_utf8, line_index, parse_suite_config, read_jsonl
from harness.types import Sample

SUITE_FILE = "suite.yaml"
AUTO_SPLIT_SEED = "harness-split-0"
"""Fixed: the automatic split of a suite's data is the same on every machine and run."""


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
            lines = line_index(yaml.compose(self.path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
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


