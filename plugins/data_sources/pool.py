"""The `pool` data source: rows of a candidate pool nearest a cluster of failures.

Targeted selection is two-stage (TF-IDF retrieval over the whole pool, then MiniLM
ranking of the retrieved candidates; see `_retrieval.py` beside this file). `selection: random`
draws the same number of rows uniformly instead (seeded): the baseline that shows
whether targeting helps; `selection: random_on_task` draws them uniformly from the rows
of the suite's own task (their instruction is one the suite's samples use), without
looking at the failures: the control that shows whether the clusters add anything
beyond finding the task. `explore: 0.5` (with targeted) draws half of each cluster's
rows that way and aims the other half. Either way a row whose input is an eval input is
never chosen.

A pool that mixes tasks (it holds rows whose instruction is none of the suite's) is
compared by task as well: the instruction becomes part of what is matched, on both
sides, without an option to set.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import DataSource, Suite, TrainingExample, hookimpl
from harness.plugins.data_sources._retrieval import (
    DIVERSITY,
    DataRequest,
    LexicalSettings,
    Pool,
    load_pool,
    nearest_rows,
    random_rows,
    resolve_pool_path,
    suite_task,
)


class PoolArgs(BaseModel):
    """Arguments of the `pool` source, with their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    """JSONL (or .jsonl.gz) of training rows; default: the suite's `pool:`."""
    selection: Literal["targeted", "random", "random_on_task"] = "targeted"
    """targeted: nearest neighbours of the cluster; random: a seeded uniform draw;
    random_on_task: a seeded uniform draw among the rows of the suite's own task."""
    candidate_factor: float = Field(10.0, ge=1.0)
    """Lexical candidates embedded per row returned."""
    ranking: Literal["round_robin", "centroid"] = "round_robin"
    """round_robin: each failing sample in turn takes its nearest remaining row;
    centroid: rows nearest the mean of the cluster's members."""
    analyzer: Literal["char_wb", "char", "word"] = "char_wb"
    """TF-IDF features of the lexical stage."""
    ngram_min: int = Field(3, ge=1)
    ngram_max: int = Field(5, ge=1)
    diversity: float = Field(DIVERSITY, ge=0.0, le=1.0)
    """round_robin: weight of novelty against similarity (maximal marginal relevance);
    0 takes each member's most similar rows, however alike they are."""
    include_instruction: bool | None = None
    """Compare instructions too. Default (None): yes when the pool mixes tasks (holds
    rows of other tasks than the suite's), else only the input and output."""
    explore: float = Field(0.0, ge=0.0, le=1.0)
    """With selection targeted: the share of each cluster's rows drawn uniformly among
    the rows of the suite's own task instead of aimed at the cluster (a uniform share
    keeps covering the task while the rest goes after the failures)."""

    def lexical(self, mixed: bool = False) -> LexicalSettings:
        include = mixed if self.include_instruction is None else self.include_instruction
        return LexicalSettings(self.analyzer, (self.ngram_min, max(self.ngram_min, self.ngram_max)), include)


def open_pool(suite: Suite, path: str | None) -> Pool:
    file, label = resolve_pool_path(suite, path)
    return load_pool(file, label, suite.config.instruction)


class PoolSource(DataSource):
    """Nearest neighbours of the cluster in a candidate pool (TF-IDF retrieval, then
    MiniLM ranking, round-robin over the failing samples), or a seeded random draw of the
    same size with `selection: random`. Defaults: the suite's pool, 10 candidates per
    row, char 3-5-grams."""

    name = "pool"
    description = "nearest pool rows to the cluster (TF-IDF then MiniLM), or a random draw"
    Args = PoolArgs

    def preflight(self, suite: Suite, args: BaseModel) -> None:
        """Read and validate the pool before anything is written."""
        a: PoolArgs = args  # type: ignore[assignment]
        open_pool(suite, a.path)

    def gather(self, request: DataRequest, args: BaseModel) -> list[TrainingExample]:
        a: PoolArgs = args  # type: ignore[assignment]
        pool = open_pool(request.suite, a.path)
        task = suite_task(request.suite)
        if a.selection == "random":
            picks: list[tuple[int, dict[str, Any]]] = [
                (i, {"selection": "random"}) for i in random_rows(request, pool, request.budget)
            ]
        elif a.selection == "random_on_task":
            picks = [
                (i, {"selection": "random_on_task"})
                for i in random_rows(request, pool, request.budget, among=pool.on_task(task))
            ]
        else:
            on_task = pool.on_task(task)
            explored = min(round(a.explore * request.budget), len(on_task))
            neighbours = nearest_rows(
                request,
                pool,
                request.budget - explored,
                candidate_factor=a.candidate_factor,
                ranking=a.ranking,
                lexical=a.lexical(mixed=pool.mixes_tasks(task)),
                diversity=a.diversity,
            )
            picks = [
                (
                    n.index,
                    {
                        "selection": "targeted",
                        "similarity": round(n.similarity, 4),
                        "nearest_sample": n.member,
                    },
                )
                for n in neighbours
            ]
            if explored:
                taken = np.array([n.index for n in neighbours], dtype=int)
                among = np.setdiff1d(on_task, taken, assume_unique=True)
                picks += [(i, {"selection": "explore"}) for i in random_rows(request, pool, explored, among=among)]
        out = []
        for index, extra in picks:
            row = pool.rows[index]
            out.append(
                TrainingExample(
                    instruction=row.instruction,
                    input=row.input,
                    output=row.output,
                    source=self.name,
                    cluster=request.cluster.id,
                    provenance={**pool.provenance(index), **extra, "family": pool.family(index)},
                )
            )
        return out


@hookimpl
def harness_register_data_sources(registry: Any) -> None:
    registry.add_data_source(PoolSource())
