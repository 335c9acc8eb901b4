"""What a data source is asked for: one cluster of failures, a budget, and context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.clustering import Cluster, Failure
from harness.suite import Suite

if TYPE_CHECKING:
    from harness.components import Backend
    from harness.embedding import Embedder
    from harness.types import ModelSpec


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
