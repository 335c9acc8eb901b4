"""Pairwise chrF between many texts, with sacrebleu doing the scoring (private helper).

`sacrebleu.sentence_chrf(a, [b])` builds a metric object and extracts both texts'
character n-grams on every call; comparing an output with its draws, or all members of
a paraphrase group with each other, would extract each text's n-grams many times. Here
sacrebleu extracts them once per text, the metric object is built once per process, the
clipped matches of a pair are counted once for both directions, and sacrebleu's own
formula turns the statistics into the score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()  # the standard chrF: character 6-grams, beta 2, no word n-grams


class _Grams:
    """A text's character n-gram counts per order, and their totals."""

    __slots__ = ("counts", "totals", "flat")

    def __init__(self, text: str):
        metric = _chrf()
        self.counts: list[Counter[str]] = metric._extract_reference_info(
            [metric._preprocess_segment(text)]
        )["ref_ngrams"][0]
        self.totals = [sum(c.values()) for c in self.counts]
        self.flat = [len(c) == t for c, t in zip(self.counts, self.totals, strict=True)]


def _matches(a: Counter[str], b: Counter[str], flat: bool) -> int:
    """Clipped n-gram matches, the same both ways; the key intersection runs in C, and
    when every n-gram occurs once on both sides (`flat`) it is the whole answer."""
    common = a.keys() & b.keys()
    if flat:
        return len(common)
    return sum(min(a[g], b[g]) for g in common)


def _pair(a: _Grams, b: _Grams) -> tuple[float, float]:
    """chrF of a against b and of b against a, from one count of the matches."""
    metric = _chrf()
    ab: list[int] = []
    ba: list[int] = []
    for ca, cb, ta, tb, fa, fb in zip(
        a.counts, b.counts, a.totals, b.totals, a.flat, b.flat, strict=True
    ):
        m = _matches(ca, cb, fa and fb)
        # sacrebleu's statistics per order: [hypothesis n-grams (0 when the reference has
        # none), reference n-grams, matches]
        ab.extend((ta if tb else 0, tb, m))
        ba.extend((tb if ta else 0, ta, m))
    return float(metric._compute_f_score(ab)), float(metric._compute_f_score(ba))


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (0-100) of one hypothesis against one reference."""
    return _pair(_Grams(hypothesis), _Grams(reference))[0]


def pairwise_chrf(texts: Sequence[str], rows: Sequence[int] | None = None) -> np.ndarray:
    """A symmetric (n, n) matrix of chrF agreement, 0-100, between every pair of texts.

    chrF weighs recall over precision (beta 2), so a pair scores the mean of both
    directions; the diagonal is 100. Two empty texts agree (100); an empty text and a
    non-empty one do not (0). With `rows`, only pairs that involve those texts are
    scored (the rest of the matrix is NaN): an output against its draws needs n - 1
    pairs, not n(n - 1)/2.
    """
    grams = [_Grams(t) for t in texts]
    empty = [not t.strip() for t in texts]
    n = len(texts)
    out = np.full((n, n), np.nan)
    np.fill_diagonal(out, 100.0)
    wanted = set(range(n)) if rows is None else set(rows)
    for i in range(n):
        for j in range(i + 1, n):
            if i not in wanted and j not in wanted:
                continue
            if empty[i] or empty[j]:
                value = 100.0 if empty[i] and empty[j] else 0.0
            else:
                value = sum(_pair(grams[i], grams[j])) / 2
            out[i, j] = out[j, i] = value
    return out
