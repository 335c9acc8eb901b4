"""A suite's configuration: the pydantic models of suite.yaml and of its data rows.

The metrics and detectors to run (with arguments and thresholds), the splits, the
decoding parameters and what counts as a failing sample; and the rows of its JSONL
files (`RowModel` for eval rows, `TrainRowModel` for training rows). Reading and
validating the files is `harness.suite.files`; building a `Suite` is `harness.suite.load`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.errors import did_you_mean
from harness.suite.prompts import PromptConfig
from harness.types import GenerationConfig

SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
