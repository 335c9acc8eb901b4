"""Cleaning candidate training rows before they join a dataset.

Every candidate from a data source passes, in this order (so that each dropped row is
counted once, under the first reason that applies):

1. validity: a non-empty output and a prompt (instruction or input);
2. exact duplicates (same normalised instruction + input + output) of an earlier
   candidate (`duplicate`) or of a row already in the dataset (`duplicate_of_parent`);
3. decontamination against the eval suites the caller names: a candidate is dropped
   when its normalised input equals an eval item's input (`eval_input`), when its
   input + output shares a word n-gram (13 by default) with an eval item's input +
   references (`eval_ngram`), or when its output is an eval reference of at least
   `min_reference_tokens` words (`eval_reference`: the eval answer under another
   question). Eval texts shorter than n words count as one n-gram of their own length
   when they have at least `min_ngram` words (GPT-3's decontamination used n between 8
   and 13 for the same reason: most eval items are shorter than 13 words);
4. near-duplicates: Jaccard similarity of character 5-gram sets of the normalised
   text at or above 0.8 with an earlier kept candidate (`near_duplicate`) or with a row
   already in the dataset (`near_duplicate_of_parent`). Rows that share a
   `provenance.family` (augmented variants of one seed row, and the seed) are variants
   on purpose and are not compared with each other. Jaccard is computed exactly
   from sparse binary shingle matrices (scikit-learn's CountVectorizer, one sparse
   product per chunk): for the thousands of rows a dataset grows by, that is as fast
   as MinHash and has no false positives or negatives.

Normalisation (`harness.suite.keys`, shared with the data sources' `exclude_inputs`): Unicode NFKC, case
folded, sentence punctuation removed, symbols such as + - * / = kept as tokens (so
"3 + 4" and "3 - 4" stay different), whitespace collapsed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.suite.keys import input_key, normalize, prompt_text, tokens
from harness.suite.load import Suite
from harness.types import TrainingExample

DROP_REASONS: dict[str, str] = {
    "invalid": "empty output, or neither instruction nor input",
    "eval_input": "its input is an eval item's input",
    "eval_ngram": "shares an n-gram with an eval item's input + references",
    "eval_reference": "its output is an eval item's reference",
    "duplicate": "exact duplicate of an earlier candidate",
    "duplicate_of_parent": "exact duplicate of a row already in the dataset",
    "near_duplicate": "near-duplicate of an earlier candidate",
    "near_duplicate_of_parent": "near-duplicate of a row already in the dataset",
}
"""Every reason curation drops a row for, and what it means."""



def row_text(example: TrainingExample) -> str:
    """The normalised text deduplication compares: instruction, input and output."""
    return normalize(f"{example.instruction}\n{example.input}\n{example.output}")


def content_hash(example: TrainingExample) -> str:
    """sha256 of a row's training content (instruction, input, output), provenance aside."""
    payload = f"{example.instruction}\x1f{example.input}\x1f{example.output}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Decontamination
# ---------------------------------------------------------------------------

EvalRef = tuple[str, str]
"""(suite name, sample id)."""


@dataclass(frozen=True)
class SuiteRef:
    name: str
    hash: str


@dataclass
class EvalIndex:
    """What a candidate must not overlap: the inputs, n-grams and references of eval items."""

    suites: list[SuiteRef]
    n: int
    min_ngram: int
    min_reference_tokens: int
    inputs: dict[str, set[EvalRef]] = field(default_factory=dict)
    ngrams: dict[tuple[str, ...], set[EvalRef]] = field(default_factory=dict)
    references: dict[str, set[EvalRef]] = field(default_factory=dict)
    short_lengths: set[int] = field(default_factory=set)
    """Lengths (< n) of eval texts indexed whole."""

    @property
    def excluded_inputs(self) -> frozenset[str]:
        """Normalised eval inputs: what `DataRequest.exclude_inputs` carries."""
        return frozenset(self.inputs)

    def check(
        self, example: TrainingExample, exempt: frozenset[EvalRef] = frozenset()
    ) -> tuple[str, str] | None:
        """(reason, which eval item) when `example` overlaps an eval item not in `exempt`."""
        hits = self.inputs.get(input_key(example.instruction, example.input), set()) - exempt
        if hits:
            return "eval_input", _describe(hits)
        words = tokens(f"{prompt_text(example.instruction, example.input)}\n{example.output}")
        for length in sorted({self.n, *self.short_lengths}, reverse=True):
            for start in range(len(words) - length + 1):
                hits = self.ngrams.get(tuple(words[start : start + length]), set()) - exempt
                if hits:
                    return "eval_ngram", _describe(hits)
        hits = self.references.get(normalize(example.output), set()) - exempt
        if hits:
            return "eval_reference", _describe(hits)
        return None


