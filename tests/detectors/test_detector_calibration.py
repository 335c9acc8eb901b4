"""Precision and recall of every built-in detector on its labelled fixtures.

Run with `-s` to see the table; it is also written to test-artifacts/detector-calibration.md.
Thresholds were tuned on the dev split; the test split is what the assertions guard.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from detector_calibration import (
    DETECTORS,
    THRESHOLD,
    Calibration,
    calibrate,
    load_fixture,
    markdown_table,
)

from harness.components.plugin_manager import load_plugins

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MIN_PRECISION = 0.8
MIN_RECALL = 0.8


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Calibration]]:
    registry = load_plugins(autoload=False).registry
    return {name: calibrate(name, registry=registry) for name in DETECTORS}


def test_fixtures_are_labelled_and_balanced() -> None:
    for name in DETECTORS:
        rows = load_fixture(name)
        assert len(rows) >= 20, f"{name}: only {len(rows)} fixtures"
        for row in rows:
            where = f"{name}.jsonl:{row['_line']}"
            assert row["split"] in ("dev", "test"), where
            assert isinstance(row["label"], bool), where
            assert row["note"].strip(), f"{where}: every fixture says why it is labelled so"
        for split in ("dev", "test"):
            labels = [r["label"] for r in rows if r["split"] == split]
            assert sum(labels) >= 5 and len(labels) - sum(labels) >= 5, (
                f"{name} {split}: unbalanced"
            )
        assert len({r["id"] for r in rows}) == len(rows), f"{name}: duplicate ids"


def test_calibration_table(results: dict[str, dict[str, Calibration]]) -> None:
    rows = [results[name][split] for name in DETECTORS for split in ("dev", "test")]
    table = markdown_table(rows)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "detector-calibration.md").write_text(
        "# Detector calibration\n\n"
        f"An item is flagged when the detector reports an issue of severity >= {THRESHOLD} "
        "(default arguments). Fixtures: tests/detectors/fixtures/*.jsonl; thresholds were "
        "tuned on the dev split.\n\n"
        f"{table}\n",
        encoding="utf-8",
    )
    print("\n" + table)
    for r in rows:
        for miss in r.misses:
            print(f"  {r.detector} ({r.split}) {miss}")
    assert len(rows) == 2 * len(DETECTORS)


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize("split", ["dev", "test"])
def test_precision_and_recall(
    results: dict[str, dict[str, Calibration]], name: str, split: str
) -> None:
    r = results[name][split]
    detail = "; ".join(r.misses)
    assert r.precision >= MIN_PRECISION, f"{name} {split}: precision {r.precision:.2f} ({detail})"
    assert r.recall >= MIN_RECALL, f"{name} {split}: recall {r.recall:.2f} ({detail})"
