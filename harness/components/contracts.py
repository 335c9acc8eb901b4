"""The contracts every component kind fulfils.

A plugin registers instances of these classes (or plain functions wrapped by the
`metric` and `detector` decorators) through the `harness_register_*` hooks. Arguments
that a suite passes to a component are validated against the component's `Args`
pydantic model, so a typo in a suite is an error that names the field.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, create_model

from harness.progress import NullReporter, Reporter
from harness.suite.keys import input_key
from harness.suite.prompts import PromptConfig, render_prompt
from harness.types import (
    Cluster,
    Completion,
    Failure,
    GenerationConfig,
    Issue,
    Item,
    ModelSpec,
    Progress,
    Sample,
    TrainingExample,
    TrainingOutcome,
)

if TYPE_CHECKING:
    from harness.components.embedding import Embedder
    from harness.document import Document
    from harness.store.queries import Queries
    from harness.suite.load import Suite


class NoArgs(BaseModel):
    """The arguments of a component that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class Needs:
    """What a metric or detector needs beyond the scored output; the harness provides it."""

    draws: int = 0
    """Extra sampled outputs per sample (for self-consistency and the like)."""
    draw_temperature: float = 0.8
    reference_nll: bool = False
    """The log-likelihood of the reference under the model (for perplexity)."""


class Metric(ABC):
    """Scores outputs. Pure: no I/O, no model calls (ask for `Needs` instead).

    A metric reduces each sample to a row of sufficient statistics; the corpus score is
    a function of their sum. That one shape gives per-sample scores, corpus scores,
    bootstrap confidence intervals and paired tests for every metric, including
    corpus-level ones such as BLEU whose score is not a mean of sentence scores.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = NoArgs

    def needs(self, args: BaseModel) -> Needs:
        return Needs()

    @abstractmethod
    def statistics(self, items: Sequence[Item], args: BaseModel) -> np.ndarray:
        """A float array of shape (len(items), k): each sample's sufficient statistics."""

    @abstractmethod
    def from_statistics(self, totals: np.ndarray, args: BaseModel) -> np.ndarray:
        """Scores from statistics summed over samples: shape (..., k) -> (...)."""

    def sample_scores(self, stats: np.ndarray, args: BaseModel) -> np.ndarray:
        """Per-sample scores from per-sample statistics; by default the corpus formula per row."""
        return np.asarray(self.from_statistics(stats, args), dtype=float)


class Detector(ABC):
    """Finds issues in outputs. Pure: no I/O, no model calls (ask for `Needs` instead).

    `detect` sees the whole run at once so that it can vectorise and compare samples
    (paraphrases, draws); it returns one iterable of issues per item, in order.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = NoArgs

    def needs(self, args: BaseModel) -> Needs:
        return Needs()

    @abstractmethod
    def detect(self, items: Sequence[Item], args: BaseModel) -> Sequence[Iterable[Issue]]:
        """One iterable of issues per item."""


class Backend(ABC):
    """Runs a model: generates completions and scores continuations. Holds the model."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoArgs
    speed_only_options: ClassVar[frozenset[str]] = frozenset()
    """Options that change how fast outputs come, never what they are (batch sizes,
    concurrency, retries): left out of a run's identity, so changing them reuses the run."""

    def __init__(self, spec: ModelSpec, options: BaseModel):
        self.spec = spec
        self.options = options

    @property
    @abstractmethod
    def checkpoint_hash(self) -> str:
        """A content hash of the weights (base and adapter)."""

    @property
    def output_hash(self) -> str:
        """What decides the outputs, as the generation cache's key and part of a run's
        identity: the checkpoint and, for a backend that can compute in reduced precision
        (bfloat16, int8), the number format it computes in. The checkpoint hash where the
        format is the checkpoint's own float32."""
        return self.checkpoint_hash

    def describe(self) -> dict[str, Any]:
        """What the run header shows and stores about the loaded model."""
        return {"path": self.spec.path, "adapter": self.spec.adapter}

    def chat_template(self) -> Callable[[list[dict[str, str]]], str] | None:
        """The tokenizer's chat template as a function, or None when there is none."""
        return None

    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt and output) the model can attend to, when known; a
        `max_new_tokens` above it is refused before a run is recorded."""
        return None

    def format_prompt(self, sample: Sample, prompt: PromptConfig) -> str:
        return render_prompt(sample, prompt, self.chat_template())

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        *,
        seeds: Sequence[int] | None = None,
        progress: Progress | None = None,
    ) -> list[Completion]:
        """One completion per prompt, in order. `seeds` (one per prompt) make sampling
        reproducible whatever the batch; greedy decoding ignores them."""

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[tuple[float, int]]:
        """(summed negative log-likelihood, token count) of each continuation given its context."""
        raise NotImplementedError(f"backend {self.name!r} cannot score continuations")

    def close(self) -> None:
        """Free the model."""


class Featurizer(ABC):
    """Turns failing samples into vectors for clustering."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = NoArgs

    @abstractmethod
    def featurize(self, failures: Sequence[Failure], args: BaseModel) -> np.ndarray:
        """A float array of shape (len(failures), d)."""