def _describe(hits: set[EvalRef]) -> str:
    suite, sample_id = min(hits)
    more = f" (+{len(hits) - 1} more)" if len(hits) > 1 else ""
    return f"{suite}:{sample_id}{more}"


def build_eval_index(
    suites: Sequence[Suite], *, n: int = 13, min_ngram: int = 8, min_reference_tokens: int = 4
) -> EvalIndex:
    """Index the eval items of `suites` for `EvalIndex.check`."""
    index = EvalIndex(
        suites=[SuiteRef(s.name, s.hash) for s in suites],
        n=n,
        min_ngram=min_ngram,
        min_reference_tokens=min_reference_tokens,
    )
    for suite in suites:
        for sample in suite.samples:
            ref: EvalRef = (suite.name, sample.id)
            key = input_key(sample.instruction, sample.input)
            if key:
                index.inputs.setdefault(key, set()).add(ref)
            prompt = prompt_text(sample.instruction, sample.input)
            for reference in sample.references or ("",):
                words = tokens(f"{prompt}\n{reference}")
                if len(words) >= n:
                    grams = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
                elif len(words) >= min_ngram:
                    grams = {tuple(words)}
                    index.short_lengths.add(len(words))
                else:
                    grams = set()
                for gram in grams:
                    index.ngrams.setdefault(gram, set()).add(ref)
                if len(tokens(reference)) >= min_reference_tokens:
                    index.references.setdefault(normalize(reference), set()).add(ref)
    return index


