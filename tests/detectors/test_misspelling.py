"""The misspelling detector: the offline word list, inflections, and what it skips."""

from __future__ import annotations

import pytest

from harness.plugins.detectors._lexicon import english_words, known
from harness.plugins.detectors.misspelling import Misspelling
from harness.testing import item

DETECTOR = Misspelling()


def detect(output: str, **kw):
    args = kw.pop("args", {})
    return list(DETECTOR.detect([item(output, **kw)], DETECTOR.Args(**args))[0])


def words(output: str, **kw) -> list[str]:
    return [output[i.start : i.end] for i in detect(output, **kw)]


def test_the_word_list_is_the_installed_package() -> None:
    listed = english_words()
    assert len(listed) > 234_000
    assert {"ephemeral", "aardvark", "email", "colour", "women"} <= listed


def test_one_issue_per_distinct_word_at_its_first_occurrence() -> None:
    output = "Teh word meens a thing; it meens a verry small thing."
    issues = detect(output)
    assert [output[i.start : i.end] for i in issues] == ["Teh", "meens", "verry"]
    meens = issues[1]
    assert meens.start == output.index("meens") and meens.data == {"word": "meens", "count": 2}
    assert meens.severity == 0.8 and issues[0].severity == 0.6  # sentence-initial: maybe a name
    assert all(i.kind == "misspelling" for i in issues)


@pytest.mark.parametrize(
    "word",
    [
        "happily",
        "stopped",
        "bigger",
        "meanings",
        "cities",
        "boxes",
        "defining",
        "carried",
        "basically",
        "occurred",
        "beginning",
    ],
)
def test_regular_inflections_are_words(word: str) -> None:
    assert known(word)


@pytest.mark.parametrize(
    "word",
    [
        "recieve",
        "definately",
        "occured",
        "begining",
        "finaly",
        "basicly",
        "truely",
        "thier",
        "untill",
        "doesnt",
    ],
)
def test_common_misspellings_are_not(word: str) -> None:
    assert not known(word)


def test_what_is_not_checked() -> None:
    assert (
        words("A quokka is cute.", instruction='Define "quokka".') == []
    )  # given in the instruction
    assert words("It glorps.", reference="to glorp") == []  # given in the reference
    assert (
        words("He met Zendaya and the NASA team in McDonalds with an iPhone.") == []
    )  # names, acronyms
    assert words("You don't know; they're sure it's the model's.") == []  # contractions, possessive
    assert words("It has 3x and 42nd items, ok?") == []  # digits, short words
    assert words("A café with naïve décor.") == []  # accents are ignored
    assert words("Ефемерний і 短暂的.") == []  # not Latin script


def test_possessive_of_a_misspelt_word_is_checked() -> None:
    assert words("The goverment's plan.") == ["goverment's"]


def test_limits_and_arguments() -> None:
    output = " ".join(f"zq{c}xv" for c in "abcdefghij")
    assert len(detect(output, args={"max_issues": 3})) == 3
    assert detect(output, args={"severity": 0.1}) == []  # below min_severity
    assert detect("") == []
    with pytest.raises(ValueError):
        DETECTOR.Args(min_length=0)