class Clusterer(ABC):
    """Groups feature vectors; chooses the number of groups itself."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = NoArgs

    @abstractmethod
    def cluster(self, features: np.ndarray, args: BaseModel) -> np.ndarray:
        """One integer label per row; -1 marks a point that belongs to no cluster."""


class DataSource(ABC):
    """Finds or writes training examples aimed at one cluster of failures."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = NoArgs

    def preflight(self, suite: Suite, args: BaseModel) -> None:
        """Check what the source needs (its pool file, its model) before anything is
        written; raise a HarnessError naming the problem. Nothing to check by default."""

    @abstractmethod
    def gather(self, request: DataRequest, args: BaseModel) -> list[TrainingExample]:
        """Up to `request.budget` candidates, each with its provenance."""


@dataclass(frozen=True)
class DataRequest:
    """Ask a data source for up to `budget` training examples aimed at `cluster`."""

    cluster: Cluster
    failures: tuple[Failure, ...]
    """The cluster's failing samples (sample, output, issues, scores)."""
    budget: int
    suite: Suite
    """The suite the failures come from: its pool, prompt format and default instruction."""
    seed: int = 0
    embedder: Callable[[], Embedder] | None = None
    """Returns the shared sentence embedder (loaded on first call)."""
    make_backend: Callable[[ModelSpec], Backend] | None = None
    """Loads a model through any backend plugin (for the teacher source)."""
    exclude_inputs: frozenset[str] = field(default_factory=frozenset)
    """Normalised inputs of eval items: never propose them (curation checks again)."""
    on_drop: Callable[[str, int], None] | None = None
    """Report candidates the source itself discarded (reason, count), e.g. unparsable
    teacher outputs; they appear in the manifest's drop counts."""
    reporter: Reporter | None = None
    """Progress bars for long work (embedding, generation); silent when None."""

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator seeded by the request's seed, its cluster and `salt`: the same
        request draws the same numbers, different clusters draw different ones."""
        return np.random.default_rng([self.seed, self.cluster.id + 1, salt])

    def drop(self, reason: str, count: int = 1) -> None:
        if self.on_drop is not None and count:
            self.on_drop(reason, count)

    def progress(self) -> Reporter:
        return self.reporter or NullReporter()

    def get_embedder(self) -> Embedder:
        if self.embedder is not None:
            return self.embedder()
        from harness.components.embedding import default_embedder

        return default_embedder()

    def is_excluded(self, instruction: str, input: str) -> bool:
        return input_key(instruction, input) in self.exclude_inputs



class Trainer(ABC):
    """Fine-tunes a checkpoint on a dataset and returns the new checkpoint."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Args: ClassVar[type[BaseModel]] = NoArgs

    @abstractmethod
    def train(
        self,
        base: ModelSpec,
        train: Sequence[TrainingExample],
        validation: Sequence[TrainingExample],
        output_dir: Path,
        args: BaseModel,
        *,
        prompt: PromptConfig,
        progress: Progress | None = None,
    ) -> TrainingOutcome:
        """Train, save the result under output_dir, and say what happened."""


