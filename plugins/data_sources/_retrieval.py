"""The tools the built-in data sources share: reading a candidate pool and finding the
pool rows nearest a cluster of failures (what a source is asked for, `DataRequest`, is
part of the public API: `from harness import DataRequest`).

Finding neighbours in a large pool takes two stages, because embedding a 60,000-row pool
with MiniLM takes about 20 minutes on two cores:

1. lexical retrieval over the whole pool: TF-IDF (scikit-learn) of character n-grams
   (3-5, within word boundaries, so inflections and shared word parts match), fitted
   once per pool file and process; each failing sample's top rows are gathered
   round-robin until there are `candidate_factor` x budget candidates;
2. the candidates alone are embedded (all-MiniLM-L6-v2) and ranked by cosine
   similarity to the cluster's members: round-robin over members (each member in turn
   takes its best remaining candidate, so every failing sample gets neighbours and no
   single one dominates), or by similarity to the members' centroid. "Best" is maximal
   marginal relevance (`DIVERSITY`): similarity to the member, less similarity to the
   rows already taken, so that the rows aimed at a cluster are diverse, not near-copies.

Both sides are described as a task, never by the model's wrong answer: a failing sample
as its prompt (the input, or the instruction when there is no input) and its reference;
a pool row as its prompt and its output.

A pool that mixes tasks (a broad instruction corpus, where the suite's own task is a
small minority) is compared by task as well, without an option to set: the instruction
joins the text on both sides, and each row's similarity to a failing sample is
multiplied by the similarity of their instructions (MiniLM, clipped to [0, 1]), so that
a row of another task that merely shares words with a failure ranks below the rows of
the failure's own task (or of a paraphrase of it).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from harness import (
    ConfigError,
    DataRequest,
    Embedder,
    Failure,
    NotFoundError,
    Suite,
    TrainingExample,
    TrainRowModel,
    input_key,
    normalize,
    prompt_text,
    read_jsonl,
)

Ranking = Literal["round_robin", "centroid"]
DIVERSITY = 0.3
"""Weight of novelty against relevance when round-robin picks a member's next row
(maximal marginal relevance): rows near a failure, but not near-copies of each other."""
Analyzer = Literal["char_wb", "char", "word"]


def failure_task_text(failure: Failure, include_instruction: bool = False) -> str:
    """A failing sample as a task: its prompt and its reference (not the model's answer);
    with `include_instruction`, the instruction too (for pools that mix tasks)."""
    sample = failure.sample
    prompt = (
        "\n".join(p for p in (sample.instruction, sample.input) if p.strip())
        if include_instruction
        else prompt_text(sample.instruction, sample.input)
    )
    return f"{prompt}\n{sample.reference}".strip()


def suite_task(suite: Suite) -> frozenset[str]:
    """The suite's own task: the instructions its samples use (normalised), or its default
    instruction when it has no samples. A pool row is on-task when its instruction is one
    of them."""
    found = {normalize(s.instruction) for s in suite.samples if s.instruction.strip()}
    if not found and suite.config.instruction:
        found.add(normalize(suite.config.instruction))
    return frozenset(found)


def example_task_text(example: TrainingExample, include_instruction: bool = False) -> str:
    """A training row as a task: its prompt and its output."""
    prompt = (
        "\n".join(p for p in (example.instruction, example.input) if p.strip())
        if include_instruction
        else prompt_text(example.instruction, example.input)
    )
    return f"{prompt}\n{example.output}".strip()


# ---------------------------------------------------------------------------
# Candidate pools
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Pool:
    """A validated JSONL file of training rows (instruction, input, output)."""

    path: Path
    label: str
    """How provenance names the file: relative to its suite when it is the suite's pool."""
    sha256: str
    rows: tuple[TrainingExample, ...]
    """Rows with the suite's default instruction filled in where a row gives none."""
    lines: tuple[int, ...]
    ids: tuple[str | None, ...]
    keys: tuple[str, ...]
    """Normalised input of each row (see `harness.input_key`)."""
    default_instruction: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def provenance(self, index: int) -> dict[str, object]:
        out: dict[str, object] = {
            "pool": self.label,
            "pool_sha256": self.sha256[:16],
            "line": self.lines[index],
        }
        if self.ids[index] is not None:
            out["id"] = self.ids[index]
        return out

    def on_task(self, task: frozenset[str]) -> np.ndarray:
        """Indices of the rows whose instruction is one of `task` (see `suite_task`)."""
        return _on_task(self, task)

    def mixes_tasks(self, task: frozenset[str]) -> bool:
        """Whether the pool holds rows of other tasks than `task` (a broad pool)."""
        return len(self.on_task(task)) < len(self.rows)

    def family(self, index: int) -> str:
        """The row's identity: rows derived from it (augmented variants) share it."""
        return f"pool:{self.sha256[:16]}:{self.lines[index]}"


@lru_cache(maxsize=8)
def _on_task(pool: Pool, task: frozenset[str]) -> np.ndarray:
    instructions = {i: normalize(i) for i in {row.instruction for row in pool.rows}}
    return np.array([i for i, row in enumerate(pool.rows) if instructions[row.instruction] in task], dtype=int)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_pool_path(suite: Suite, path: str | None) -> tuple[Path, str]:
    """(file, label) of the pool to read: `path` when given, else the suite's `pool:`."""
    if path:
        resolved = Path(path).expanduser().resolve()
        label = path
    elif suite.pool_path is not None:
        resolved = suite.pool_path
        label = f"{suite.name}/{suite.config.pool}"
    else:
        raise ConfigError(
            f"suite {suite.name!r} names no pool: add `pool: pool.jsonl` to {suite.path}, or give "
            "the source a file with --source-arg path=FILE.jsonl"
        )
    if not resolved.is_file():
        raise NotFoundError(f"pool file {resolved} does not exist")
    return resolved, label


def load_pool(path: Path, label: str, default_instruction: str = "") -> Pool:
    """Read and validate a pool file (cached per file content within the process).
    A broken row is an error naming the file and line; an empty pool is an error."""
    return _load_pool(path.resolve(), label, default_instruction, file_sha256(path))


@lru_cache(maxsize=4)
def _load_pool(path: Path, label: str, default_instruction: str, sha256: str) -> Pool:
    rows, lines, ids, keys = [], [], [], []
    for line_no, row in read_jsonl(path, TrainRowModel):
        instruction = row.instruction or default_instruction
        rows.append(
            TrainingExample(instruction=instruction, input=row.input, output=row.output, source=row.source)
        )
        lines.append(line_no)
        ids.append(str(row.id) if row.id is not None else None)
        keys.append(input_key(instruction, row.input))
    if not rows:
        raise ConfigError(f"{path}: the pool has no rows")
    return Pool(path, label, sha256, tuple(rows), tuple(lines), tuple(ids), tuple(keys), default_instruction)


@dataclass(frozen=True)
class LexicalSettings:
    analyzer: Analyzer = "char_wb"
    ngram_range: tuple[int, int] = (3, 5)
    include_instruction: bool = False


_LEXICAL_CACHE: OrderedDict[tuple[str, str, LexicalSettings], tuple[object, object]] = OrderedDict()
_LEXICAL_CACHE_SIZE = 4


def _lexical_key(pool: Pool, settings: LexicalSettings) -> tuple[str, str, LexicalSettings]:
    return (pool.sha256, pool.default_instruction, settings)


def lexical_index(pool: Pool, settings: LexicalSettings = LexicalSettings()) -> tuple[object, object]:
    """(fitted TfidfVectorizer, pool matrix), fitted once per pool content and settings
    within the process (fitting a 60,000-row pool takes about 10 s)."""
    key = _lexical_key(pool, settings)
    if key in _LEXICAL_CACHE:
        _LEXICAL_CACHE.move_to_end(key)
        return _LEXICAL_CACHE[key]
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        analyzer=settings.analyzer,
        ngram_range=settings.ngram_range,
        sublinear_tf=True,
        dtype=np.float32,
    )
    texts = [example_task_text(row, settings.include_instruction) for row in pool.rows]
    entry = (vectorizer, vectorizer.fit_transform(texts).tocsr())
    _LEXICAL_CACHE[key] = entry
    while len(_LEXICAL_CACHE) > _LEXICAL_CACHE_SIZE:
        _LEXICAL_CACHE.popitem(last=False)
    return entry


