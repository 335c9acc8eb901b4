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
    loop._power = lambda previous, observed=None: planned  # type: ignore[method-assign]
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
        "(an upper bound: errors assumed independent); margin 0.74", False,
    )
    assert "cannot detect a gain of its margin 0.74 (MDE 1.2)" in warnings[0]
    # Before any decision only the independent-errors bound exists: a warning, no forecast.
    assert "guard general chrf (105 samples) may be too small to show non-inferiority" in warnings[1]
    assert "stays level" not in warnings[1]  # no forecast from the bound
    assert not any("numbers" in w or "other" in w for w in warnings)


def test_a_measured_paired_mde_decides_the_warning() -> None:
    """Perplexity's bound can be ten times its margin while the paired comparisons of a
    base model and its fine-tune are well inside it: once a decision has measured the
    paired MDE, that is the figure printed and judged."""
    lines = _lines([
        {"suite": "general", "metric": "perplexity", "guard": True, "mde": 2.71, "margin": 0.23, "n": 105,
         "paired_mde": 0.12, "paired_from": 1},
        {"suite": "general", "metric": "chrf", "guard": True, "mde": 9.8, "margin": 2.56, "n": 105,
         "paired_mde": 8.4, "paired_from": 2},
    ])
    warnings = [text for text, warn in lines if warn]
    assert lines[0] == (
        "power: general perplexity (105 samples) detects a change of 0.12 at alpha 0.05 with power 0.8 "
        "(paired, as measured at iteration 1; the independent-errors bound is 2.71); margin 0.23", False,
    )
    assert len(warnings) == 1 and "chrf" in warnings[0]
    assert "(paired MDE 8.4 at iteration 2): a guard that stays level will most likely roll the loop back" \
        in warnings[0]


def test_the_paired_mde_is_read_from_the_stored_comparison() -> None:
    from harness.loop.decide import _observed_mde

    observed = {"iteration": 1, "comparison": {
        "metrics": [{"metric": "chrf", "mde": 1.5}],
        "guard": [{"metric": "chrf", "mde": 9.0}, {"metric": "perplexity", "mde": 0.2}],
    }}
    assert _observed_mde(observed, "guard", "perplexity") == 0.2
    assert _observed_mde(observed, "metrics", "chrf") == 1.5
    assert _observed_mde(observed, "guard", "bleu") is None
    assert _observed_mde(None, "guard", "chrf") is None