class ReportView(ABC):
    """Builds one kind of report (a run, a comparison, a loop's history) as a Document."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def build(self, queries: Queries, **params: Any) -> Document:
        """Read what the report needs through the query layer and lay it out."""


# ---------------------------------------------------------------------------
# Plain functions as components
# ---------------------------------------------------------------------------


def _args_model(fn: Callable[..., Any], skip: int, owner: str) -> type[BaseModel]:
    """A pydantic model of `fn`'s keyword arguments after the first `skip` positional ones."""
    fields: dict[str, Any] = {}
    params = list(inspect.signature(fn).parameters.values())[skip:]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{owner}: *args/**kwargs are not supported in component arguments")
        if param.default is param.empty:
            raise TypeError(f"{owner}: argument {param.name!r} needs a default value")
        annotation = param.annotation if param.annotation is not param.empty else Any
        fields[param.name] = (annotation, param.default)
    return create_model(
        f"{owner.title().replace('_', '')}Args",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )


class FunctionDetector(Detector):
    """A detector made from a function `fn(item, **args) -> Issue | Iterable[Issue] | None`."""

    def __init__(self, fn: Callable[..., Any], name: str, description: str):
        self.fn = fn
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.Args = _args_model(fn, 1, name)  # type: ignore[misc]

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        kwargs = args.model_dump()
        found: list[list[Issue]] = []
        for item in items:
            result = self.fn(item, **kwargs)
            if result is None:
                found.append([])
            elif isinstance(result, Issue):
                found.append([result])
            else:
                found.append(list(result))
        return found


class FunctionMetric(Metric):
    """A metric made from a per-sample function `fn(item, **args) -> float`; corpus = mean."""

    def __init__(self, fn: Callable[..., float], name: str, higher_is_better: bool, description: str):
        self.fn = fn
        self.name = name  # type: ignore[misc]
        self.higher_is_better = higher_is_better  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.Args = _args_model(fn, 1, name)  # type: ignore[misc]

    def statistics(self, items: Sequence[Item], args: BaseModel) -> np.ndarray:
        """(value, 1) per sample. A NaN value stays NaN: scoring leaves that sample out of
        the mean and records it as this plugin's error on the sample (hook
        `Metric.statistics`), rather than blanking the corpus score."""
        kwargs = args.model_dump()
        values = [float(self.fn(item, **kwargs)) for item in items]
        return np.column_stack([values, np.ones(len(values))]) if values else np.zeros((0, 2))

    def from_statistics(self, totals: np.ndarray, args: BaseModel) -> np.ndarray:
        return mean_from_statistics(totals)


def mean_from_statistics(totals: np.ndarray) -> np.ndarray:
    """For (value, count) statistics: the mean value."""
    totals = np.asarray(totals, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals[..., 0] / totals[..., 1]


def _first_doc_line(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def detector(
    name: str | None = None, *, description: str | None = None
) -> Callable[[Callable[..., Any]], FunctionDetector]:
    """Make a detector from a function of one `Item` and keyword arguments with defaults.

    >>> @detector("shouting")
    ... def shouting(item, min_ratio: float = 0.5):
    ...     letters = [c for c in item.output if c.isalpha()]
    ...     if letters and sum(c.isupper() for c in letters) / len(letters) >= min_ratio:
    ...         return Issue(severity=1.0, message="output is mostly capitals")
    """

    def wrap(fn: Callable[..., Any]) -> FunctionDetector:
        return FunctionDetector(fn, name or fn.__name__, description or _first_doc_line(fn))

    return wrap


def metric(
    name: str | None = None, *, higher_is_better: bool = True, description: str | None = None
) -> Callable[[Callable[..., float]], FunctionMetric]:
    """Make a mean-aggregated metric from a per-sample function `fn(item, **args) -> float`."""

    def wrap(fn: Callable[..., float]) -> FunctionMetric:
        return FunctionMetric(
            fn, name or fn.__name__, higher_is_better, description or _first_doc_line(fn)
        )

    return wrap


COMPONENT_KINDS: dict[str, type] = {
    "metric": Metric,
    "detector": Detector,
    "backend": Backend,
    "featurizer": Featurizer,
    "clusterer": Clusterer,
    "data_source": DataSource,
    "trainer": Trainer,
    "report": ReportView,
}
"""Every kind of component, with the class its instances must be (backends: subclass)."""
