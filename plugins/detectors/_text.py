"""Text helpers shared by the built-in detectors (private: not part of the plugin API).

Tokens keep their character offsets so that every issue can point at its evidence.
Everything here is pure: compiled regexes and small word sets built from literals at
import, and scikit-learn's stop words loaded on first use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Literal, NamedTuple

# A number (digits, optional thousands separators or decimals) or a word made of letters
# with inner apostrophes ("don't", "model's"). Hyphens split words: "forty-two" is two.
TOKEN = re.compile(r"(?P<num>\d+(?:[.,]\d+)*)|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)")
# What may stand between the previous token and a sentence-initial one.
_SENTENCE_BREAK = re.compile(r"[.!?:;\n]")
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+$")

TokenKind = Literal["word", "number"]


class Token(NamedTuple):
    # A NamedTuple, not a dataclass: a run makes millions of these, and tuples are cheap.
    text: str
    start: int
    end: int
    kind: TokenKind
    initial: bool
    """First token of the text or of a sentence (so its capital says nothing)."""
    lower: str


_new_token = partial(tuple.__new__, Token)  # skips NamedTuple's Python-level __new__


@lru_cache(maxsize=8192)
def tokens(text: str) -> tuple[Token, ...]:
    """Words and numbers of `text` with their offsets, in order (cached: instructions
    and references repeat across a run)."""
    out: list[Token] = []
    breaks = [m.start() for m in _SENTENCE_BREAK.finditer(text)]
    b = 0  # index of the first sentence break not yet passed
    for m in TOKEN.finditer(text):
        start = m.start()
        initial = not out
        while b < len(breaks) and breaks[b] < start:
            initial = True
            b += 1
        word = m.group()
        kind = "number" if m.lastgroup == "num" else "word"
        out.append(_new_token((word, start, m.end(), kind, initial, word.lower())))
    return tuple(out)


def is_name(token: Token) -> bool:
    """A capitalised word that is not sentence-initial (and not the pronoun I)."""
    return (
        token.kind == "word" and not token.initial and token.text[0].isupper() and token.text != "I"
    )


# ---------------------------------------------------------------------------
# Light normalisation
# ---------------------------------------------------------------------------


def _drop_final_e(word: str) -> str:
    return word[:-1] if len(word) > 2 and word.endswith("e") else word


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Case folded, possessive and simple plural/inflection endings stripped.

    Deliberately crude and symmetric: it only has to map "lasting", "lasts" and "last"
    (or "defined" and "define") to the same key on both sides of a comparison.
    """
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    elif w.endswith("s'"):
        w = w[:-1]
    if len(w) <= 2:
        return w
    if w.endswith(("ies", "ied")) and len(w) > 4:
        return w[:-3] + "y"
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2 and not w.endswith("eed"):
            base = w[: -len(suffix)]
            if len(base) > 2 and base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]  # running -> run, stopped -> stop
            return _drop_final_e(base)
    if w.endswith("es") and len(w) > 4 and (w[-3] in "sxz" or w[-4:-2] in ("ch", "sh")):
        return w[:-2]
    if w.endswith("s") and len(w) > 3 and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return _drop_final_e(w)


# ---------------------------------------------------------------------------
# Numbers, in digits or in words
# ---------------------------------------------------------------------------

_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
NUMBER_WORDS = frozenset(_UNITS) | frozenset(_TENS) | frozenset(_SCALES)
# Between two number words of one number: spaces or a hyphen.
_NUMBER_GAP = re.compile(r"^(?:\s*-\s*|\s+)$")
_SCALE_COMMA = re.compile(r"^,\s+$")


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    start: int
    end: int
    spelled: bool
    """Written in words ("forty-two") rather than digits."""


def _digits_value(text: str) -> float | None:
    if _THOUSANDS.match(text):
        return float(text.replace(",", ""))
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None  # "1.2.3": a version or a list, not one number


