"""Labelled fixtures for the built-in detectors, and precision/recall on them.

Each detector has `fixtures/<detector>.jsonl`: one item per line, written for the
purpose (realistic outputs of a small instruction model defining words, writing numbers
in words and doing arithmetic), with

    id, split ("dev" or "test"), label (true: the detector should flag it), note (why),
    instruction, input, reference (a string or a list), output, and where it matters
    finish_reason, completion_tokens, draws (re-sampled outputs), group (paraphrases).

Thresholds and weights were tuned on the dev split; the tests assert on the test split.
An item is flagged when the detector reports an issue of severity >= 0.5 for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.components.plugin_manager import load_plugins
from harness.components.registry import Registry
from harness.score.scoring import ResolvedDetector, run_detector
from harness.suite.config import DetectorConfig
from harness.testing import item
from harness.types import Item

FIXTURES = Path(__file__).parent / "fixtures"
DETECTORS = (
    "repetition",
    "length",
    "grounding",
    "self_consistency",
    "misspelling",
    "inconsistency",
    "hallucination",
)
THRESHOLD = 0.5


def load_fixture(name: str) -> list[dict[str, Any]]:
    rows = []
    with open(FIXTURES / f"{name}.jsonl", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                row["_line"] = number
                rows.append(row)
    return rows


def to_item(row: dict[str, Any]) -> Item:
    return item(
        row["output"],
        reference=row.get("reference", ""),
        input=row.get("input", ""),
        id=row["id"],
        instruction=row.get("instruction", ""),
        finish_reason=row.get("finish_reason", "eos"),
        completion_tokens=row.get("completion_tokens"),
        draws=row.get("draws", ()),
        group=row.get("group"),
    )


@dataclass(frozen=True)
class Calibration:
    detector: str
    split: str
    tp: int
    fp: int
    fn: int
    tn: int
    misses: tuple[str, ...]
    """Ids of the wrongly classified items, with their notes."""

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def calibrate(
    name: str, splits: Sequence[str] = ("dev", "test"), registry: Registry | None = None
) -> dict[str, Calibration]:
    """Run the registered detector with default arguments over its whole fixture file
    (groups span the file) and count, per split, how its flags match the labels."""
    registry = registry or load_plugins(autoload=False).registry
    registration = registry.get("detector", name)
    detector = registration.component
    resolved = ResolvedDetector(
        DetectorConfig(name=name), detector, detector.Args(), registration.plugin.name
    )
    rows = load_fixture(name)
    issues, errors = run_detector(resolved, [to_item(r) for r in rows])
    if errors:
        raise AssertionError(f"{name} failed on its fixtures: {errors[0].message}")
    flagged = {i.sample_id for i in issues if i.severity >= THRESHOLD}
    out = {}
    for split in splits:
        counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        misses = []
        for row in rows:
            if row["split"] != split:
                continue
            hit = row["id"] in flagged
            key = ("tp" if hit else "fn") if row["label"] else ("fp" if hit else "tn")
            counts[key] += 1
            if key in ("fp", "fn"):
                misses.append(f"{key} {row['id']}: {row['note']}")
        out[split] = Calibration(name, split, misses=tuple(misses), **counts)
    return out


def markdown_table(results: Sequence[Calibration]) -> str:
    lines = [
        "| detector | split | n | TP | FP | FN | TN | precision | recall |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.detector} | {r.split} | {r.n} | {r.tp} | {r.fp} | {r.fn} | {r.tn} "
            f"| {r.precision:.2f} | {r.recall:.2f} |"
        )
    return "\n".join(lines)
