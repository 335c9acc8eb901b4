"""Built-in metrics: exact match, BLEU and chrF (sacrebleu), WER and CER (jiwer), perplexity.

Each metric reduces a sample to sufficient statistics with the library that owns the
metric, so corpus scores equal the library's own corpus scores (BLEU is not a mean of
sentence BLEUs; WER is total errors over total reference words).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import Item, Metric, Needs, hookimpl, mean_from_statistics


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------
# Exact match
# ---------------------------------------------------------------------------


class ExactMatchArgs(_Args):
    ignore_case: bool = True
    ignore_punctuation: bool = True
    ignore_whitespace: bool = True
    """Collapse runs of whitespace and strip the ends."""
    ignore_articles: bool = False
    """Drop 'a', 'an' and 'the' (SQuAD-style normalisation)."""
    match: Literal["exact", "prefix", "contains"] = "exact"
    """exact: whole output; prefix: output starts with the reference; contains: anywhere."""


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCT = str.maketrans("", "", string.punctuation + "“”‘’")


def normalize_answer(text: str, args: ExactMatchArgs) -> str:
    text = unicodedata.normalize("NFKC", text)
    if args.ignore_case:
        text = text.lower()
    if args.ignore_punctuation:
        text = text.translate(_PUNCT)
    if args.ignore_articles:
        text = _ARTICLES.sub(" ", text)
    if args.ignore_whitespace:
        text = " ".join(text.split())
    return text


class ExactMatch(Metric):
    """1 when the output equals a reference after normalisation, else 0; corpus = accuracy."""

    name = "exact_match"
    higher_is_better = True
    description = "output equals a reference after normalisation (case, punctuation, spaces)"
    Args = ExactMatchArgs

    def statistics(self, items: Sequence[Item], args: BaseModel) -> np.ndarray:
        a: ExactMatchArgs = args  # type: ignore[assignment]
        values = []
        for item in items:
            out = normalize_answer(item.output, a)
            refs = [normalize_answer(r, a) for r in item.sample.references]
            if a.match == "exact":
                hit = out in refs
            elif a.match == "prefix":
                hit = any(out.startswith(r) for r in refs if r)
            else:
                hit = any(r in out for r in refs if r)
            values.append(1.0 if hit else 0.0)
        return _value_count(values)

    def from_statistics(self, totals: np.ndarray, args: BaseModel) -> np.ndarray:
        return mean_from_statistics(totals)


def _value_count(values: list[float]) -> np.ndarray:
    return np.column_stack([values, np.ones(len(values))]) if values else np.zeros((0, 2))


# ---------------------------------------------------------------------------
# sacrebleu: BLEU and chrF
# ---------------------------------------------------------------------------


def _reference_streams(items: Sequence[Item]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference slot, None where a sample has fewer."""
    width = max((len(item.sample.references) for item in items), default=1)
    return [
        [item.sample.references[i] if i < len(item.sample.references) else None for item in items]
        for i in range(width)
    ]


class _SacreMetric(Metric):
    """Shared sacrebleu plumbing: statistics from the library, scores from its formula."""

    def _metric(self, args: BaseModel, sentence: bool) -> Any:
        raise NotImplementedError

    def statistics(self, items: Sequence[Item], args: BaseModel) -> np.ndarray:
        if not items:
            return np.zeros((0, 0))
        metric = self._metric(args, sentence=False)
        stats = metric._extract_corpus_statistics(
            [item.output for item in items], _reference_streams(items)
        )
        return np.asarray(stats, dtype=float)

    def from_statistics(self, totals: np.ndarray, args: BaseModel) -> np.ndarray:
        return self._scores(totals, args, sentence=False)

    def sample_scores(self, stats: np.ndarray, args: BaseModel) -> np.ndarray:
        return self._scores(stats, args, sentence=True)

    def _scores(self, totals: np.ndarray, args: BaseModel, sentence: bool) -> np.ndarray:
        metric = self._metric(args, sentence)
        totals = np.asarray(totals, dtype=float)
        flat = totals.reshape(-1, totals.shape[-1]).round().astype(np.int64)
        scores = np.array([metric._compute_score_from_stats(list(row)).score for row in flat])
        return scores.reshape(totals.shape[:-1])


class BleuArgs(_Args):
    tokenize: str = Field("13a", description="sacrebleu tokenizer: 13a, intl, char, zh, none ...")
    lowercase: bool = False
    smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"


@lru_cache(maxsize=32)
def _bleu(args: BleuArgs, sentence: bool) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(
        tokenize=args.tokenize,
        lowercase=args.lowercase,
        smooth_method=args.smooth_method,
        effective_order=sentence,  # as sacrebleu's sentence_bleu does
    )


class Bleu(_SacreMetric):
    """sacrebleu BLEU (0-100). Corpus BLEU from summed n-gram statistics; per-sample
    scores are sentence BLEU with effective order, as `sacrebleu.sentence_bleu`."""

    name = "bleu"
    higher_is_better = True
    description = "sacrebleu BLEU, 0-100 (corpus-level; sentence BLEU per sample)"
    Args = BleuArgs

    def _metric(self, args: BaseModel, sentence: bool) -> Any:
        return _bleu(args, sentence)  # type: ignore[arg-type]


