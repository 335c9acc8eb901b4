"""Built-in detector `length`: outputs too long, too short, over budget or truncated."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from harness import Detector, Issue, Item, hookimpl
from harness.plugins.detectors._text import TOKEN

# The end of the last complete sentence: terminal punctuation, maybe closing quotes.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


class LengthArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_ratio: float = Field(
        3.0,
        gt=1.0,
        description="Output/reference length ratio at which 'too_long' reaches severity 0.5 (1.0 "
        "at twice it).",
    )
    min_ratio: float = Field(
        0.4,
        gt=0.0,
        lt=1.0,
        description="Output/reference length ratio at which 'too_short' reaches severity 0.5 (1.0 "
        "at half it).",
    )
    slack: float = Field(
        5.0,
        ge=0.0,
        description="Words added to both lengths before the ratio, so that 'The answer is 19.' "
        "is not four times too long for the reference '19'.",
    )
    max_tokens: PositiveInt | None = Field(
        None,
        description="Completion-token budget; above it 'over_budget' (0.5, 1.0 at twice it). "
        "None: no budget.",
    )
    truncated_severity: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Severity of 'truncated' when the output stops mid-sentence.",
    )
    truncated_at_boundary_severity: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Severity of 'truncated' when the cut happens to fall after a complete "
        "sentence.",
    )
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


def _words(text: str) -> list[re.Match[str]]:
    """Words and numbers; punctuation and symbols ("+", "=", "###") are not words."""
    return list(TOKEN.finditer(text))


def _excess_severity(ratio: float, limit: float) -> float:
    """Grows with log(ratio): 0 at 1, 0.5 at `limit` (> 1), 1.0 at twice the limit."""
    if ratio <= 1.0:
        return 0.0
    if ratio <= limit:
        return 0.5 * math.log(ratio) / math.log(limit)
    return min(1.0, 0.5 + 0.5 * math.log(ratio / limit) / math.log(2.0))


class Length(Detector):
    """Length problems of an output, each its own `kind`:

    - "empty": no words or numbers at all (severity 1.0);
    - "too_long" / "too_short": against the closest reference, in words, with `slack` (5)
      words added to both sides so that short references do not make every framed
      answer look long. Severity is 0.5 at `max_ratio` (3.0) or `min_ratio` (0.4) and
      1.0 at twice (half) that, growing with the log of the ratio; the evidence of
      "too_long" is the text past the allowed length. Skipped when there is no reference;
    - "over_budget": more completion tokens than `max_tokens` (off by default): 0.5 just
      over, 1.0 at twice the budget (no evidence span: tokens have no character offsets);
    - "truncated": generation stopped at the token limit (finish_reason "length") instead
      of at EOS: `truncated_severity` (0.9) when it stops mid-sentence, with the unfinished
      sentence as evidence, or `truncated_at_boundary_severity` (0.5) when the cut falls
      after a complete sentence. `data` says where and how many tokens.

    Issues below `min_severity` (0.2) are not reported.
    """

    name = "length"
    description = "too long / too short against the reference, over a token budget, truncated"
    Args = LengthArgs

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: LengthArgs = args  # type: ignore[assignment]
        return [self._one(item, a) for item in items]

    def _one(self, item: Item, a: LengthArgs) -> list[Issue]:
        text = item.output
        words = _words(text)
        issues: list[Issue] = []
        references = [r for r in item.sample.references if r.strip()]

        if not words:
            issues.append(
                Issue(severity=1.0, message="empty output", kind="empty", data={"words": 0})
            )
        elif references:
            issues.extend(self._against_reference(text, words, references, a))

        gen = item.generation
        if a.max_tokens is not None and gen.completion_tokens > a.max_tokens:
            over = gen.completion_tokens / a.max_tokens
            severity = min(1.0, 0.5 + 0.5 * (over - 1.0))
            issues.append(
                Issue(
                    severity=round(severity, 4),
                    message=f"{gen.completion_tokens} completion tokens, over the budget of "
                    f"{a.max_tokens}",
                    kind="over_budget",
                    data={"completion_tokens": gen.completion_tokens, "max_tokens": a.max_tokens},
                )
            )

        if gen.finish_reason == "length":
            issues.append(self._truncated(text, gen.completion_tokens, a))
        return [i for i in issues if i.severity >= a.min_severity and i.severity > 0.0]

    def _against_reference(
        self, text: str, words: list[re.Match[str]], references: list[str], a: LengthArgs
    ) -> list[Issue]:
        n = len(words)
        ref_lengths = [len(_words(r)) for r in references]
        # the most favourable reference: the one closest in length (in log terms)
        ref_len = min(ref_lengths, key=lambda r: abs(math.log((n + a.slack) / (r + a.slack))))
        ratio = (n + a.slack) / (ref_len + a.slack)
        data = {"words": n, "reference_words": ref_len, "ratio": round(ratio, 3)}
        if ratio > 1.0:
            severity = _excess_severity(ratio, a.max_ratio)
            allowed = max(1, math.floor(a.max_ratio * (ref_len + a.slack) - a.slack))
            start = words[allowed].start() if allowed < n else None
            return [
                Issue(
                    severity=round(severity, 4),
                    message=f"{n} words where the reference has {ref_len} ({ratio:.1f}x with "
                    "slack)",
                    start=start,
                    end=len(text) if start is not None else None,
                    kind="too_long",
                    data=data,
                )
            ]
        if ratio < 1.0:
            severity = _excess_severity(1.0 / ratio, 1.0 / a.min_ratio)
            return [
                Issue(
                    severity=round(severity, 4),
                    message=f"{n} words where the reference has {ref_len} ({ratio:.2f}x with "
                    "slack)",
                    kind="too_short",
                    data=data,
                )
            ]
        return []

    def _truncated(self, text: str, tokens: int, a: LengthArgs) -> Issue:
        stripped = text.rstrip()
        ends = list(_SENTENCE_END.finditer(stripped))
        if ends and ends[-1].end() == len(stripped):
            return Issue(
                severity=a.truncated_at_boundary_severity,
                message=f"hit the token limit ({tokens} tokens) without EOS, after a complete "
                "sentence",
                kind="truncated",
                data={"completion_tokens": tokens, "mid_sentence": False},
            )
        start = ends[-1].end() if ends else 0
        while start < len(stripped) and stripped[start].isspace():
            start += 1
        fragment = stripped[start:]
        return Issue(
            severity=a.truncated_severity,
            message=f"cut off at the token limit ({tokens} tokens) mid-sentence: "
            f"'…{fragment[-40:]}'",
            start=start,
            end=len(stripped),
            kind="truncated",
            data={"completion_tokens": tokens, "mid_sentence": True},
        )


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(Length())
