"""Built-in detector `grounding`: content of the output that nothing given supports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness import Detector, Issue, Item, hookimpl
from harness.plugins.detectors._text import (
    Claim,
    claims,
    derived_numbers,
    number_key,
    numbers,
    word_stems,
)


class GroundingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    number_weight: float = Field(
        3.0, ge=0.0, description="Weight of a number in the unsupported share."
    )
    name_weight: float = Field(
        2.0, ge=0.0, description="Weight of a name (a capitalised word inside a sentence)."
    )
    content_weight: float = Field(1.0, ge=0.0, description="Weight of any other content word.")
    smoothing: float = Field(
        1.0,
        ge=0.0,
        description="Added to the total weight, so one odd word in a three-word answer is not "
        "100%.",
    )
    number_floor: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Least severity when a number (digits, or spelled above ten) is unsupported: "
        "a number nobody gave is a hallucination however much else is right.",
    )
    arithmetic: bool = Field(
        True,
        description="Count a number as supported when arithmetic on given numbers (each used "
        "once) gives it.",
    )
    content_needs_context: bool = Field(
        True,
        description="Judge plain content words only when the sample has an input or a reference; "
        "an instruction alone ('Define ephemeral.') cannot support a definition.",
    )
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


class _NumberSupport:
    """Whether a value is given, or follows by arithmetic from the given numbers."""

    def __init__(self, values: Sequence[float], arithmetic: bool):
        self.values = values
        self.given = {number_key(v) for v in values}
        self.arithmetic = arithmetic
        self._derived: set[float] | None = None

    def __contains__(self, value: float) -> bool:
        key = number_key(value)
        if key in self.given:
            return True
        if not self.arithmetic or not self.values:
            return False
        if self._derived is None:  # built only for outputs with a number not given
            self._derived = derived_numbers(self.values)
        return key in self._derived


class Grounding(Detector):
    """Hallucination, checked against what the model was given.

    Collects the claims of the output: numbers (in digits or words: "forty-two" is 42),
    names (capitalised words that do not start a sentence) and content words (not a
    scikit-learn stop word, not answer framing such as "means" or "equals"), and looks
    each up in the instruction, the input and the references, after light normalisation
    (case, possessives, plural and -ed/-ing endings). A number also counts as supported
    when arithmetic on the given numbers, each used once, gives it (`arithmetic`, on):
    "12 plus 7" supports 19 but not 21. Spelled-out "zero" and "one" are not numbers here ("one of
    the"), and spelled-out numbers up to ten weigh as plain words.

    Severity is the weighted unsupported share of distinct claims: unsupported weight /
    (total weight + `smoothing` (1)), with numbers weighing `number_weight` (3), names
    `name_weight` (2) and other words `content_weight` (1), and at least `number_floor`
    (0.5) when a number is unsupported. Claims that only restate the instruction ("8
    times 7 is ...", the word being defined) are left out of the share: restating the
    question supports nothing. Plain content words are only judged when the sample has
    an input or a reference (`content_needs_context`, on).
    `data` lists what was unsupported; the evidence span is the first of the heaviest
    unsupported claims, whose category is the `kind` ("unsupported_number",
    "unsupported_name", "unsupported_content"). Issues below `min_severity` (0.2) are
    not reported.
    """

    name = "grounding"
    description = (
        "numbers, names and content words that neither input, instruction nor references support"
    )
    Args = GroundingArgs

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: GroundingArgs = args  # type: ignore[assignment]
        return [self._one(item, a) for item in items]

    def _one(self, item: Item, a: GroundingArgs) -> list[Issue]:
        sample = item.sample
        context = [sample.input, *sample.references]
        sources = [sample.instruction, *context]
        has_context = any(t.strip() for t in context)
        judge_content = has_context or not a.content_needs_context

        found = claims(item.output, judge_content, echoes_of=sample.instruction)
        if not found:
            return []
        stems = word_stems(sources)
        given = _NumberSupport([n.value for text in sources for n in numbers(text)], a.arithmetic)
        weights = {"number": a.number_weight, "name": a.name_weight, "content": a.content_weight}

        total = unsupported_weight = 0.0
        unsupported: list[Claim] = []
        for claim in found:
            weight = weights[claim.category]
            total += weight
            supported = claim.key in given if claim.numeric else claim.key in stems
            if not supported:
                unsupported_weight += weight
                unsupported.append(claim)
        if not unsupported or total <= 0.0:
            return []
        severity = unsupported_weight / (total + a.smoothing)
        if any(c.category == "number" for c in unsupported):
            severity = max(severity, a.number_floor)
        if severity < a.min_severity:
            return []
        worst = max(unsupported, key=lambda c: (weights[c.category], -c.start))
        shown = ", ".join(c.text for c in unsupported[:5]) + (", …" if len(unsupported) > 5 else "")
        return [
            Issue(
                severity=round(severity, 4),
                message=f"unsupported by the input and references: {shown}",
                start=worst.start,
                end=worst.end,
                kind=f"unsupported_{worst.category}",
                data={
                    "unsupported": [c.text for c in unsupported],
                    "numbers": [c.text for c in unsupported if c.category == "number"],
                    "names": [c.text for c in unsupported if c.category == "name"],
                    "share": round(unsupported_weight / total, 4),
                    "claims": len(found),
                },
            )
        ]


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(Grounding())