@dataclass(frozen=True)
class Neighbour:
    index: int
    """Row index in the pool."""
    similarity: float
    """Cosine similarity (MiniLM) to `member`."""
    member: str
    """The failing sample it was chosen for (round-robin) or is most similar to (centroid)."""


def eligible_rows(request: DataRequest, pool: Pool, among: np.ndarray | None = None) -> np.ndarray:
    """Indices of pool rows (of `among`, default all) whose input is no eval item's input."""
    indices = np.arange(len(pool)) if among is None else np.asarray(among, dtype=int)
    if not request.exclude_inputs:
        return indices
    return np.array([i for i in indices if pool.keys[i] not in request.exclude_inputs], dtype=int)


def random_rows(
    request: DataRequest, pool: Pool, k: int, salt: int = 0, among: np.ndarray | None = None
) -> list[int]:
    """`k` pool rows (of `among`, default all) drawn uniformly without replacement
    (seeded), eval inputs excluded."""
    eligible = eligible_rows(request, pool, among)
    k = min(k, len(eligible))
    if k <= 0:
        return []
    return request.rng(salt).choice(eligible, size=k, replace=False).tolist()


def nearest_rows(
    request: DataRequest,
    pool: Pool,
    k: int,
    *,
    candidate_factor: float = 10.0,
    ranking: Ranking = "round_robin",
    lexical: LexicalSettings = LexicalSettings(),
    diversity: float = DIVERSITY,
) -> list[Neighbour]:
    """Up to `k` pool rows nearest the request's failing samples, best first (see the
    module docstring). Rows whose input is an eval input are never returned."""
    if k <= 0 or not request.failures:
        return []
    reporter = request.progress()
    if _lexical_key(pool, lexical) not in _LEXICAL_CACHE:
        reporter.log(f"indexing {pool.label} ({len(pool):,} rows; once per process)")
    vectorizer, matrix = lexical_index(pool, lexical)
    eligible = np.zeros(len(pool), dtype=bool)
    eligible[eligible_rows(request, pool)] = True
    members = [f.sample.id for f in request.failures]
    queries = [failure_task_text(f, lexical.include_instruction) for f in request.failures]
    candidates = _lexical_candidates(vectorizer, matrix, queries, eligible, math.ceil(candidate_factor * k))
    if not candidates:
        return []
    embedder = request.get_embedder()
    texts = [example_task_text(pool.rows[i], lexical.include_instruction) for i in candidates]
    total = len(texts) + len(queries)
    with reporter.task(f"embedding {total} texts (cluster {request.cluster.id})", total) as advance:
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            advance(n)

        member_vectors = embedder.embed(queries, progress=step)
        candidate_vectors = embedder.embed(texts, progress=step)
        advance(total - done)  # texts already embedded, or repeated, report no progress
    similarity = member_vectors @ candidate_vectors.T  # members x candidates
    weight = None
    if lexical.include_instruction:  # a mixed pool: a row of another task ranks lower
        weight = task_similarity(
            embedder, [f.sample.instruction for f in request.failures], [pool.rows[i].instruction for i in candidates]
        )
        similarity = similarity * weight
    if ranking == "centroid":
        centre = member_vectors.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        scores = candidate_vectors @ centre
        if weight is not None:
            scores = scores * weight.mean(axis=0)
        order = np.lexsort((np.arange(len(candidates)), -scores))[:k]
        best_member = similarity.argmax(axis=0)
        return [
            Neighbour(candidates[j], float(similarity[best_member[j], j]), members[best_member[j]])
            for j in order
        ]
    redundancy = candidate_vectors @ candidate_vectors.T if diversity > 0 else None
    return [
        Neighbour(candidates[j], float(similarity[m, j]), members[m])
        for m, j in _round_robin(similarity, k, redundancy, diversity)
    ]