class ChrfArgs(_Args):
    char_order: int = Field(6, ge=1)
    word_order: int = Field(0, ge=0, description="2 gives chrF++")
    beta: int = Field(2, ge=1)
    lowercase: bool = False
    whitespace: bool = False


@lru_cache(maxsize=32)
def _chrf(args: ChrfArgs) -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF(
        char_order=args.char_order,
        word_order=args.word_order,
        beta=args.beta,
        lowercase=args.lowercase,
        whitespace=args.whitespace,
    )


class Chrf(_SacreMetric):
    """sacrebleu chrF (0-100): character n-gram F-score; chrF++ with word_order=2."""

    name = "chrf"
    higher_is_better = True
    description = "sacrebleu chrF, 0-100 (chrF++ with word_order: 2)"
    Args = ChrfArgs

    def _metric(self, args: BaseModel, sentence: bool) -> Any:
        return _chrf(args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# jiwer: WER and CER
# ---------------------------------------------------------------------------


class ErrorRateArgs(_Args):
    lowercase: bool = False
    remove_punctuation: bool = False


def _jiwer_transform(args: ErrorRateArgs, characters: bool) -> Any:
    import jiwer

    steps: list[Any] = []
    if args.lowercase:
        steps.append(jiwer.ToLowerCase())
    if args.remove_punctuation:
        steps.append(jiwer.RemovePunctuation())
    steps += [jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
    steps.append(jiwer.ReduceToListOfListOfChars() if characters else jiwer.ReduceToListOfListOfWords())
    return jiwer.Compose(steps)


class _ErrorRate(Metric):
    """Edit operations over reference length; the first reference is used."""

    higher_is_better = False
    Args = ErrorRateArgs
    characters = False

    def statistics(self, items: Sequence[Item], args: BaseModel) -> np.ndarray:
        import jiwer

        if not items:
            return np.zeros((0, 2))
        transform = _jiwer_transform(args, self.characters)  # type: ignore[arg-type]
        rows = np.zeros((len(items), 2))
        aligned: list[int] = []
        for i, item in enumerate(items):
            reference, hypothesis = item.sample.reference, item.output
            ref_units = len(transform(reference)[0]) if reference.strip() else 0
            hyp_units = len(transform(hypothesis)[0]) if hypothesis.strip() else 0
            if ref_units and hyp_units:
                aligned.append(i)
            else:  # jiwer refuses empty strings: all insertions, or all deletions
                rows[i] = (hyp_units if not ref_units else ref_units, ref_units)
        if aligned:
            process = jiwer.process_characters if self.characters else jiwer.process_words
            out = process(
                [items[i].sample.reference for i in aligned],
                [items[i].output for i in aligned],
                reference_transform=transform,
                hypothesis_transform=transform,
            )
            for i, chunks in zip(aligned, out.alignments, strict=True):
                errors = ref_len = 0
                for chunk in chunks:
                    n_ref = chunk.ref_end_idx - chunk.ref_start_idx
                    n_hyp = chunk.hyp_end_idx - chunk.hyp_start_idx
                    ref_len += n_ref
                    if chunk.type == "insert":
                        errors += n_hyp
                    elif chunk.type != "equal":
                        errors += n_ref
                rows[i] = (errors, ref_len)
        return rows

    def from_statistics(self, totals: np.ndarray, args: BaseModel) -> np.ndarray:
        totals = np.asarray(totals, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return totals[..., 0] / np.maximum(totals[..., 1], 1.0)


class Wer(_ErrorRate):
    """Word error rate (jiwer), a fraction: (S + D + I) / reference words. Lower is better."""

    name = "wer"
    description = "word error rate (jiwer); lower is better"


class Cer(_ErrorRate):
    """Character error rate (jiwer), a fraction. Lower is better."""

    name = "cer"
    description = "character error rate (jiwer); lower is better"
    characters = True


# ---------------------------------------------------------------------------
# Perplexity of the reference
# ---------------------------------------------------------------------------


class Perplexity(Metric):
    """Perplexity of the first reference given the prompt, teacher-forced (lower is better).
    Corpus perplexity is exp(total NLL / total tokens)."""

    name = "perplexity"
    higher_is_better = False
    description = "perplexity of the reference under the model (teacher-forced); lower is better"

    def needs(self, args: BaseModel) -> Needs:
        return Needs(reference_nll=True)

    def statistics(self, items: Sequence[Item], args: BaseModel) -> np.ndarray:
        rows = []
        for item in items:
            if item.reference_nll is None or item.reference_tokens is None:
                raise ValueError(f"sample {item.sample.id!r} has no reference log-likelihood")
            rows.append((item.reference_nll, float(item.reference_tokens)))
        return np.asarray(rows, dtype=float).reshape(-1, 2)

    def from_statistics(self, totals: np.ndarray, args: BaseModel) -> np.ndarray:
        totals = np.asarray(totals, dtype=float)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.exp(totals[..., 0] / totals[..., 1])


@hookimpl
def harness_register_metrics(registry: Any) -> None:
    for metric in (ExactMatch(), Bleu(), Chrf(), Wer(), Cer(), Perplexity()):
        registry.add_metric(metric)
