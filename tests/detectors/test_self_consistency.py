"""The self_consistency detector: disagreement with re-sampled outputs."""

from __future__ import annotations

import pytest

from harness.components.plugin_manager import load_plugins
from harness.plugins.detectors.self_consistency import SelfConsistency
from harness.score.scoring import ResolvedDetector, run_detector
from harness.suite.config import DetectorConfig
from harness.testing import item

DETECTOR = SelfConsistency()


def detect(output: str, draws, **kw):
    args = kw.pop("args", {})
    return list(DETECTOR.detect([item(output, draws=draws, **kw)], DETECTOR.Args(**args))[0])


def test_a_claim_no_draw_repeats_is_the_evidence() -> None:
    output = "144 divided by 12 is 14."
    draws = ["144 divided by 12 is 12.", "The answer is 12.", "12", "144 / 12 = 12"]
    (issue,) = detect(output, draws, instruction="What is 144 divided by 12?")
    assert output[issue.start : issue.end] == "14"
    assert issue.kind == "unsupported" and issue.severity >= 0.5
    assert issue.data["unsupported"] == ["14"]
    assert issue.data["draws"] == 4


def test_agreeing_draws_give_nothing() -> None:
    draws = ["The answer is 19.", "12 plus 7 is 19.", "19", "Twelve plus seven equals nineteen."]
    assert detect("12 plus 7 equals 19.", draws, instruction="What is 12 plus 7?") == []


def test_divergent_draws_raise_the_similarity_part() -> None:
    output = "Quixotic means full of small holes."
    draws = [
        "Quixotic is a Spanish dance.",
        "A quixotic person is always angry.",
        "It means very fast.",
        "A kind of bird.",
    ]
    (issue,) = detect(output, draws, instruction='Define "quixotic".', args={"chrf_weight": 1.0})
    assert issue.kind == "divergent" and issue.severity >= 0.5
    assert issue.data["mean_chrf"] < 25 and issue.data["draws_mean_chrf"] < 40


def test_empty_output_and_unicode() -> None:
    assert detect("", ["An answer."]) == []
    issues = detect("Ефемерний — короткочасний.", ["Ефемерний — короткочасний.", "короткочасний"])
    assert all(i.severity < 0.5 for i in issues)


def test_missing_draws_are_an_error_for_that_sample() -> None:
    with pytest.raises(ValueError, match="no draws"):
        DETECTOR.detect([item("An answer.")], DETECTOR.Args())
    registration = load_plugins(autoload=False).registry.get("detector", "self_consistency")
    resolved = ResolvedDetector(
        DetectorConfig(name="self_consistency"),
        registration.component,
        DETECTOR.Args(),
        registration.plugin.name,
    )
    issues, errors = run_detector(
        resolved, [item("No draws here.", id="bare"), item("19", id="ok", draws=["19", "19"])]
    )
    assert [e.sample_id for e in errors] == ["bare"]
    assert "no draws" in errors[0].message
    assert issues == []


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        DETECTOR.Args(draws=0)
    with pytest.raises(ValueError):
        DETECTOR.Args(min_support=0)
