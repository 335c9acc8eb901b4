"""The length detector: too long, too short, empty, over budget, truncated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.plugins.detectors.length import Length
from harness.testing import item

DETECTOR = Length()


def detect(it, **args):
    return {i.kind: i for i in DETECTOR.detect([it], DETECTOR.Args(**args))[0]}


def test_too_long_points_past_the_allowed_length() -> None:
    words = [a + b for a in "abcde" for b in "fghijklm"]  # 40 distinct words
    output = " ".join(words) + "."
    issue = detect(item(output, reference="a b c d e"))["too_long"]
    # 3.0 x (5 + 5 slack) - 5 slack = 25 words are allowed
    assert output[issue.start : issue.end].startswith(words[25] + " ")
    assert issue.end == len(output)
    assert issue.severity >= 0.5
    assert issue.data == {"words": 40, "reference_words": 5, "ratio": 4.5}


def test_framed_short_answers_are_not_too_long() -> None:
    assert detect(item("The answer is 19.", reference="19")) == {}


def test_too_short() -> None:
    issue = detect(item("Charity.", reference=" ".join(["word"] * 25)))["too_short"]
    assert issue.severity >= 0.5 and issue.start is None


def test_closest_reference_counts() -> None:
    output = " ".join(["word"] * 30)
    assert "too_long" in detect(item(output, reference="short"))
    assert detect(item(output, reference=["short", " ".join(["x"] * 28)])) == {}


def test_empty_output() -> None:
    for output in ("", "  \n", "?!"):
        issue = detect(item(output, reference="19"))["empty"]
        assert issue.severity == 1.0
    assert "empty" in detect(item(""))  # with or without a reference


def test_no_reference_means_no_ratio() -> None:
    assert detect(item(" ".join(["word"] * 500))) == {}


def test_truncated_mid_sentence_points_at_the_fragment() -> None:
    output = "Democracy is government by the people. In a democracy, citizens have the right to"
    issue = detect(item(output, finish_reason="length", completion_tokens=16))["truncated"]
    assert output[issue.start : issue.end] == "In a democracy, citizens have the right to"
    assert issue.severity == 0.9 and issue.data["mid_sentence"] is True


def test_truncated_at_a_sentence_boundary_is_milder() -> None:
    issue = detect(item("It is frugal. ", finish_reason="length"))["truncated"]
    assert issue.severity == 0.5 and issue.start is None
    assert (
        detect(item("It is frugal.", finish_reason="length"), truncated_at_boundary_severity=0.1)
        == {}
    )


def test_finished_outputs_are_not_truncated() -> None:
    for reason in ("eos", "stop"):
        assert "truncated" not in detect(item("It is cut off in the mid", finish_reason=reason))


def test_token_budget() -> None:
    it = item("some words", completion_tokens=150)
    assert "over_budget" not in detect(it)  # no budget by default
    issue = detect(it, max_tokens=100)["over_budget"]
    assert issue.severity == pytest.approx(0.75)
    assert detect(item("x", completion_tokens=300), max_tokens=100)["over_budget"].severity == 1.0
    assert "over_budget" not in detect(item("x", completion_tokens=100), max_tokens=100)


def test_argument_validation() -> None:
    with pytest.raises(ValidationError):
        DETECTOR.Args(max_ratio=0.5)
    with pytest.raises(ValidationError):
        DETECTOR.Args(max_tokens=0)
