"""The grounding detector: unsupported numbers, names and content words."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.plugins.detectors.grounding import Grounding
from harness.testing import item

DETECTOR = Grounding()


def detect(output: str, **kw):
    args = kw.pop("args", {})
    return list(DETECTOR.detect([item(output, **kw)], DETECTOR.Args(**args))[0])


def test_a_wrong_number_is_the_evidence() -> None:
    output = "8 times 7 is 54."
    (issue,) = detect(output, instruction="What is 8 times 7?", reference="56")
    assert output[issue.start : issue.end] == "54"
    assert issue.kind == "unsupported_number"
    assert issue.data["numbers"] == ["54"] and issue.severity >= 0.5


def test_arithmetic_on_the_question_supports_the_answer() -> None:
    assert detect("12 plus 7 equals 19.", instruction="What is 12 plus 7?") == []
    assert detect("The answer is 21.", instruction="What is 12 plus 7?")[0].severity >= 0.5
    assert detect(
        "The answer is 21.", instruction="What is 12 plus 7?", args={"arithmetic": False}
    )[0]
    assert detect("25% of 80 is 20.", instruction="What is 25% of 80?") == []


def test_numbers_in_words_match_digits() -> None:
    assert detect("Forty-two.", instruction="Write 42 in words.") == []
    (issue,) = detect("Twenty-four.", instruction="Write 42 in words.")
    assert issue.data["unsupported"] == ["Twenty-four"]
    assert detect("One thousand, two hundred and five.", instruction="Write 1,205 in words.") == []


def test_names_outweigh_content_and_the_worst_is_the_evidence() -> None:
    output = 'The word "ephemeral" refers to a butterfly found in South America.'
    (issue,) = detect(
        output, instruction='Define the word "ephemeral".', reference="lasting a very short time"
    )
    assert issue.kind == "unsupported_name"
    assert output[issue.start : issue.end] == "South"
    assert issue.data["names"] == ["South", "America"]
    assert "butterfly" in issue.data["unsupported"]


def test_paraphrase_of_the_reference_is_supported() -> None:
    output = "Gregarious people are sociable and tend to associate with others."
    issues = detect(
        output,
        instruction='Define "gregarious".',
        reference="tending to associate with others; sociable",
    )
    assert all(i.severity < 0.5 for i in issues)


def test_content_words_need_an_input_or_a_reference() -> None:
    output = "A quokka is a small, cute animal with a round face."
    assert detect(output, instruction='Define the word "quokka".') == []
    issues = detect(
        output, instruction='Define the word "quokka".', args={"content_needs_context": False}
    )
    assert issues and issues[0].kind == "unsupported_content"
    # names are judged even without context
    (issue,) = detect("A quokka lives in Perth.", instruction='Define the word "quokka".')
    assert issue.data["names"] == ["Perth"]


def test_the_input_supports_claims() -> None:
    passage = (
        "The Amazon flows through Brazil, Peru and Colombia. It is about 6,400 kilometres long."
    )
    assert (
        detect("The Amazon is about 6,400 kilometres long.", instruction="Answer.", input=passage)
        == []
    )
    (issue,) = detect(
        "The Amazon is about 7,100 kilometres long.", instruction="Answer.", input=passage
    )
    assert issue.data["numbers"] == ["7,100"]


def test_empty_unicode_and_nothing_to_check() -> None:
    assert detect("", reference="x") == []
    assert detect("The answer.", reference="x") == []  # only framing words
    issues = detect("Ефемерний означає «короткочасний» 1999.", reference="lasting a short time")
    (issue,) = issues
    assert issue.data["numbers"] == ["1999"]


def test_argument_validation() -> None:
    with pytest.raises(ValidationError):
        DETECTOR.Args(number_weight=-1)
    assert (
        DETECTOR.Args().number_weight > DETECTOR.Args().name_weight > DETECTOR.Args().content_weight
    )
