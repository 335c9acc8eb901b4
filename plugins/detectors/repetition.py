"""Built-in detector `repetition`: degenerate loops, stutters and low-diversity outputs."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness import Detector, Issue, Item, hookimpl
from harness.plugins.detectors._text import TOKEN


class RepetitionArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ngram: int = Field(4, ge=1, description="n of seq-rep-n.")
    max_seq_rep: float = Field(
        0.3, gt=0.0, lt=1.0, description="seq-rep-n at which severity reaches 0.5 (1.0 at 1.0)."
    )
    max_repeat_tokens: int = Field(
        10,
        ge=2,
        description="Length in tokens of a repeated span at which severity reaches 0.5 (1.0 at "
        "twice that).",
    )
    max_consecutive: int = Field(
        3,
        ge=2,
        description="Back-to-back occurrences of one 1-3 token phrase at which severity reaches "
        "0.5 (1.0 at twice that).",
    )
    min_compression: float = Field(
        0.4,
        gt=0.0,
        lt=0.66,
        description="zlib compression ratio at which severity reaches 0.5 (0 at 1.5 x, 1.0 at half "
        "of it); plain English of a few hundred characters compresses to about 0.6-0.7.",
    )
    compression_min_chars: int = Field(
        200,
        ge=1,
        description="Outputs shorter than this (in characters) skip the compression signal.",
    )
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


def _rising(value: float, half: float, full: float) -> float:
    """0 at 0, 0.5 at `half`, 1.0 at `full` (> half), linear in between."""
    if value <= half:
        return 0.5 * max(value, 0.0) / half
    return min(1.0, 0.5 + 0.5 * (value - half) / (full - half))


def _falling(value: float, half: float) -> float:
    """For ratios where low is bad: 0 at 1.5 x `half`, 0.5 at `half`, 1.0 at half / 2."""
    zero, full = 1.5 * half, half / 2
    if value >= half:
        return 0.5 * max(0.0, zero - value) / (zero - half)
    return min(1.0, 0.5 + 0.5 * (half - value) / (half - full))


def seq_rep(ids: Sequence[int], n: int) -> float:
    """Share of n-grams that are repeats of an earlier n-gram (0 when there are none)."""
    total = len(ids) - n + 1
    if total <= 0:
        return 0.0
    grams = {tuple(ids[i : i + n]) for i in range(total)}
    return 1.0 - len(grams) / total


def distinct(ids: Sequence[int], n: int) -> float:
    """Share of unique n-grams (1 when there are none)."""
    return 1.0 - seq_rep(ids, n) if len(ids) >= n else 1.0


def longest_repeat(ids: Sequence[int], max_candidates: int = 8) -> tuple[int, int, int]:
    """(length, first start, second start) of the longest token span that occurs twice.

    Candidate pairs are positions that share a bigram; only pairs that cannot be
    extended to the left are extended (the others lie inside a longer match), and the
    scan stops once no later position could beat the best span: a loop that fills the
    output is found at its first period and ends the scan.
    """
    n = len(ids)
    best = (0, 0, 0)
    seen: dict[tuple[int, int], list[int]] = {}
    for j in range(n - 1):
        if n - j <= best[0]:
            break
        key = (ids[j], ids[j + 1])
        earlier = seen.setdefault(key, [])
        for i in earlier[-max_candidates:]:
            if i > 0 and ids[i - 1] == ids[j - 1]:
                continue
            length = 2
            while j + length < n and ids[i + length] == ids[j + length]:
                length += 1
            if length > best[0]:
                best = (length, i, j)
        earlier.append(j)
    return best


def longest_stutter(ids: Sequence[int], max_period: int = 3) -> tuple[int, int, int]:
    """(occurrences, start token, period) of the longest back-to-back repetition of a
    1 to `max_period` token phrase; occurrences is 1 when nothing repeats."""
    n = len(ids)
    best = (1, 0, 1)
    for period in range(1, max_period + 1):
        run = 0  # tokens so far that equal the token `period` places before
        for k in range(period, n):
            if ids[k] == ids[k - period]:
                run += 1
                count = 1 + run // period
                if count > best[0]:
                    best = (count, k - run - period + 1, period)
            else:
                run = 0
    return best


class Repetition(Detector):
    """Degenerate repetition in an output: loops, stutters, low diversity.

    Small fine-tuned models fall into loops ("a dog is an animal. a dog is an animal.
    ...") and stutters ("very very very"), most of all when greedy decoding runs to the
    token limit. Over lower-cased word tokens it measures:

    - seq-rep-n (Welleck et al., 2019): the share of n-grams that repeat an earlier one
      (n = `ngram`, default 4);
    - distinct-1 and distinct-2: the shares of unique unigrams and bigrams (in `data`);
    - the longest repeated span: the longest token sequence that occurs twice (the
      occurrences may overlap, as in a loop); the evidence span is its second occurrence;
    - the longest stutter: a 1-3 token phrase repeated back to back;
    - the zlib compression ratio (compressed / raw bytes), for outputs of at least
      `compression_min_chars` (200) characters, below which zlib's overhead dominates.

    Each signal maps to a severity of 0.5 (the default failure threshold) at its argument and
    1.0 further out: seq-rep-4 0.3 (1.0 at 1.0); a repeated span of 10 tokens (1.0 at 20); a
    phrase 3 times in a row (1.0 at 6); a compression ratio of 0.4 (0 at 0.6, 1.0 at 0.2;
    plain English compresses to about 0.6-0.7). One issue per output takes the worst signal;
    its `kind` is "loop" (seq-rep or repeated span), "stutter" or "low_diversity"
    (compression), and `data` holds every measurement. Issues below `min_severity` (0.2) are
    not reported.
    """

    name = "repetition"
    description = (
        "repeated n-grams, loops and stutters (seq-rep-n, longest repeated span, zlib ratio)"
    )
    Args = RepetitionArgs

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: RepetitionArgs = args  # type: ignore[assignment]
        return [self._one(item.output, a) for item in items]

    def _one(self, text: str, a: RepetitionArgs) -> list[Issue]:
        matches = list(TOKEN.finditer(text))
        if len(matches) < 2:
            return []
        vocab: dict[str, int] = {}
        ids = [vocab.setdefault(m.group().lower(), len(vocab)) for m in matches]

        rep = seq_rep(ids, a.ngram)
        span_len, first, second = longest_repeat(ids)
        stutter_count, stutter_start, period = longest_stutter(ids)
        ratio = None
        raw = text.encode("utf-8")
        if len(text) >= a.compression_min_chars:
            ratio = len(zlib.compress(raw)) / len(raw)

        signals: dict[str, float] = {
            "loop": max(
                _rising(rep, a.max_seq_rep, 1.0),
                _rising(span_len, a.max_repeat_tokens, 2 * a.max_repeat_tokens)
                if span_len >= 2
                else 0.0,
            ),
            "stutter": _rising(stutter_count - 1, a.max_consecutive - 1, 2 * a.max_consecutive - 1)
            if stutter_count > 1
            else 0.0,
            "low_diversity": _falling(ratio, a.min_compression) if ratio else 0.0,
        }
        kind = max(signals, key=signals.__getitem__)
        severity = signals[kind]
        if severity < a.min_severity or severity <= 0.0:
            return []

        data: dict[str, Any] = {
            f"seq_rep_{a.ngram}": round(rep, 4),
            "distinct_1": round(distinct(ids, 1), 4),
            "distinct_2": round(distinct(ids, 2), 4),
            "longest_repeat_tokens": span_len,
            "longest_stutter": stutter_count,
            "compression_ratio": round(ratio, 4) if ratio is not None else None,
        }
        if kind == "stutter":
            # evidence: the repeats after the first occurrence of the stuttered phrase
            start_tok = stutter_start + period
            end_tok = stutter_start + period * stutter_count - 1
            start, end = matches[start_tok].start(), matches[end_tok].end()
            phrase = text[
                matches[stutter_start].start() : matches[stutter_start + period - 1].end()
            ]
            message = f"'{_clip(phrase)}' repeated {stutter_count} times in a row"
        elif span_len >= 2:
            start, end = matches[second].start(), matches[second + span_len - 1].end()
            data["first_occurrence"] = [matches[first].start(), matches[first + span_len - 1].end()]
            message = f"a {span_len}-token span repeats: '{_clip(text[start:end])}'"
            if kind == "low_diversity":
                message = f"highly compressible output (zlib ratio {ratio:.2f}); " + message
        else:
            start = end = None
            message = f"low-diversity output (zlib ratio {ratio:.2f})"
        data["repeated"] = _clip(text[start:end], 200) if start is not None else ""
        return [
            Issue(
                severity=round(severity, 4),
                message=message,
                start=start,
                end=end,
                kind=kind,
                data=data,
            )
        ]


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(Repetition())
