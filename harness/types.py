"""The plain typed values that flow between components.

Every arrow in the data flow (suite -> backend -> generations -> metrics/detectors ->
store -> clusters -> data -> trainer) passes one of these. They are frozen so a plugin
cannot change what another plugin sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

FinishReason = Literal["eos", "stop", "length"]

Progress = Callable[[int], None]
"""Called with the number of units just finished (for progress bars)."""

UNCLUSTERED = -1
"""The cluster id of a failure that belongs to no cluster."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One eval item: what to ask, what a good answer looks like, and how to group it."""

    id: str
    instruction: str = ""
    input: str = ""
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    group: str | None = None
    """Samples that share a group ask the same question in different words (paraphrases)."""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The first reference, or '' when the sample has none."""
        return self.references[0] if self.references else ""


MAX_NEW_TOKENS = 1 << 20
"""No model has a longer context; the model's own context bounds it further."""

DEFAULT_CHUNK = 256
"""Prompts generated between commits: the most an interruption can lose. One chunk is
one call to the backend, so it bounds the batch too: at 64 (before this release) the
`hf` backend's CPU batches never grew past 64 rows, which ran a 200-prompt suite at
about half the speed of one batch of 200 (docs/generation.md)."""


class GenerationConfig(BaseModel):
    """Decoding parameters. Everything here changes outputs, so all of it is in the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(
        64, ge=1, le=MAX_NEW_TOKENS, description="Bounded again by the model's context when it loads."
    )
    temperature: NonNegativeFloat = Field(0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: NonNegativeInt = Field(0, description="0 disables top-k filtering.")
    stop: tuple[str, ...] = Field((), description="Generation ends at the first of these strings.")
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class Completion:
    """What a backend returns for one prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    latency_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Generation:
    """A model's output for one sample (draw 0 is the scored output; later draws are samples)."""

    sample_id: str
    text: str
    prompt: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason = "eos"
    latency_s: float = 0.0
    draw: int = 0
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    """Everything a metric or detector may look at for one sample."""

    sample: Sample
    generation: Generation
    draws: tuple[Generation, ...] = ()
    """Extra sampled outputs, present when a component asked for them (see `needs`)."""
    reference_nll: float | None = None
    """Summed negative log-likelihood of the first reference under the model, if asked for."""
    reference_tokens: int | None = None

    @property
    def output(self) -> str:
        return self.generation.text


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem a detector found in one output.

    `start`/`end` are character offsets into the output (the evidence span); leave them
    None when the problem is the output as a whole. `detector` and `sample_id` are filled
    in by the harness.
    """

    severity: float
    message: str
    start: int | None = None
    end: int | None = None
    kind: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    detector: str = ""
    sample_id: str = ""


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One instruction-tuning row, with where it came from."""

    instruction: str
    input: str
    output: str
    source: str = ""
    cluster: int | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which checkpoint to load: a base (or merged) model, optionally with a peft adapter."""

    path: str
    adapter: str | None = None
    backend: str = "hf"
    options: Mapping[str, Any] = field(default_factory=dict)


def spec_record(spec: ModelSpec) -> dict[str, Any]:
    """A checkpoint spec as stored (JSON): path, adapter, backend, options."""
    return {"path": spec.path, "adapter": spec.adapter, "backend": spec.backend, "options": dict(spec.options)}


def spec_from_record(data: Mapping[str, Any]) -> ModelSpec:
    """The spec that `spec_record` stored."""
    return ModelSpec(data["path"], data.get("adapter"), data.get("backend", "hf"), data.get("options") or {})


@dataclass(frozen=True)
class Failure:
    """A failing sample with everything known about why it failed."""

    sample: Sample
    generation: Generation
    issues: tuple[Issue, ...]
    scores: Mapping[str, float]
    reasons: tuple[str, ...]
    """'metric:chrf', 'detector:repetition', ..."""

    @property
    def text(self) -> str:
        """What featurizers read: the task and the model's answer."""
        task = "\n".join(part for part in (self.sample.instruction, self.sample.input) if part)
        return f"{task}\n=> {self.generation.text}"

    @property
    def issue_types(self) -> list[str]:
        """'detector.kind' (or 'detector' when the issue has no kind) of every issue."""
        return [f"{i.detector}.{i.kind}" if i.kind else i.detector for i in self.issues]


