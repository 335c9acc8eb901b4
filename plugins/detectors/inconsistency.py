"""Built-in detector `inconsistency`: contradictory answers to the same question."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import Detector, Issue, Item, Needs, hookimpl
from harness.plugins.detectors._chrf import pairwise_chrf
from harness.plugins.detectors._text import TOKEN, number_key, numbers, stop_words

Mode = Literal["yes_no", "number", "short", "text"]
_YES_NO = re.compile(r"^\W*(yes|no|true|false|correct|incorrect)\b", re.IGNORECASE)
_YES = frozenset({"yes", "true", "correct"})
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n")


class InconsistencyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    short_words: int = Field(
        6,
        ge=1,
        description="Answers of at most this many words compare as normalised short answers.",
    )
    min_chrf: float = Field(
        30.0,
        gt=0.0,
        lt=100.0,
        description="For long answers: mean chrF with the others at which severity reaches 0.5 "
        "(1.0 at 0).",
    )
    draws: int = Field(
        0,
        ge=0,
        description="Sampled outputs to ask the harness for; 0 uses the draws other components "
        "asked for, if any.",
    )
    draw_temperature: float = Field(0.8, gt=0.0, description="Sampling temperature of those draws.")
    paraphrases: bool = Field(True, description="Compare samples that share `sample.group`.")
    resamples: bool = Field(True, description="Compare each output with its draws.")
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """What one output answers, in every form that could be compared."""

    text: str
    yes_no: str | None
    yes_no_span: tuple[int, int] | None
    number: float | None
    number_span: tuple[int, int] | None
    """Spans are character offsets into the output."""
    words: frozenset[str] | None
    """Content words of a short answer (None when the answer is long)."""

    def shown(self, mode: Mode) -> str:
        if mode == "yes_no":
            return str(self.yes_no)
        if mode == "number":
            return f"{self.number:g}"
        clipped = " ".join(self.text.split())
        return clipped if len(clipped) <= 80 else clipped[:79] + "…"


def extract_answer(text: str, short_words: int, question: str = "") -> Answer | None:
    """The answer of an output: yes/no, its number, its short form; None when empty.

    The number is the last of the first sentence that has one, preferring numbers the
    question does not already give: "There are 180 minutes in 3 hours" answers 180."""
    stripped = text.strip()
    if not stripped:
        return None
    m = _YES_NO.match(text)
    yes_no = ("yes" if m.group(1).lower() in _YES else "no") if m else None
    yes_no_span = (m.start(1), m.end(1)) if m else None

    number = span = None
    found = numbers(text)
    if len(found) > 1:  # a spelled "one" beside other numbers is a pronoun ("one of")
        found = [n for n in found if not (n.spelled and n.value <= 1)] or found
    if found:
        given = {number_key(n.value) for n in numbers(question)}
        new = [n for n in found if number_key(n.value) not in given] or found
        # the last number of the first sentence that has one: "12 plus 7 equals 19. ..."
        end = _SENTENCE_END.search(text, new[0].end)
        limit = end.start() if end else len(text)
        chosen = [n for n in new if n.start < limit][-1]
        number, span = chosen.value, (chosen.start, chosen.end)

    words = [w.group().lower() for w in TOKEN.finditer(text)]
    short = None
    if len(words) <= short_words:
        stop = stop_words()
        content = frozenset(w for w in words if w not in stop)
        short = content or frozenset(words)
    return Answer(stripped, yes_no, yes_no_span, number, span, short)


def _mode(answers: Sequence[Answer]) -> Mode:
    if all(a.yes_no is not None for a in answers):
        return "yes_no"
    if all(a.number is not None for a in answers):
        return "number"
    if all(a.words is not None for a in answers):
        return "short"
    return "text"


def _agree(a: Answer, b: Answer, mode: Mode) -> bool:
    if mode == "yes_no":
        return a.yes_no == b.yes_no
    if mode == "number":
        assert a.number is not None and b.number is not None
        return abs(a.number - b.number) <= 1e-6 * max(1.0, abs(a.number), abs(b.number))
    assert a.words is not None and b.words is not None
    return a.words <= b.words or b.words <= a.words  # "Paris" agrees with "It is Paris"


@dataclass(frozen=True, slots=True)
class _Verdict:
    severity: float
    mode: Mode
    conflicting: list[int]
    agreement: float | None
    """Mean chrF with the others (text mode only)."""


def _judge(
    answers: Sequence[Answer], judged: Sequence[int], min_chrf: float
) -> dict[int, _Verdict]:
    """Severity of each judged answer against all the others."""
    mode = _mode(answers)
    n = len(answers)
    out: dict[int, _Verdict] = {}
    if mode == "text":
        scores = pairwise_chrf([a.text for a in answers], rows=judged)
        for i in judged:
            mean = float((np.nansum(scores[i]) - scores[i, i]) / (n - 1))
            if mean >= min_chrf:
                severity = 0.5 * (100.0 - mean) / (100.0 - min_chrf)
            else:
                severity = 0.5 + 0.5 * (min_chrf - mean) / min_chrf
            low = [j for j in range(n) if j != i and scores[i, j] < min_chrf]
            out[i] = _Verdict(severity, mode, low, mean)
        return out
    agree = [[_agree(answers[i], answers[j], mode) for j in range(n)] for i in range(n)]
    support = [sum(row) for row in agree]
    for i in judged:
        conflicting = [j for j in range(n) if not agree[i][j]]
        disagreement = len(conflicting) / (n - 1)
        # Agreeing with a strict majority is not the problem: report it, below the usual
        # threshold. Being outvoted, tied or in a split group is.
        if 2 * support[i] > n:
            severity = 0.5 * disagreement
        else:
            severity = disagreement
        out[i] = _Verdict(severity, mode, conflicting, None)
    return out


class Inconsistency(Detector):
    """Contradictory answers to the same question.

    Two ways of asking the same question: paraphrases (samples that share `sample.group`) and
    re-sampling (the output against `item.draws`). From each answer it extracts, in order of
    preference, a yes/no (a leading yes/no/true/false), a number (the last number of the
    first sentence that has one, digits or words: "forty-two" is 42, preferring numbers the
    question does not give), or a short normalised answer (at most `short_words` (6) words;
    "Paris" agrees with "It is Paris"); the first form that every answer in the comparison
    has decides how they compare. Long answers fall back to chrF (sacrebleu): severity 0.5
    at a mean chrF of `min_chrf` (30) with the others, 1.0 at 0.

    For categorical answers the severity of an answer is the share of the others that contradict
    it; an answer that sides with a strict majority gets half that (reported, but below the
    usual 0.5 threshold). A re-sampled comparison judges only the output, never the draws.
    Issues have `kind` "paraphrase" or "resample"; `data` names the answer type, every
    answer by sample id (or draw number) and the conflicting ones; the evidence span is the
    extracted number or yes/no where there is one. `draws` (0) asks the harness for draws at
    `draw_temperature` (0.8); with 0 it uses whatever draws other components asked for.
    Issues below `min_severity` (0.2) are not reported.
    """

    name = "inconsistency"
    description = "paraphrased or re-sampled questions that get contradictory answers"
    Args = InconsistencyArgs

    def needs(self, args: BaseModel) -> Needs:
        a: InconsistencyArgs = args  # type: ignore[assignment]
        return Needs(draws=a.draws, draw_temperature=a.draw_temperature)

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: InconsistencyArgs = args  # type: ignore[assignment]
        issues: list[list[Issue]] = [[] for _ in items]
        answers = [
            extract_answer(item.output, a.short_words, item.sample.instruction) for item in items
        ]

        if a.paraphrases:
            groups: dict[str, list[int]] = defaultdict(list)
            for index, item in enumerate(items):
                if item.sample.group is not None and answers[index] is not None:
                    groups[item.sample.group].append(index)
            for members in groups.values():
                if len(members) < 2:
                    continue
                group_answers = [answers[i] for i in members]
                verdicts = _judge(group_answers, range(len(members)), a.min_chrf)  # type: ignore[arg-type]
                ids = [items[i].sample.id for i in members]
                for local, verdict in verdicts.items():
                    issue = _issue("paraphrase", verdict, group_answers, local, ids, a)
                    if issue is not None:
                        issues[members[local]].append(issue)

        if a.resamples:
            for index, item in enumerate(items):
                answer = answers[index]
                draws = [
                    extract_answer(d.text, a.short_words, item.sample.instruction)
                    for d in item.draws
                ]
                drawn = [d for d in draws if d is not None]
                if answer is None or not drawn:
                    continue
                labels = ["output"] + [
                    f"draw {d.draw}"
                    for d, x in zip(item.draws, draws, strict=True)
                    if x is not None
                ]
                verdict = _judge([answer, *drawn], [0], a.min_chrf)[0]
                issue = _issue("resample", verdict, [answer, *drawn], 0, labels, a)
                if issue is not None:
                    issues[index].append(issue)
        return issues


def _issue(
    kind: str,
    verdict: _Verdict,
    answers: Sequence[Answer],
    judged: int,
    labels: Sequence[str],
    a: InconsistencyArgs,
) -> Issue | None:
    if verdict.severity < a.min_severity or verdict.severity <= 0.0:
        return None
    mine = answers[judged]
    mode = verdict.mode
    conflicting = {labels[j]: answers[j].shown(mode) for j in verdict.conflicting}
    where = "its paraphrases" if kind == "paraphrase" else "its re-sampled outputs"
    if mode == "text":
        message = f"long answer disagrees with {where} (mean chrF {verdict.agreement:.0f})"
    else:
        shown = "; ".join(f"{label}: {answer}" for label, answer in list(conflicting.items())[:4])
        message = f"answer '{mine.shown(mode)}' conflicts with {where} ({shown})"
    span: tuple[int, int] | None = None
    if mode == "number":
        span = mine.number_span
    elif mode == "yes_no":
        span = mine.yes_no_span
    data: dict[str, Any] = {
        "answer_type": mode,
        "answer": mine.shown(mode),
        "answers": {
            label: answer.shown(mode) for label, answer in zip(labels, answers, strict=True)
        },
        "conflicting": conflicting,
    }
    if verdict.agreement is not None:
        data["mean_chrf"] = round(verdict.agreement, 2)
    return Issue(
        severity=round(min(1.0, verdict.severity), 4),
        message=message,
        start=span[0] if span else None,
        end=span[1] if span else None,
        kind=kind,
        data=data,
    )


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(Inconsistency())
