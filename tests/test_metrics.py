"""Built-in metrics agree with the libraries that own them, at corpus and sentence level."""

from __future__ import annotations

import math

import jiwer
import numpy as np
import pytest
import sacrebleu

from harness.components.plugin_manager import load_plugins
from harness.stats import bootstrap_ci
from harness.testing import item

HYPS = [
    "the cat sat on the mat",
    "a dog barked loudly at night",
    "",
    "hello world",
    "To breathe air into the lungs.",
    "A large animal that lives in Africa, with a long neck.",
]
REFS = [
    "the cat is on the mat",
    "the dog barked at night",
    "something here",
    "hello world",
    "to expose to air and especially to a current of fresh air",
    "a large African mammal with a very long neck",
]


@pytest.fixture(scope="module")
def registry():
    return load_plugins(autoload=False).registry


def items(hyps=HYPS, refs=REFS):
    return [item(h, reference=r, id=str(i)) for i, (h, r) in enumerate(zip(hyps, refs))]


def corpus_and_sentences(metric, its, **args):
    parsed = metric.Args(**args)
    stats = metric.statistics(its, parsed)
    return float(metric.from_statistics(stats.sum(axis=0), parsed)), metric.sample_scores(stats, parsed)


def test_bleu_matches_sacrebleu(registry) -> None:
    corpus, sentences = corpus_and_sentences(registry.metric("bleu"), items())
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    expected = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS)]
    assert sentences == pytest.approx(expected, abs=1e-9)


def test_bleu_with_options_and_multiple_references(registry) -> None:
    refs2 = ["a cat was on the mat", "one dog barked at night", "", "hello world!", "to ventilate", "a giraffe"]
    its = [item(h, reference=[r1, r2] if r2 else [r1], id=str(i)) for i, (h, r1, r2) in enumerate(zip(HYPS, REFS, refs2))]
    corpus, _ = corpus_and_sentences(registry.metric("bleu"), its, lowercase=True, tokenize="intl")
    expected = sacrebleu.corpus_bleu(
        HYPS, [REFS, [r or None for r in refs2]], lowercase=True, tokenize="intl"
    ).score
    assert corpus == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_matches_sacrebleu(registry, word_order: int) -> None:
    corpus, sentences = corpus_and_sentences(registry.metric("chrf"), items(), word_order=word_order)
    assert corpus == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=word_order).score, abs=1e-9)
    expected = [sacrebleu.sentence_chrf(h, [r], word_order=word_order).score for h, r in zip(HYPS, REFS)]
    assert sentences == pytest.approx(expected, abs=1e-9)


def test_wer_and_cer_match_jiwer(registry) -> None:
    nonempty = [i for i, h in enumerate(HYPS) if h]  # jiwer refuses empty hypotheses
    hyps = [HYPS[i] for i in nonempty]
    refs = [REFS[i] for i in nonempty]
    corpus, sentences = corpus_and_sentences(registry.metric("wer"), items(hyps, refs))
    assert corpus == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert sentences == pytest.approx([jiwer.wer(r, h) for r, h in zip(refs, hyps)], abs=1e-12)
    corpus, sentences = corpus_and_sentences(registry.metric("cer"), items(hyps, refs))
    assert corpus == pytest.approx(jiwer.cer(refs, hyps), abs=1e-12)
    assert sentences == pytest.approx([jiwer.cer(r, h) for r, h in zip(refs, hyps)], abs=1e-12)


def test_wer_normalisation_options_match_jiwer_transforms(registry) -> None:
    hyps = ["Twenty-One apples.", "FORTY two"]
    refs = ["twenty one apples", "forty-two"]
    corpus, _ = corpus_and_sentences(registry.metric("wer"), items(hyps, refs), lowercase=True, remove_punctuation=True)
    transform = jiwer.Compose(
        [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
         jiwer.ReduceToListOfListOfWords()]
    )
    expected = jiwer.wer(refs, hyps, reference_transform=transform, hypothesis_transform=transform)
    assert corpus == pytest.approx(expected)


def test_empty_output_counts_every_reference_word_as_an_error(registry) -> None:
    _, sentences = corpus_and_sentences(registry.metric("wer"), [item("", reference="three words here")])
    assert sentences.tolist() == [1.0]


def test_exact_match_normalisation(registry) -> None:
    metric = registry.metric("exact_match")
    its = [
        item("  The Answer is 42. ", reference="the answer is 42"),
        item("the answer is 43", reference="the answer is 42"),
        item("Paris", reference=["London", "paris"]),
        item("42, obviously", reference="42"),
    ]
    _, exact = corpus_and_sentences(metric, its)
    assert exact.tolist() == [1.0, 0.0, 1.0, 0.0]
    _, prefix = corpus_and_sentences(metric, its, match="prefix")
    assert prefix.tolist() == [1.0, 0.0, 1.0, 1.0]
    _, strict = corpus_and_sentences(metric, its, ignore_case=False, ignore_punctuation=False)
    assert strict.tolist() == [0.0, 0.0, 0.0, 0.0]
    _, articles = corpus_and_sentences(metric, [item("a cat", reference="the cat")], ignore_articles=True)
    assert articles.tolist() == [1.0]


def test_perplexity_from_reference_log_likelihood(registry) -> None:
    metric = registry.metric("perplexity")
    its = [
        item("x", reference="a b", reference_nll=2.0, reference_tokens=2),
        item("y", reference="c d e f", reference_nll=8.0, reference_tokens=4),
    ]
    corpus, sentences = corpus_and_sentences(metric, its)
    assert sentences == pytest.approx([math.e, math.e**2])
    assert corpus == pytest.approx(math.exp(10.0 / 6.0))
    assert not metric.higher_is_better
    assert metric.needs(metric.Args()).reference_nll


def test_directions_are_declared(registry) -> None:
    assert {n: registry.metric(n).higher_is_better for n in registry.names("metric")} == {
        "bleu": True, "chrf": True, "exact_match": True, "wer": False, "cer": False, "perplexity": False,
    }


def test_bootstrap_interval_contains_the_corpus_score_and_shrinks_with_n(registry) -> None:
    metric = registry.metric("chrf")
    args = metric.Args()
    rng = np.random.default_rng(0)
    words = "the a cat dog sat ran on under mat log big small".split()
    def corpus(n):
        refs = [" ".join(rng.choice(words, 6)) for _ in range(n)]
        hyps = [" ".join(r.split()[:4] + list(rng.choice(words, 2))) for r in refs]
        stats = metric.statistics(items(hyps, refs), args)
        score = lambda t: metric.from_statistics(t, args)  # noqa: E731
        return float(score(stats.sum(0))), bootstrap_ci(stats, score, resamples=500, seed=1)
    value, (low, high) = corpus(40)
    assert low <= value <= high
    _, (low_big, high_big) = corpus(400)
    assert high_big - low_big < high - low
