"""The hallucination detector: grounding and self-consistency evidence, the more severe
of the two reported, each method's severity kept."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.plugins.detectors.hallucination import Hallucination
from harness.testing import item

DETECTOR = Hallucination()
DRAWS_19 = ("The answer is 19.", "12 plus 7 is 19.", "19", "It is 19.")


def detect(output: str, args: dict | None = None, **kw):
    return list(DETECTOR.detect([item(output, **kw)], DETECTOR.Args(**(args or {})))[0])


def test_self_consistency_catches_what_grounding_cannot() -> None:
    # No numbers given, so grounding has nothing to check a made-up year against the
    # instruction alone; the draws disagree with it.
    (issue,) = detect(
        "The Eiffel Tower was finished in 1912.",
        instruction="When was the Eiffel Tower finished?",
        draws=("It was finished in 1889.", "In 1889.", "1889.", "The tower opened in 1889."),
    )
    assert issue.severity >= 0.5
    assert set(issue.data["methods"]) == {"grounding", "self_consistency"}
    assert issue.data["severities"]["self_consistency"] >= 0.5


def test_grounding_catches_a_confident_contradiction_of_the_input() -> None:
    output = "Alice paid 40 dollars."
    draws = (output,) * 4  # the model says it every time: self-consistency sees nothing
    (issue,) = detect(output, input="Alice paid 25 dollars for the book.", reference="25", draws=draws)
    assert issue.data["method"] == "grounding" and issue.kind.startswith("grounding:")
    assert output[issue.start : issue.end] == "40"
    assert issue.data["severities"]["self_consistency"] < issue.data["severities"]["grounding"]


def test_a_supported_consistent_answer_is_clean() -> None:
    assert detect("12 plus 7 is 19.", instruction="What is 12 plus 7?", draws=DRAWS_19) == []


def test_needs_draws_only_with_self_consistency() -> None:
    assert DETECTOR.needs(DETECTOR.Args()).draws == 4
    assert DETECTOR.needs(DETECTOR.Args(methods=["grounding"])).draws == 0
    assert DETECTOR.needs(DETECTOR.Args(self_consistency={"draws": 6})).draws == 6


def test_without_draws_grounding_alone_judges_and_says_so() -> None:
    (issue,) = detect("The answer is 21.", instruction="What is 12 plus 7?")
    assert issue.data["methods"] == ["grounding"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValidationError):
        DETECTOR.Args(methods=["vibes"])
    with pytest.raises(ValidationError):
        DETECTOR.Args(methods=[])
    with pytest.raises(ValidationError):
        DETECTOR.Args(grounding={"numbr_weight": 2})
