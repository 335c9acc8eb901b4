"""The shared text helpers: tokens, numbers, normalisation, arithmetic support, chrF."""

from __future__ import annotations

import pytest
import sacrebleu

from harness.plugins.detectors._chrf import chrf, pairwise_chrf
from harness.plugins.detectors._text import (
    claims,
    derived_numbers,
    number_key,
    numbers,
    stem,
    tokens,
)


def spans(text: str) -> list[tuple[float, str]]:
    return [(n.value, text[n.start : n.end]) for n in numbers(text)]


def test_numbers_in_digits_and_words() -> None:
    text = "forty-two, one hundred and five, 1,000 and 3.5; two thousand three hundred forty-five"
    assert spans(text) == [
        (42, "forty-two"),
        (105, "one hundred and five"),
        (1000, "1,000"),
        (3.5, "3.5"),
        (2345, "two thousand three hundred forty-five"),
    ]


def test_numbers_do_not_run_together() -> None:
    assert spans("one two three") == [(1, "one"), (2, "two"), (3, "three")]
    assert spans("three and four") == [(3, "three"), (4, "four")]
    assert spans("One thousand, two hundred and five.") == [
        (1205, "One thousand, two hundred and five")
    ]
    assert spans("Version 1.2.3 is out.") == []


def test_stem_maps_inflections_together() -> None:
    groups = [
        ("lasting", "lasts", "last"),
        ("defined", "defines", "define"),
        ("running", "run"),
        ("cities", "city"),
        ("boxes", "box"),
        ("used", "use"),
        ("model's", "models", "model"),
    ]
    for group in groups:
        assert len({stem(w) for w in group}) == 1, group
    assert stem("Analysis") == "analysis"  # -is is not a plural


def test_sentence_initial_tokens() -> None:
    toks = tokens('The word "Paris" means a city. Rome is too!\nLondon')
    initial = [t.text for t in toks if t.initial]
    assert initial == ["The", "Rome", "London"]


def test_derived_numbers_use_each_operand_once() -> None:
    derived = derived_numbers([12, 7])
    assert {19.0, 5.0, 84.0, 144.0} <= derived
    assert 21.0 not in derived and 14.0 not in derived  # 7 + 7 would need 7 twice
    assert 14.0 in derived_numbers([7, 7])  # ... unless the question gives it twice
    assert 17.0 in derived_numbers([3, 4, 5])  # 3 x 4 + 5
    assert number_key(0.1 + 0.2) == number_key(0.3)


def test_claims_leave_out_what_the_instruction_says() -> None:
    found = claims(
        "8 times 7 is 54, says Ada Lovelace.", judge_content=True, echoes_of="What is 8 times 7?"
    )
    assert [(c.text, c.category) for c in found] == [
        ("54", "number"),
        ("says", "content"),
        ("Ada", "name"),
        ("Lovelace", "name"),
    ]


@pytest.mark.parametrize(
    "hyp,ref",
    [
        ("The answer is 19.", "The answer is 21."),
        ("Ephemeral means lasting a very short time.", "Something ephemeral lasts only briefly."),
        ("abc", ""),
        ("", "abc"),
        ("naïve café — 短暂", "naive cafe"),
    ],
)
def test_chrf_is_sacrebleu_sentence_chrf(hyp: str, ref: str) -> None:
    assert chrf(hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score, abs=1e-9)


def test_pairwise_chrf_is_symmetric_and_can_score_one_row() -> None:
    texts = ["The answer is 19.", "It is 19.", "Nineteen", ""]
    full = pairwise_chrf(texts)
    assert (full == full.T).all()
    expected = (
        sacrebleu.sentence_chrf(texts[0], [texts[1]]).score
        + sacrebleu.sentence_chrf(texts[1], [texts[0]]).score
    ) / 2
    assert full[0, 1] == pytest.approx(expected)
    assert full[0, 3] == 0.0 and full[3, 3] == 100.0
    row = pairwise_chrf(texts, rows=[0])
    assert row[0] == pytest.approx(full[0])
    assert pairwise_chrf(["", ""])[0, 1] == 100.0
