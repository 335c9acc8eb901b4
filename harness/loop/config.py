"""What defines a loop (its configuration, and so its identity for resuming) and what
it returns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.suite.load import Suite

STEPS = ("started", "clustered", "data", "trained", "evaluated", "decided")


class LoopConfig(BaseModel):
    """Everything that defines a loop (and so its identity, for resuming)."""

    model_config = ConfigDict(extra="forbid")

    suite: str
    model: str = "default"
    adapter: str | None = None
    backend: str = "hf"
    backend_options: dict[str, Any] = Field(default_factory=dict)
    iterations: int = Field(2, ge=1)
    trainer: str = "lora"
    trainer_args: dict[str, Any] = Field(default_factory=dict)
    source: str = "pool"
    source_args: dict[str, Any] = Field(default_factory=dict)
    selection: Literal["targeted", "random", "random_on_task", "none"] = "targeted"
    """targeted: rows aimed at the clusters; random / random_on_task: the equal-budget
    controls (a uniform draw from the pool, or from its rows of the suite's own task);
    none: the "no new data" control, which retrains on the seed dataset alone."""
    seed_data: str | None = None
    """A training file (JSONL rows, `harness.data.seed`) every iteration trains on, before
    the rows the loop adds; curated against every split of the suite and the guard."""
    budget: int = Field(200, ge=1)
    """New training rows gathered per iteration."""
    retrain_from: Literal["base", "last"] = "base"
    """base: retrain the starting model on the grown dataset (LLM2LLM); last: continue the
    last accepted adapter on the new rows plus replay of earlier ones."""
    replay_ratio: float = Field(0.5, ge=0)
    """With retrain_from=last: earlier rows mixed in, as a share of the new rows."""
    guard: str | None = "general"
    """The suite that guards against forgetting; None evaluates the target suite only."""
    guard_metrics: list[str] | None = None
    """Guard metrics that must be shown non-inferior within their margins (default: the
    guard suite's main metric)."""
    featurizer: str = "embedding"
    featurizer_args: dict[str, Any] = Field(default_factory=dict)
    clusterer: str = "agglomerative"
    clusterer_args: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1)
    guard_limit: int | None = Field(None, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: int = 0
    resamples: int = Field(1000, ge=100)
    train_seeds: int = Field(1, ge=1)
    """Adapters trained per iteration, with seeds seed, seed+1, ...; the decision averages
    them and counts the spread between seeds (`harness.score.comparison.compare_seeds`)."""
    fixed_iterations: bool = False
    """Run every iteration whatever the decisions, each building on the one before it
    (accepted or not); decisions are still taken and recorded. For comparisons at equal
    budget, where an early stop must not end one arm sooner than another."""

    @model_validator(mode="after")
    def _no_new_data_has_a_seed(self) -> LoopConfig:
        if self.selection == "none" and not self.seed_data:
            raise ValueError(
                "--selection none (the no-new-data control) retrains on a seed dataset alone: give one "
                "with --seed-data FILE"
            )
        if self.selection == "none" and self.retrain_from != "base":
            raise ValueError("--selection none retrains the starting model on the seed: use --retrain-from base")
        return self



@dataclass
class IterationResult:
    iteration: int
    decision: str
    reason: str
    accepted: bool
    eval_run_id: int
    """The held-out split's run, which the decision used."""
    guard_run_id: int | None
    main_value: float | None
    """The main metric on the held-out split."""
    mining_run_id: int | None = None
    mining_value: float | None = None
    """The main metric on the mining split (whose failures the next iteration targets)."""


@dataclass
class LoopResult:
    loop_id: int
    iterations: list[IterationResult]
    final_iteration: int
    stop_reason: str
    resumed: bool


def loop_fingerprint(
    config: LoopConfig, suite: Suite, guard: Suite | None, model_hash: str, seed_hash: str | None = None
) -> str:
    # Options added later keep their defaults out of the identity, so that loops started
    # before they existed keep their fingerprints (and so their resumption).
    dumped = config.model_dump(mode="json")
    if dumped["train_seeds"] == 1:
        del dumped["train_seeds"]
    if not dumped["fixed_iterations"]:
        del dumped["fixed_iterations"]
    if dumped["seed_data"] is None:
        del dumped["seed_data"]
    identity: dict[str, Any] = {
        "config": dumped,
        "suite": suite.hash,
        "guard": guard.hash if guard else None,
        "model": model_hash,
        # A loop made before splits existed mined and decided on the same samples: it is
        # never resumed as a split loop.
        "splits": {"mining": suite.mining_split, "heldout": suite.heldout_split, "auto": suite.auto_split},
    }
    if seed_hash is not None:
        identity["seed_data"] = seed_hash  # the file's content, not only its name
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