# Which kind of number word may follow which within one number ("" = the first word).
_FOLLOWS: dict[str, frozenset[str]] = {
    "": frozenset({"unit", "teen", "tens"}),
    "unit": frozenset({"hundred", "scale"}),
    "teen": frozenset({"hundred", "scale"}),
    "tens": frozenset({"unit", "hundred", "scale"}),
    "hundred": frozenset({"unit", "teen", "tens", "scale"}),
    "scale": frozenset({"unit", "teen", "tens"}),
}


def _category(word: str) -> str:
    if word in _UNITS:
        return "unit" if _UNITS[word] < 10 else "teen"
    if word in _TENS:
        return "tens"
    if word == "hundred":
        return "hundred"
    return "scale" if word in _SCALES else ""


@lru_cache(maxsize=8192)
def numbers(text: str) -> tuple[Number, ...]:
    """Every number in `text`, whether written in digits or in words, with its span."""
    toks = tokens(text)
    found: list[Number] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "number":
            value = _digits_value(tok.text)
            if value is not None:
                found.append(Number(value, tok.start, tok.end, False))
            i += 1
            continue
        if tok.lower not in NUMBER_WORDS or tok.lower in _SCALES:
            i += 1
            continue
        total, current, j, previous = 0, 0, i, ""
        while j < len(toks):
            w = toks[j].lower
            if (
                w == "and"  # "one hundred and five": "and" joins a scale to what follows
                and previous in ("hundred", "scale")
                and j + 1 < len(toks)
                and toks[j + 1].lower in NUMBER_WORDS
            ):
                j += 1
                continue
            category = _category(w)
            if category not in _FOLLOWS[previous]:
                break  # "two three" is two numbers, not five
            gap = text[toks[j - 1].end : toks[j].start] if j > i else " "
            # "one thousand, two hundred": a comma may follow a scale word
            if not (_NUMBER_GAP.match(gap) or (previous == "scale" and _SCALE_COMMA.match(gap))):
                break
            if category in ("unit", "teen"):
                current += _UNITS[w]
            elif category == "tens":
                current += _TENS[w]
            elif category == "hundred":
                current = max(current, 1) * 100
            else:
                total += max(current, 1) * _SCALES[w]
                current = 0
            previous = category
            j += 1
        found.append(Number(float(total + current), tok.start, toks[j - 1].end, True))
        i = j
    return tuple(found)


def number_key(value: float) -> float:
    """A hashable key that makes 19, 19.0 and 19.000000001 equal."""
    return round(value, 6)


def _pair_results(a: float, b: float) -> list[float]:
    out = [a + b, a - b, b - a, a * b, a * b / 100]  # /100: "15% of 80"
    if b:
        out.append(a / b)
    if a:
        out.append(b / a)
    return out


def derived_numbers(
    values: Sequence[float], pair_limit: int = 8, triple_limit: int = 5
) -> set[float]:
    """Keys of the values and of what arithmetic on distinct ones of them gives.

    An arithmetic answer ("What is 12 plus 7?" -> "19") is supported by its operands
    even though 19 appears nowhere in the question. Each given number is used at most
    once per expression (else 7 and 12 would support almost any small number): one
    number squared or square-rooted, two combined by + - x / or "percent of", and,
    for up to `triple_limit` numbers, three combined in two steps.
    """
    base = [number_key(v) for v in values]  # not deduplicated: "7 plus 7" uses 7 twice
    out = set(base)
    for a in base:
        out.add(number_key(a * a))
        if a > 0 and (a**0.5).is_integer():
            out.add(number_key(a**0.5))
    pairs = base[:pair_limit]
    for i, a in enumerate(pairs):
        for j in range(i + 1, len(pairs)):
            results = _pair_results(a, pairs[j])
            out.update(number_key(r) for r in results)
            if len(base) > triple_limit:
                continue
            for k, c in enumerate(base):
                if k not in (i, j):
                    for r in results:
                        out.update(number_key(x) for x in _pair_results(r, c))
    return out


# ---------------------------------------------------------------------------
# Content words
# ---------------------------------------------------------------------------

