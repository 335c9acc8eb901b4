"""The repetition detector: loops, stutters, their evidence spans and arguments."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.plugins.detectors.repetition import (
    Repetition,
    longest_repeat,
    longest_stutter,
    seq_rep,
)
from harness.testing import item

DETECTOR = Repetition()


def detect(output: str, **args):
    return list(DETECTOR.detect([item(output)], DETECTOR.Args(**args))[0])


def test_a_loop_points_at_the_second_occurrence() -> None:
    sentence = "A dog is an animal that barks and wags its tail."
    output = f"{sentence} {sentence} {sentence}"
    (issue,) = detect(output)
    assert issue.kind == "loop" and issue.severity >= 0.5
    second = len(sentence) + 1
    assert issue.start == second
    assert output[issue.start : issue.end].startswith(sentence[:-1])
    assert issue.data["first_occurrence"][0] == 0
    assert issue.data["seq_rep_4"] > 0.5
    assert issue.data["longest_repeat_tokens"] >= 22


def test_a_stutter_points_at_the_repeats() -> None:
    output = "It is very very very very good."
    (issue,) = detect(output)
    assert issue.kind == "stutter"
    assert output[issue.start : issue.end] == "very very very"
    assert issue.data["longest_stutter"] == 4


def test_plain_text_and_a_doubled_word_are_not_flagged() -> None:
    assert detect('The word "ephemeral" means lasting for a very short time.') == []
    issues = detect("Bye bye, said the girl as she walked home.")
    assert all(i.severity < 0.5 for i in issues)


def test_low_diversity_from_compression() -> None:
    # a long output built from few words in varying order: no long exact repeat
    words = "red blue green red green blue blue red green".split()
    output = " ".join(words[(i * 7) % 9] for i in range(150))
    issues = detect(output, max_repeat_tokens=100, max_seq_rep=0.99)
    assert issues and issues[0].data["compression_ratio"] < 0.3


def test_severity_follows_the_arguments() -> None:
    output = "The answer is 56. The answer is 56."
    assert detect(output)[0].severity < 0.5
    assert detect(output, max_repeat_tokens=4)[0].severity >= 0.5
    assert detect(output, min_severity=0.99) == []


def test_short_outputs() -> None:
    assert detect("") == []
    assert detect("Yes.") == []
    assert detect("no no") == [] or detect("no no")[0].severity < 0.5


def test_helpers() -> None:
    assert seq_rep([1, 2, 3, 1, 2, 3], 3) == pytest.approx(1 - 3 / 4)
    assert seq_rep([1, 2], 4) == 0.0
    assert longest_repeat([5, 1, 2, 3, 9, 1, 2, 3, 7]) == (3, 1, 5)
    assert longest_repeat([1, 1, 1, 1])[0] == 3  # overlapping occurrences count (loops)
    assert longest_stutter([4, 1, 2, 1, 2, 1, 2, 9]) == (3, 1, 2)


def test_argument_validation() -> None:
    with pytest.raises(ValidationError):
        DETECTOR.Args(ngram=0)
    with pytest.raises(ValidationError):
        DETECTOR.Args(unknown=1)
