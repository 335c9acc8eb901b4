"""Built-in detector `self_consistency`: what the model would not say again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import Detector, Issue, Item, Needs, hookimpl
from harness.plugins.detectors._chrf import pairwise_chrf
from harness.plugins.detectors._text import Claim, claims, number_key, numbers, word_stems


class SelfConsistencyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    draws: int = Field(
        4, ge=1, description="Sampled outputs per sample to compare the output with."
    )
    draw_temperature: float = Field(0.8, gt=0.0, description="Sampling temperature of the draws.")
    min_chrf: float = Field(
        25.0,
        gt=0.0,
        lt=100.0,
        description="Mean chrF of the output with its draws at which the similarity part reaches "
        "0.5 (1.0 at 0).",
    )
    min_support: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of draws that must repeat a claim of the output for it to count as "
        "supported.",
    )
    chrf_weight: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="Weight of the similarity part; the unsupported-claims part has the rest.",
    )
    number_weight: float = Field(3.0, ge=0.0, description="Weight of a number among the claims.")
    name_weight: float = Field(2.0, ge=0.0, description="Weight of a name among the claims.")
    content_weight: float = Field(1.0, ge=0.0, description="Weight of any other content word.")
    smoothing: float = Field(1.0, ge=0.0, description="Added to the total claim weight.")
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


class SelfConsistency(Detector):
    """Hallucination, checked by asking again (in the manner of SelfCheckGPT).

    Declares `Needs(draws=draws, draw_temperature=draw_temperature)` (4 at 0.8), so the
    harness samples that many extra outputs per sample into `item.draws`. What a model
    knows it tends to say again; what it makes up changes from draw to draw. Two parts:

    - similarity: the mean chrF (sacrebleu; the mean of both directions) of the output
      with each draw, mapped to 0.5 at `min_chrf` (25) and 1.0 at 0 (0 at 100);
    - unsupported claims: the output's numbers, names and content words (as in
      `grounding`, leaving out what only restates the instruction) that fewer than
      `min_support` (half) of the draws repeat, as a
      weighted share: numbers `number_weight` (3), names `name_weight` (2), other words
      `content_weight` (1), over the total weight plus `smoothing` (1).

    Severity = `chrf_weight` (0.4) x similarity part + the rest x claims part. `data`
    has the mean chrF with the draws, the mean chrF among the draws (low: the model is
    unsure whatever it said), and the unsupported claims; the evidence span is the first
    of the heaviest unsupported claims. `kind` is "unsupported" when claims drive the
    severity, "divergent" when similarity does. An item without draws is an error (the
    harness provides them when this detector is configured). Issues below
    `min_severity` (0.2) are not reported.
    """

    name = "self_consistency"
    description = "disagreement with re-sampled outputs (chrF) and claims the draws do not repeat"
    Args = SelfConsistencyArgs

    def needs(self, args: BaseModel) -> Needs:
        a: SelfConsistencyArgs = args  # type: ignore[assignment]
        return Needs(draws=a.draws, draw_temperature=a.draw_temperature)

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: SelfConsistencyArgs = args  # type: ignore[assignment]
        return [self._one(item, a) for item in items]

    def _one(self, item: Item, a: SelfConsistencyArgs) -> list[Issue]:
        if not item.draws:
            raise ValueError(
                f"sample {item.sample.id!r} has no draws: self_consistency needs sampled outputs "
                "(the harness generates them when the detector is in the suite)"
            )
        output = item.output
        if not output.strip():
            return []  # nothing was said, so nothing was made up (the length detector reports it)
        draws = [d.text for d in item.draws]
        scores = pairwise_chrf([output, *draws])
        with_draws = float(scores[0, 1:].mean())
        among = scores[1:, 1:]
        k = len(draws)
        among_draws = float((among.sum() - np.trace(among)) / (k * (k - 1))) if k > 1 else None
        if with_draws >= a.min_chrf:
            similarity = 0.5 * (100.0 - with_draws) / (100.0 - a.min_chrf)
        else:
            similarity = 0.5 + 0.5 * (a.min_chrf - with_draws) / a.min_chrf

        found = claims(output, judge_content=True, echoes_of=item.sample.instruction)
        weights = {"number": a.number_weight, "name": a.name_weight, "content": a.content_weight}
        draw_stems = [word_stems([d]) for d in draws]
        draw_numbers = [{number_key(n.value) for n in numbers(d)} for d in draws]
        total = unsupported_weight = 0.0
        unsupported: list[Claim] = []
        for claim in found:
            weight = weights[claim.category]
            total += weight
            pool = draw_numbers if claim.numeric else draw_stems
            repeated = sum(claim.key in p for p in pool)
            if repeated < a.min_support * k:
                unsupported_weight += weight
                unsupported.append(claim)
        claim_part = unsupported_weight / (total + a.smoothing) if total else 0.0

        severity = a.chrf_weight * similarity + (1.0 - a.chrf_weight) * claim_part
        if severity < a.min_severity or severity <= 0.0:
            return []
        kind = (
            "unsupported"
            if (1.0 - a.chrf_weight) * claim_part >= a.chrf_weight * similarity
            else "divergent"
        )
        start = end = None
        if unsupported:
            worst = max(unsupported, key=lambda c: (weights[c.category], -c.start))
            start, end = worst.start, worst.end
        shown = ", ".join(c.text for c in unsupported[:5]) + (", …" if len(unsupported) > 5 else "")
        message = f"disagrees with {k} re-sampled outputs (mean chrF {with_draws:.0f})"
        if unsupported:
            message += f"; not repeated: {shown}"
        return [
            Issue(
                severity=round(min(1.0, severity), 4),
                message=message,
                start=start,
                end=end,
                kind=kind,
                data={
                    "mean_chrf": round(with_draws, 2),
                    "draws_mean_chrf": round(among_draws, 2) if among_draws is not None else None,
                    "unsupported": [c.text for c in unsupported],
                    "unsupported_share": round(unsupported_weight / total, 4) if total else 0.0,
                    "draws": k,
                },
            )
        ]


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(SelfConsistency())