# Words an instruction-tuned model uses to frame any answer ("The word X means ...",
# "The answer is ...", "12 plus 7 equals 19"): they carry no claim of their own.
_FRAMING = (
    "word words term terms mean means meaning meanings refer refers referred referring define "
    "defined defines definition definitions describe describes described describing used use "
    "uses using usage thing things type types kind kinds sort usually typically generally "
    "commonly especially particular particularly certain way ways act state quality answer "
    "answers question example examples called like said simply just really actually basically "
    "specific specifically various different form forms sense context known make makes making "
    "given write written writing spell spelled spelling result results equal equals equaling "
    "total sum number numbers noun verb adjective adverb plus minus times multiplied divided "
    "product difference quotient add adding added subtract subtracting subtracted calculate "
    "calculation okay sure certainly here following response instruction input output "
    "hyphen hyphenated digit digits figure figures"
)


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words, less the number words (numbers are claims).

    Imported on first use: importing scikit-learn takes about a second, which every
    `load_plugins()` would otherwise pay."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - NUMBER_WORDS


FRAMING_STEMS = frozenset(stem(w) for w in _FRAMING.split())


def is_content_word(token: Token) -> bool:
    """A word that makes a claim: not a stop word, not answer framing, not a number word."""
    if token.kind != "word" or len(token.text) < 2:
        return False
    low = token.lower
    return low not in stop_words() and low not in NUMBER_WORDS and stem(low) not in FRAMING_STEMS


@lru_cache(maxsize=8192)
def _stems_of(text: str) -> frozenset[str]:
    return frozenset(stem(t.text) for t in tokens(text) if t.kind == "word")


def word_stems(texts: Iterable[str]) -> set[str]:
    """Stems of every word (and of each part of hyphenated words) in `texts`."""
    out: set[str] = set()
    for text in texts:
        out |= _stems_of(text)
    return out


def normalise_answer(text: str) -> str:
    """Lower case, words only, articles dropped: for comparing short answers."""
    words = [m.group().lower() for m in TOKEN.finditer(text)]
    return " ".join(w for w in words if w not in ("a", "an", "the"))


# ---------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------

Category = Literal["number", "name", "content"]


@dataclass(frozen=True, slots=True)
class Claim:
    """Something an output asserts: a number, a name or a content word, with its span."""

    text: str
    key: Any
    start: int
    end: int
    category: Category
    numeric: bool = False
    """Checked against the given numbers (a small spelled-out number is numeric content)."""


def claims(text: str, judge_content: bool, echoes_of: str = "") -> list[Claim]:
    """The distinct numbers, names and (if judged) content words of `text`, in order.

    Claims that only restate `echoes_of` (the instruction: "8 times 7 is ...", "The word
    'ephemeral' means ...") are left out: restating the question claims nothing.
    """
    toks = tokens(text)
    out: list[Claim] = []
    seen: set[tuple[bool, Any]] = set()
    in_number: set[int] = set()
    if echoes_of:
        seen.update((False, s) for s in word_stems([echoes_of]))
        seen.update((True, number_key(n.value)) for n in numbers(echoes_of))

    def add(claim: Claim) -> None:
        if (claim.numeric, claim.key) not in seen:
            seen.add((claim.numeric, claim.key))
            out.append(claim)

    for n in numbers(text):
        if n.spelled:  # its words are the number, not content words
            in_number.update(t.start for t in toks if n.start <= t.start < n.end)
        if n.spelled and n.value <= 1:
            continue  # "one of the", "zero-sum": rarely a claimed quantity
        category: Category = "content" if n.spelled and n.value <= 10 else "number"
        add(Claim(text[n.start : n.end], number_key(n.value), n.start, n.end, category, True))
    for tok in toks:
        if tok.kind != "word" or tok.start in in_number:
            continue
        if is_name(tok) and is_content_word(tok):
            add(Claim(tok.text, stem(tok.text), tok.start, tok.end, "name"))
        elif judge_content and is_content_word(tok):
            add(Claim(tok.text, stem(tok.text), tok.start, tok.end, "content"))
    out.sort(key=lambda c: c.start)
    return out