# ---------------------------------------------------------------------------
# Curation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What curation did with one candidate."""

    example: TrainingExample
    reason: str | None
    """None: kept. Otherwise a key of DROP_REASONS."""
    detail: str = ""
    """Which eval item or which row it collided with."""

    @property
    def kept(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class CurationResult:
    decisions: list[Decision]

    @property
    def kept(self) -> list[TrainingExample]:
        return [d.example for d in self.decisions if d.kept]

    @property
    def dropped(self) -> dict[str, int]:
        """Reason -> count, sorted by reason."""
        counts = Counter(d.reason for d in self.decisions if d.reason is not None)
        return dict(sorted(counts.items()))


def eval_exemption(example: TrainingExample) -> frozenset[EvalRef]:
    """The eval item a row is a human correction of (annotation imports), if any: such a
    row matches its own eval item by construction and is checked against all others."""
    own = example.provenance.get("eval_sample") if isinstance(example.provenance, Mapping) else None
    if isinstance(own, Mapping) and "suite" in own and "id" in own:
        return frozenset({(str(own["suite"]), str(own["id"]))})
    return frozenset()


def curate(
    candidates: Sequence[TrainingExample],
    *,
    existing: Sequence[TrainingExample] = (),
    eval_index: EvalIndex | None = None,
    near_duplicate_threshold: float = 0.8,
    shingle_size: int = 5,
    allow_own_eval_item: bool = False,
) -> CurationResult:
    """Decide, for each candidate in order, whether it is kept and why not.

    `existing` are the rows already in the dataset (the parent). An earlier candidate
    wins over a later duplicate, so pass candidates best first. With
    `allow_own_eval_item`, a row whose provenance names the eval item it corrects
    (`eval_sample`) is not dropped for matching that one item."""
    if not 0.0 < near_duplicate_threshold <= 1.0:
        raise ValueError(f"near_duplicate_threshold must be in (0, 1], got {near_duplicate_threshold}")
    reasons: list[str | None] = [None] * len(candidates)
    details = [""] * len(candidates)
    texts = [row_text(e) for e in candidates]
    parent_texts = [row_text(e) for e in existing]
    parent_index = {text: j for j, text in reversed(list(enumerate(parent_texts)))}
    first_seen: dict[str, int] = {}
    for i, (example, text) in enumerate(zip(candidates, texts)):
        if not example.output.strip() or not (example.instruction.strip() or example.input.strip()):
            reasons[i] = "invalid"
        elif text in parent_index:
            reasons[i], details[i] = "duplicate_of_parent", f"parent row {parent_index[text]}"
        elif text in first_seen:
            reasons[i], details[i] = "duplicate", f"candidate {first_seen[text]}"
        else:
            first_seen[text] = i
            if eval_index is not None:
                exempt = eval_exemption(example) if allow_own_eval_item else frozenset()
                hit = eval_index.check(example, exempt)
                if hit:
                    reasons[i], details[i] = hit

    alive = [i for i in range(len(candidates)) if reasons[i] is None]
    if alive:
        near_parent, near_earlier = _near_duplicates(
            [texts[i] for i in alive],
            parent_texts,
            near_duplicate_threshold,
            shingle_size,
            [family(candidates[i]) for i in alive],
            [family(e) for e in existing],
        )
        kept_positions: set[int] = set()
        for position, i in enumerate(alive):
            if position in near_parent:
                reasons[i], details[i] = "near_duplicate_of_parent", f"parent row {near_parent[position]}"
                continue
            earlier = [p for p in near_earlier.get(position, ()) if p in kept_positions]
            if earlier:
                reasons[i], details[i] = "near_duplicate", f"candidate {alive[min(earlier)]}"
                continue
            kept_positions.add(position)
    return CurationResult([Decision(e, r, d) for e, r, d in zip(candidates, reasons, details)])


def family(example: TrainingExample) -> str | None:
    """The original a row derives from (`provenance.family`): augmented variants of one
    seed row share it with each other and with the seed."""
    value = example.provenance.get("family") if isinstance(example.provenance, Mapping) else None
    return str(value) if value is not None else None


def _near_duplicates(
    texts: Sequence[str],
    parent: Sequence[str],
    threshold: float,
    shingle_size: int,
    families: Sequence[str | None],
    parent_families: Sequence[str | None],
    chunk: int = 512,
) -> tuple[dict[int, int], dict[int, list[int]]]:
    """For each text: the first parent row at Jaccard >= threshold, and the earlier texts
    at Jaccard >= threshold (exact Jaccard over character shingle sets). Rows of one
    family are variants on purpose and are not compared."""
    from sklearn.feature_extraction.text import CountVectorizer

    everything = list(texts) + list(parent)
    # Texts shorter than a shingle get a single shingle of their own (padded), so that
    # they still compare (exact duplicates were handled before).
    padded = [t if len(t) >= shingle_size else t.ljust(shingle_size, "\x00") for t in everything]
    vectorizer = CountVectorizer(
        analyzer="char",
        ngram_range=(shingle_size, shingle_size),
        lowercase=False,
        binary=True,
        dtype=np.float32,
    )
    matrix = vectorizer.fit_transform(padded).tocsr()
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    new, old = matrix[: len(texts)], matrix[len(texts) :]
    new_sizes, old_sizes = sizes[: len(texts)], sizes[len(texts) :]
    near_parent: dict[int, int] = {}
    near_earlier: dict[int, list[int]] = {}
    for start in range(0, len(texts), chunk):
        block = new[start : start + chunk]
        block_sizes = new_sizes[start : start + chunk]
        if old.shape[0]:
            # Pairs come sorted by (row, col): the first is the earliest parent row.
            for row, col in _similar_pairs(block @ old.T, block_sizes, old_sizes, threshold):
                if not _same_family(families[start + row], parent_families[col]):
                    near_parent.setdefault(start + row, col)
        # Earlier candidates only: the columns 0 .. start + chunk of the same matrix.
        end = min(start + chunk, len(texts))
        for row, col in _similar_pairs(block @ new[:end].T, block_sizes, new_sizes[:end], threshold):
            if col < start + row and not _same_family(families[start + row], families[col]):
                near_earlier.setdefault(start + row, []).append(col)
    return near_parent, near_earlier


def _same_family(a: str | None, b: str | None) -> bool:
    return a is not None and a == b


def _similar_pairs(
    intersections: object, row_sizes: np.ndarray, col_sizes: np.ndarray, threshold: float
) -> Iterable[tuple[int, int]]:
    """(row, col) pairs whose Jaccard |a & b| / |a | b| reaches `threshold`, in row order."""
    coo = intersections.tocoo()  # type: ignore[attr-defined]
    if coo.nnz == 0:
        return []
    union = row_sizes[coo.row] + col_sizes[coo.col] - coo.data
    jaccard = coo.data / np.maximum(union, 1)
    hit = jaccard >= threshold - 1e-9
    rows, cols = coo.row[hit], coo.col[hit]
    order = np.lexsort((cols, rows))
    return list(zip(rows[order].tolist(), cols[order].tolist()))
