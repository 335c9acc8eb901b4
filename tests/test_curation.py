"""Curation: normalisation, exact and near-duplicates, decontamination against eval suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.data.curation import DROP_REASONS, build_eval_index, curate, input_key, normalize
from harness.suite.load import load_suite
from harness.types import Sample, TrainingExample

DEFS = Path(__file__).parent / "data" / "datasets" / "defs"
INSTRUCTION = "Define the word in one sentence."


def row(input: str, output: str, instruction: str = INSTRUCTION, **provenance: object) -> TrainingExample:
    return TrainingExample(instruction, input, output, source="test", provenance=provenance)


@pytest.fixture(scope="module")
def index():
    return build_eval_index([load_suite(DEFS)])


def test_normalisation_folds_case_and_punctuation_but_keeps_operators() -> None:
    assert normalize("  Acquire. ") == normalize("acquire") == "acquire"
    assert normalize("3 + 4") != normalize("3 - 4")
    assert normalize("3+4") == normalize("3 + 4")
    assert input_key("Answer the question.", "") == "answer the question"
    assert input_key("Define it.", "ACQUIRE!") == "acquire"


def test_exact_duplicates_are_dropped_within_the_batch_and_against_the_parent() -> None:
    parent = [row("wolf", "A wild dog that hunts in packs.")]
    candidates = [
        row("fox", "A small wild dog with a bushy tail."),
        row("FOX", "a small wild dog with a bushy tail"),  # same text after normalisation
        row("Wolf", "A wild dog that hunts in packs!"),
        row("robin", "A small bird with a red breast."),
    ]
    result = curate(candidates, existing=parent)
    assert [d.reason for d in result.decisions] == [None, "duplicate", "duplicate_of_parent", None]
    assert result.decisions[1].detail == "candidate 0" and result.decisions[2].detail == "parent row 0"
    assert result.dropped == {"duplicate": 1, "duplicate_of_parent": 1}
    assert [e.input for e in result.kept] == ["fox", "robin"]


def test_near_duplicates_are_dropped_within_the_batch_and_against_the_parent() -> None:
    long = "A large wild cat with a tawny coat that lives in prides on the African savanna"
    parent = [row("lion", long + ".")]
    candidates = [
        row("lions", long + ", hunting zebra."),  # near the parent row
        row("tiger", "A very large wild cat with a yellow-brown coat striped with black, found in Asia."),
        row("tigers", "A very large wild cat with a yellow-brown coat striped with black, found in India."),
        row("robin", "A small bird with a red breast that eats worms and insects."),
    ]
    result = curate(candidates, existing=parent)
    assert [d.reason for d in result.decisions] == ["near_duplicate_of_parent", None, "near_duplicate", None]
    # A stricter threshold keeps them all.
    assert curate(candidates, existing=parent, near_duplicate_threshold=0.99).dropped == {}


def test_near_duplicates_of_a_dropped_row_are_judged_against_kept_rows_only() -> None:
    base = "A domesticated hoofed mammal of the horse family with long ears and a braying call"
    a = row("donkey", base)
    b = row("donkey", base.replace("domesticated hoofed", "tame hoofed"))  # Jaccard 0.81 with a
    c = row("donkey", base.replace("domesticated hoofed", "tame hoofed").replace("braying call", "loud bray"))
    # c is near b (0.84) but not a (0.67): once b is dropped, c stays.
    result = curate([row("", "x", instruction=""), a, b, c])
    assert [d.reason for d in result.decisions] == ["invalid", None, "near_duplicate", None]
    assert result.decisions[2].detail == "candidate 1"


def test_variants_of_one_family_are_not_near_duplicates_of_each_other() -> None:
    text = "A tool with a heavy bladed head on a long handle, used for chopping wood."
    seed = row("axe", text, family="pool:x:1")
    variants = [
        row("AXE", text, instruction="Task: " + INSTRUCTION, family="pool:x:1"),
        row("axe.", text, instruction="Please define the word in one sentence.", family="pool:x:1"),
        row("axe", text, instruction="Task: " + INSTRUCTION, family="pool:x:1"),  # exact copy: still dropped
        row("axe", text, instruction="Task: " + INSTRUCTION + " ", family="pool:y:2"),  # another family
    ]
    result = curate(variants, existing=[seed])
    assert [d.reason for d in result.decisions] == [None, None, "duplicate", "duplicate"]
    unrelated = curate([row("AXE", text, instruction="Task: " + INSTRUCTION)], existing=[seed])
    assert unrelated.dropped == {"near_duplicate_of_parent": 1}


def test_a_13_gram_overlap_with_an_eval_reference_is_contamination(index) -> None:
    # d-horse's reference: "A large hoofed mammal with a flowing mane and tail, used for
    # riding, racing and carrying loads."  13 shared words ("a large ... used for riding"):
    shares_13 = row(
        "stallion",
        "An adult male: a large hoofed mammal with a flowing mane and tail, used for riding and breeding.",
    )
    # 12 shared words ("a large ... used for").
    shares_12 = row(
        "stallion", "An adult male: a large hoofed mammal with a flowing mane and tail, used for breeding."
    )
    result = curate([shares_13, shares_12], eval_index=index)
    assert result.decisions[0].reason == "eval_ngram" and result.decisions[0].detail == "defs:d-horse"
    assert result.decisions[1].reason is None
    # The n-gram size is a parameter: at 12 the second one overlaps too.
    assert curate([shares_12], eval_index=build_eval_index([load_suite(DEFS)], n=12)).dropped == {
        "eval_ngram": 1
    }


def test_eval_inputs_and_references_are_contamination_whatever_the_casing(index) -> None:
    candidates = [
        row("Cat!", "A feline animal kept as a pet."),  # eval input
        row(
            "moggy", "A small domesticated carnivorous mammal with soft fur and retractable claws."
        ),  # eval reference
        row("", "A feline.", instruction="Cat"),  # no input: the instruction is the question
        row("kitten", "A young cat."),
    ]
    result = curate(candidates, eval_index=index)
    assert [d.reason for d in result.decisions] == ["eval_input", "eval_reference", "eval_input", None]
    assert result.decisions[0].detail == "defs:d-cat"
    assert set(result.dropped) <= set(DROP_REASONS)


def test_short_eval_texts_count_as_one_ngram_of_their_own_length() -> None:
    suite = load_suite(DEFS)
    short = Sample(
        id="s", instruction="Say it.", input="wrench", references=("A tool for turning nuts and bolts.",)
    )
    patched = type(suite)(suite.config, suite.path, (short,), "h")
    index = build_eval_index([patched])  # "wrench a tool for turning nuts and bolts": 8 words
    hit = row("a", "Remember: wrench, a tool for turning nuts and bolts, is handy.")
    assert curate([hit], eval_index=index).dropped == {"eval_ngram": 1}
    assert curate([hit], eval_index=build_eval_index([patched], min_ngram=9)).dropped == {}


def test_a_correction_of_an_eval_item_may_match_that_item_only(index) -> None:
    own = {"suite": "defs", "id": "d-cat"}
    correction = row("cat", "A small furry pet.", eval_sample=own)
    wrong_item = row("dog", "A loyal pet.", eval_sample=own)
    assert curate([correction], eval_index=index).dropped == {"eval_input": 1}
    allowed = curate([correction, wrong_item], eval_index=index, allow_own_eval_item=True)
    assert [d.reason for d in allowed.decisions] == [None, "eval_input"]


def test_curating_many_rows_is_quick_enough() -> None:
    import time

    parent = [
        row(f"word{i}", f"Definition number {i} of a thing that is {i % 7} and {i % 11}.")
        for i in range(3000)
    ]
    candidates = [
        row(f"new{i}", f"Another definition {i} about something {i % 13} or {i % 17}.") for i in range(1500)
    ]
    start = time.perf_counter()
    result = curate(candidates + candidates[:10], existing=parent)
    assert len(result.kept) <= 1500 and result.dropped.get("duplicate") == 10
    assert time.perf_counter() - start < 60