@dataclass(frozen=True)
class Cluster:
    """A group of failures with a readable description."""

    id: int
    members: tuple[str, ...]
    label: str
    top_terms: tuple[str, ...]
    dominant_issue: str | None
    tags: tuple[str, ...]
    mean_score: float | None
    score_metric: str | None
    examples: tuple[str, ...]
    reasons: Mapping[str, int]
    distances: Mapping[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class ClusterChange:
    """What became of a cluster from one clustering (of the previous iteration) to the next."""

    previous_cluster: int | None
    cluster_id: int | None
    previous_size: int | None
    size: int | None
    still_failing: int | None
    overlap: float
    change: str
    """appeared | vanished | shrank | grew | unchanged"""


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """Everything the store records about one training run."""

    trainer: str
    args: Mapping[str, Any]
    """The trainer's arguments, validated and with defaults filled in (JSON-able)."""
    checkpoint: ModelSpec
    """What to evaluate next: base + adapter (path=base, adapter=output dir) or a full model."""
    checkpoint_hash: str
    """`harness.generate.checkpoints.content_hash` of the saved output directory."""
    loss_curve: tuple[tuple[int, float, float], ...]
    """(step, training loss, learning rate) for every optimizer step."""
    validation_curve: tuple[tuple[int, float], ...]
    """(step, validation loss) for every evaluation."""
    tokens_trained: int
    """Non-padding tokens fed to the model over all steps (prompt and response)."""
    response_tokens: int
    """Tokens that carried the loss (response tokens and EOS)."""
    padding_share: float
    """Padding positions / all positions of the training batches (packed: only the ends of
    rows shorter than the longest row of their batch)."""
    wall_time_s: float
    """Seconds this call took, from loading to the saved checkpoint."""
    train_time_s: float
    """Seconds spent in optimizer steps (forward, backward, update), summed over resumes."""
    tokens_per_second: float
    """tokens_trained / train_time_s."""
    steps: int
    epochs: float
    best_step: int | None
    """The step whose validation loss was lowest (None without validation)."""
    stopped_early: bool
    resumed: bool
    train_examples: int
    validation_examples: int
    truncated_examples: int
    """Examples cut at max_length (their response lost its end)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Method specifics: adapted modules, parameter counts, the base checkpoint, ..."""

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict of every field (the checkpoint spec as a dict)."""
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        record["checkpoint"] = spec_record(self.checkpoint)
        record["args"] = dict(self.args)
        record["details"] = dict(self.details)
        record["loss_curve"] = [list(point) for point in self.loss_curve]
        record["validation_curve"] = [list(point) for point in self.validation_curve]
        return record


@dataclass(frozen=True)
class ComponentError:
    """A plugin failure recorded against a run (and a sample when there was one)."""

    plugin: str
    hook: str
    component: str
    message: str
    sample_id: str | None = None
    traceback: str = ""


@dataclass(frozen=True)
class MetricOutcome:
    name: str
    higher_is_better: bool
    sample_ids: list[str]
    stats: np.ndarray
    values: np.ndarray
    corpus: float
    ci_low: float
    ci_high: float
    confidence: float
    target: float | None
    sample_threshold: float | None

    @property
    def passed(self) -> bool | None:
        if self.target is None or not math.isfinite(self.corpus):
            return None
        return self.corpus >= self.target if self.higher_is_better else self.corpus <= self.target

    def worse_than_threshold(self, value: float) -> bool:
        if self.sample_threshold is None or not math.isfinite(value):
            return False
        if self.higher_is_better:
            return value < self.sample_threshold
        return value > self.sample_threshold


@dataclass
class ScoringResult:
    metrics: list[MetricOutcome] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    """Failing sample id -> reasons ('metric:chrf', 'detector:repetition')."""
    errors: list[ComponentError] = field(default_factory=list)
