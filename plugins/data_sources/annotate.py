"""The `annotate` data source: corrected failing samples from an annotation file.

`harness data export RUN --cluster K` writes a cluster's failures for people to
correct; this source (or `harness data import FILE`) reads the corrections back, with
the file format and its row-by-row validation in `harness.data.annotation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness import (
    DataRequest,
    DataSource,
    Suite,
    TrainingExample,
    corrections_to_examples,
    hookimpl,
    read_corrections,
)


class AnnotateArgs(BaseModel):
    """Arguments of the `annotate` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    """The corrected annotation file (.csv or .jsonl) written by `harness data export`."""


class AnnotateSource(DataSource):
    """People's corrections of the cluster's failing samples, from a file exported by
    `harness data export` and filled in (validated row by row before anything is used)."""

    name = "annotate"
    description = "corrected failing samples from an exported annotation file"
    Args = AnnotateArgs

    def preflight(self, suite: Suite, args: BaseModel) -> None:
        a: AnnotateArgs = args  # type: ignore[assignment]
        read_corrections(Path(a.path), (s.id for s in suite.samples), f"suite {suite.name!r}")

    def gather(self, request: DataRequest, args: BaseModel) -> list[TrainingExample]:
        a: AnnotateArgs = args  # type: ignore[assignment]
        path = Path(a.path)
        corrections = read_corrections(
            path, (s.id for s in request.suite.samples), f"suite {request.suite.name!r}"
        )
        members = set(request.cluster.members)
        mine = [c for c in corrections if c.sample_id in members][: request.budget]
        examples = corrections_to_examples(mine, path, request.suite.name, None)
        return [
            TrainingExample(e.instruction, e.input, e.output, e.source, request.cluster.id, e.provenance)
            for e in examples
        ]


@hookimpl
def harness_register_data_sources(registry: Any) -> None:
    registry.add_data_source(AnnotateSource())
