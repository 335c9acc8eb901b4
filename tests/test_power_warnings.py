"""Before training the loop prints each watched metric's MDE beside its margin, and warns
when the suite is too small for the decision: a guard that cannot show non-inferiority,
a suite that cannot detect a gain of its margin."""

from __future__ import annotations

from typing import Any

from harness.loop.config import LoopConfig
from harness.loop.run import _Loop


def _lines(planned: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    loop = _Loop.__new__(_Loop)  # only the message logic: no suite, store or model
    loop.config = LoopConfig(suite="unused")
    loop._power = lambda previous: planned  # type: ignore[method-assign]
    return loop._power_lines({})


def test_power_lines_warn_only_where_the_mde_exceeds_the_margin() -> None:
    lines = _lines([
        {"suite": "dictionary", "metric": "chrf", "guard": False, "mde": 1.2, "margin": 0.74, "n": 200},
        {"suite": "general", "metric": "chrf", "guard": True, "mde": 9.8, "margin": 2.56, "n": 105},
        {"suite": "numbers", "metric": "wer", "guard": False, "mde": 0.05, "margin": 0.08, "n": 150},
        {"suite": "other", "metric": "bleu", "guard": True, "mde": None, "margin": 1.0, "n": 3},
    ])
    warnings = [text for text, warn in lines if warn]
    assert len(lines) == 5 and len(warnings) == 2
    assert lines[0] == (
        "power: dictionary chrf (200 samples) detects a change of 1.2 at alpha 0.05 with power 0.8 "
        "(an upper bound); margin 0.74", False,
    )
    assert "cannot detect a gain of its margin 0.74 (MDE 1.2)" in warnings[0]
    assert "guard general chrf (105 samples) is too small to show non-inferiority" in warnings[1]
    assert not any("numbers" in w or "other" in w for w in warnings)
