"""Built-in detector `hallucination`: the grounding and self-consistency evidence together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import Detector, Issue, Item, Needs, hookimpl
from harness.plugins.detectors.grounding import Grounding, GroundingArgs
from harness.plugins.detectors.self_consistency import SelfConsistency, SelfConsistencyArgs

Method = Literal["grounding", "self_consistency"]


class HallucinationArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: tuple[Method, ...] = Field(
        ("grounding", "self_consistency"),
        min_length=1,
        description="The evidence to use: 'grounding' (claims nothing given supports; free) "
        "and 'self_consistency' (what re-sampled outputs do not repeat; costs `draws` extra "
        "generations per sample).",
    )
    grounding: GroundingArgs = Field(default_factory=GroundingArgs, description="Arguments of the grounding method.")
    self_consistency: SelfConsistencyArgs = Field(
        default_factory=SelfConsistencyArgs, description="Arguments of the self-consistency method."
    )
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


class Hallucination(Detector):
    """Hallucination: content of the output that the model was not given and would not
    say again.

    Runs the `grounding` detector (numbers, names and content words that neither the
    instruction, the input nor the references support) and the `self_consistency`
    detector (the output against `draws` re-sampled outputs, in the manner of
    SelfCheckGPT), each with its own arguments under `grounding:` and
    `self_consistency:`, and reports one issue per sample: the more severe of the two,
    with that method's message, evidence span and kind, and both methods' severities in
    `data`. Either method alone is enough to flag a sample, because each sees what the
    other cannot: grounding needs the truth to be in the prompt or the references,
    self-consistency needs the model to be unsure.

    `methods` picks the evidence (both by default). With `self_consistency` the harness
    samples its draws (4 at temperature 0.8 by default: five generations per sample in
    all); `methods: [grounding]` costs nothing extra. An item without draws (a direct
    call, outside an evaluation) is judged by grounding alone, and `data.methods` says
    which methods were used. Issues below `min_severity` (0.2) are not reported.
    """

    name = "hallucination"
    description = "grounding (unsupported claims) and self-consistency (claims re-samples do not repeat), together"
    Args = HallucinationArgs

    def __init__(self) -> None:
        self._grounding = Grounding()
        self._self_consistency = SelfConsistency()

    def needs(self, args: BaseModel) -> Needs:
        a: HallucinationArgs = args  # type: ignore[assignment]
        if "self_consistency" in a.methods:
            return self._self_consistency.needs(a.self_consistency)
        return Needs()

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: HallucinationArgs = args  # type: ignore[assignment]
        per_method: dict[str, list[list[Issue]]] = {}
        if "grounding" in a.methods:
            per_method["grounding"] = self._grounding.detect(items, a.grounding)
        if "self_consistency" in a.methods:
            drawn = [i for i, it in enumerate(items) if it.draws]
            found = self._self_consistency.detect([items[i] for i in drawn], a.self_consistency)
            by_item: list[list[Issue]] = [[] for _ in items]
            for i, issues in zip(drawn, found):
                by_item[i] = issues
            per_method["self_consistency"] = by_item
            used_draws = set(drawn)
        else:
            used_draws = set()
        out = []
        for i in range(len(items)):
            methods = [m for m in per_method if m != "self_consistency" or i in used_draws]
            out.append(_combine({m: per_method[m][i] for m in methods}, a.min_severity))
        return out


def _combine(found: dict[str, list[Issue]], min_severity: float) -> list[Issue]:
    """One issue: the most severe of the methods' issues, with every method's severity."""
    severities = {m: max((i.severity for i in issues), default=0.0) for m, issues in found.items()}
    candidates = [(issue, m) for m, issues in found.items() for issue in issues]
    if not candidates:
        return []
    worst, method = max(candidates, key=lambda c: c[0].severity)
    if worst.severity < min_severity:
        return []
    return [
        Issue(
            severity=worst.severity,
            message=f"{method}: {worst.message}",
            start=worst.start,
            end=worst.end,
            kind=f"{method}:{worst.kind}" if worst.kind else method,
            data={
                "method": method,
                "methods": list(found),
                "severities": {m: round(s, 4) for m, s in severities.items()},
                **dict(worst.data or {}),
            },
        )
    ]


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(Hallucination())
