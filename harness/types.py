"""The plain typed values that flow between components.

Every arrow in the data flow (suite -> backend -> generations -> metrics/detectors ->
store -> clusters -> data -> trainer) passes one of these. They are frozen so a plugin
cannot change what another plugin sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt

FinishReason = Literal["eos", "stop", "length"]


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
