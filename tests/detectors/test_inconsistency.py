"""The inconsistency detector: paraphrase groups and re-sampled draws."""

from __future__ import annotations

import pytest

from harness.plugins.detectors.inconsistency import Inconsistency, extract_answer
from harness.testing import item

DETECTOR = Inconsistency()


def detect(items, **args):
    found = DETECTOR.detect(items, DETECTOR.Args(**args))
    return {it.sample.id: list(issues) for it, issues in zip(items, found, strict=True)}


def test_the_outvoted_answer_is_flagged_and_named() -> None:
    items = [
        item("12 plus 7 equals 19.", id="a", group="g", instruction="What is 12 plus 7?"),
        item("Nineteen.", id="b", group="g", instruction="Add 7 to 12."),
        item("You get 21.", id="c", group="g", instruction="Add twelve and seven."),
    ]
    found = detect(items)
    (issue,) = found["c"]
    assert issue.kind == "paraphrase" and issue.severity == 1.0
    assert items[2].output[issue.start : issue.end] == "21"
    assert issue.data["answer_type"] == "number"
    assert issue.data["answers"] == {"a": "19", "b": "19", "c": "21"}
    assert issue.data["conflicting"] == {"a": "19", "b": "19"}
    assert all(i.severity < 0.5 for i in found["a"] + found["b"])  # with the majority


def test_a_tie_flags_both_and_points_at_yes_no() -> None:
    items = [
        item("  No, 21 is not prime.", id="a", group="p"),
        item("Yes, 21 is a prime number.", id="b", group="p"),
    ]
    found = detect(items)
    assert found["a"][0].severity == found["b"][0].severity == 1.0
    assert items[0].output[found["a"][0].start : found["a"][0].end] == "No"
    assert found["a"][0].data["answer_type"] == "yes_no"


def test_agreeing_groups_and_single_members_give_nothing() -> None:
    items = [
        item("Forty-two.", id="a", group="n"),
        item("42 is spelled forty-two.", id="b", group="n", instruction="How do you spell 42?"),
        item("Paris.", id="c", group="c"),
        item("The capital of France is Paris.", id="d", group="c"),
        item("Lonely 7.", id="e", group="alone"),
        item("No group 8.", id="f"),
    ]
    assert all(v == [] for v in detect(items).values())


def test_long_answers_compare_by_chrf() -> None:
    items = [
        item("Arid means very dry, with little or no rain, like a desert.", id="a", group="d"),
        item(
            "The word arid describes a place that is cold, wet and covered in thick forests.",
            id="b",
            group="d",
        ),
    ]
    found = detect(items)
    assert found["a"][0].data["answer_type"] == "text" and found["a"][0].severity >= 0.5
    assert found["a"][0].start is None and "mean_chrf" in found["a"][0].data


def test_draws_judge_only_the_output() -> None:
    it = item(
        "8 times 7 is 56.",
        id="x",
        instruction="What is 8 times 7?",
        draws=["54", "It is 48.", "63", "56"],
    )
    (issue,) = detect([it])["x"]
    assert issue.kind == "resample" and issue.severity == 0.75
    assert issue.data["conflicting"] == {"draw 1": "54", "draw 2": "48", "draw 3": "63"}
    assert detect([it], resamples=False)["x"] == []
    grouped = [item("19", id="a", group="g"), item("21", id="b", group="g")]
    assert detect(grouped, paraphrases=False) == {"a": [], "b": []}


def test_answer_extraction() -> None:
    a = extract_answer("There are 180 minutes in 3 hours.", 6, "How many minutes are in 3 hours?")
    assert a is not None and a.number == 180  # the question's own number is not the answer
    b = extract_answer("One of the numbers is 12. Then 15.", 6)
    assert b is not None and b.number == 12  # the first sentence with a number
    assert extract_answer("   ", 6) is None
    c = extract_answer("True, it is.", 6)
    assert c is not None and c.yes_no == "yes" and c.yes_no_span == (0, 4)
    long = extract_answer("This answer is certainly much longer than six words.", 6)
    assert long is not None and long.words is None


def test_empty_outputs_are_left_out() -> None:
    items = [item("", id="a", group="g"), item("19", id="b", group="g")]
    assert detect(items) == {"a": [], "b": []}


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        DETECTOR.Args(min_chrf=0)