def task_similarity(embedder: Embedder, member_tasks: Sequence[str], row_tasks: Sequence[str]) -> np.ndarray:
    """members x rows: cosine similarity (clipped to [0, 1]) of the instructions, each
    distinct instruction embedded once. 1 for the same task; a paraphrase of it scores
    near 1, another task lower."""
    distinct = sorted(set(member_tasks) | set(row_tasks))
    vectors = embedder.embed(distinct)
    position = {text: i for i, text in enumerate(distinct)}
    members = vectors[[position[t] for t in member_tasks]]
    rows = vectors[[position[t] for t in row_tasks]]
    return np.clip(members @ rows.T, 0.0, 1.0)


def _lexical_candidates(
    vectorizer: object, matrix: object, queries: Sequence[str], eligible: np.ndarray, n: int, chunk: int = 64
) -> list[int]:
    """Pool row indices, gathered round-robin from each query's top TF-IDF matches."""
    per_query = math.ceil(n / len(queries)) + 1
    ranked: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        q = vectorizer.transform(queries[start : start + chunk])  # type: ignore[attr-defined]
        scores = (q @ matrix.T).toarray()  # type: ignore[attr-defined]
        scores[:, ~eligible] = 0.0
        top_n = min(per_query, scores.shape[1])
        top = np.argpartition(-scores, top_n - 1, axis=1)[:, :top_n]
        for row, picks in zip(scores, top):
            # Stable order: score descending, then row index.
            picks = picks[np.lexsort((picks, -row[picks]))]
            ranked.append([int(i) for i in picks if row[i] > 0.0])
    chosen: list[int] = []
    seen: set[int] = set()
    for rank in range(per_query):
        for picks in ranked:
            if rank < len(picks) and picks[rank] not in seen:
                seen.add(picks[rank])
                chosen.append(picks[rank])
                if len(chosen) >= n:
                    return chosen
    return chosen


