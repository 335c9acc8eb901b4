"""How an input is recognised across suites, pools and datasets: its normalised text.

Normalisation: Unicode NFKC, case folded, sentence punctuation removed, symbols such as
+ - * / = kept as tokens (so "3 + 4" and "3 - 4" stay different), whitespace collapsed.
The input key is what curation's decontamination and the data sources' `exclude_inputs`
(`DataRequest.excludes`) compare; it lives with the suite, below the contracts, because
both the contracts and the data stage need it.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_TOKEN = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)
_SOFT_PUNCTUATION = frozenset(".,;:!?\"'`()[]{}«»“”‘’…–—·")


def tokens(text: str) -> list[str]:
    """Normalised word and symbol tokens of `text`."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [t for t in _TOKEN.findall(folded) if t not in _SOFT_PUNCTUATION]


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """The normalised form of `text` (see the module docstring)."""
    return " ".join(tokens(text))


def input_key(instruction: str, input: str) -> str:
    """What identifies a question: the normalised input, or the instruction when there is
    no input (suites whose rows carry the question in the instruction)."""
    return normalize(input) if input.strip() else normalize(instruction)


def prompt_text(instruction: str, input: str) -> str:
    """The part of a row that says what is asked (input, or instruction without input)."""
    return input if input.strip() else instruction