def _round_robin(
    similarity: np.ndarray, k: int, redundancy: np.ndarray | None = None, diversity: float = 0.0
) -> list[tuple[int, int]]:
    """(member, candidate) pairs: each member in turn takes its most similar candidate not
    yet taken, until `k` are taken or none is left. With `diversity` > 0 (and
    `redundancy`, candidates x candidates similarity) the pick is by maximal marginal
    relevance instead: (1 - diversity) x similarity to the member - diversity x the
    highest similarity to a candidate already taken, so that the rows are not near-copies
    of each other."""
    if redundancy is not None and diversity > 0:
        return _mmr_round_robin(similarity, k, redundancy, diversity)
    n_members, n_candidates = similarity.shape
    orders = [np.lexsort((np.arange(n_candidates), -similarity[m])) for m in range(n_members)]
    pointers = [0] * n_members
    taken: set[int] = set()
    picks: list[tuple[int, int]] = []
    limit = min(k, n_candidates)
    while len(picks) < limit:
        for m in range(n_members):
            order = orders[m]
            while pointers[m] < n_candidates and int(order[pointers[m]]) in taken:
                pointers[m] += 1
            if pointers[m] < n_candidates:
                j = int(order[pointers[m]])
                taken.add(j)
                picks.append((m, j))
                if len(picks) >= limit:
                    break
    return picks


def _mmr_round_robin(
    similarity: np.ndarray, k: int, redundancy: np.ndarray, diversity: float
) -> list[tuple[int, int]]:
    n_members, n_candidates = similarity.shape
    closest_taken = np.full(n_candidates, -np.inf)  # no candidate taken yet: no penalty
    available = np.ones(n_candidates, dtype=bool)
    picks: list[tuple[int, int]] = []
    limit = min(k, n_candidates)
    while len(picks) < limit:
        for m in range(n_members):
            penalty = np.where(np.isfinite(closest_taken), closest_taken, 0.0)
            scores = np.where(available, (1 - diversity) * similarity[m] - diversity * penalty, -np.inf)
            j = int(np.argmax(scores))  # ties: the lowest index
            available[j] = False
            closest_taken = np.maximum(closest_taken, redundancy[j])
            picks.append((m, j))
            if len(picks) >= limit:
                break
    return picks
