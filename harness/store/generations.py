"""The generation cache in the store: which generations and log-likelihoods exist, linking
them to a run, writing new ones, and reading a run's generations back.

`harness.generate.cache` decides what to generate and when to commit; the SQL is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from duckdb import DuckDBPyConnection

from harness.store.core import Store, insert, utcnow
from harness.types import Generation


def existing_keys(store: Store, table: str, keys: Sequence[str]) -> set[str]:
    """The cache keys among `keys` that `table` (generations, loglikelihoods) holds."""
    if not keys:
        return set()
    wanted = pa.table({"cache_key": list(keys)})
    with store.connect() as con:
        con.register("_wanted_keys", wanted)
        try:
            rows = con.execute(
                f"SELECT t.cache_key FROM {table} t JOIN _wanted_keys w USING (cache_key)"
            ).fetchall()
        finally:
            con.unregister("_wanted_keys")
    return {row[0] for row in rows}


def linked_draws(store: Store, run_id: int) -> set[tuple[str, int]]:
    """(sample id, draw) of every generation already linked to the run."""
    return {
        (row["sample_id"], row["draw"])
        for row in store.query("SELECT sample_id, draw FROM run_generations WHERE run_id = ?", [run_id])
    }


def link_cached_generations(store: Store, run_id: int, jobs: Sequence[tuple[str, int, str]]) -> None:
    """Link generations the cache already holds to a run, in one transaction: `jobs` are
    (sample id, draw, cache key)."""
    with store.transaction() as con:
        link_generations(con, run_id, jobs, cached=True)


def save_shard(
    store: Store, run_id: int, table: pa.Table, checkpoint_hash: str, jobs: Sequence[tuple[str, int, str]]
) -> None:
    """A finished shard, in one transaction (one shard = one commit): its generations
    (`SHARD_SCHEMA`), and their links to the run (`jobs`, as for `link_cached_generations`)."""
    with store.transaction() as con:
        save_generations(con, table, checkpoint_hash)
        link_generations(con, run_id, jobs, cached=False)


def link_generations(
    con: DuckDBPyConnection, run_id: int, jobs: Sequence[tuple[str, int, str]], *, cached: bool
) -> None:
    """Link stored generations to a run: `jobs` are (sample id, draw, cache key)."""
    insert(
        con,
        "run_generations",
        {
            "run_id": [run_id] * len(jobs),
            "sample_id": [sample_id for sample_id, _, _ in jobs],
            "draw": [draw for _, draw, _ in jobs],
            "cache_key": [key for _, _, key in jobs],
            "cached": [cached] * len(jobs),
        },
        ignore_conflicts=True,
    )


def save_generations(con: DuckDBPyConnection, table: pa.Table, checkpoint_hash: str) -> None:
    """A finished shard's generations (`SHARD_SCHEMA`), stamped with checkpoint and time."""
    rows = table.num_rows
    table = table.append_column("checkpoint_hash", pa.array([checkpoint_hash] * rows, pa.string())).append_column(
        "created_at", pa.array([utcnow()] * rows, pa.timestamp("us"))
    )
    insert(con, "generations", table, ignore_conflicts=True)


def load_generations(store: Store, run_id: int) -> dict[tuple[str, int], Generation]:
    """Every generation linked to a run, by (sample id, draw)."""
    rows = store.query(
        """
        SELECT rg.sample_id, rg.draw, rg.cached, s.prompt, g.text, g.prompt_tokens,
               g.completion_tokens, g.finish_reason, g.latency_s
        FROM run_generations rg
        JOIN generations g USING (cache_key)
        JOIN samples s ON s.run_id = rg.run_id AND s.sample_id = rg.sample_id
        WHERE rg.run_id = ?
        """,
        [run_id],
    )
    return {
        (row["sample_id"], row["draw"]): Generation(
            sample_id=row["sample_id"],
            text=row["text"],
            prompt=row["prompt"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            finish_reason=row["finish_reason"],
            latency_s=row["latency_s"],
            draw=row["draw"],
            cached=row["cached"],
        )
        for row in rows
    }


def cached_loglikelihoods(store: Store, keys: Sequence[str]) -> dict[str, tuple[float, int]]:
    """(NLL, tokens) by cache key, for the keys among `keys` the cache holds."""
    found: dict[str, tuple[float, int]] = {}
    if keys:
        wanted = pa.table({"cache_key": list(keys)})
        with store.connect() as con:
            con.register("_wanted_ll", wanted)
            try:
                for key, nll, tokens in con.execute(
                    "SELECT l.cache_key, l.nll, l.tokens FROM loglikelihoods l JOIN _wanted_ll USING (cache_key)"
                ).fetchall():
                    found[key] = (nll, tokens)
            finally:
                con.unregister("_wanted_ll")
    return found


def save_loglikelihoods(
    store: Store, keys: Sequence[str], checkpoint_hash: str, results: Sequence[tuple[float, int]]
) -> None:
    """New log-likelihoods, one transaction: `results[i]` is (NLL, tokens) of `keys[i]`."""
    with store.transaction() as con:
        insert(
            con,
            "loglikelihoods",
            {
                "cache_key": list(keys),
                "checkpoint_hash": [checkpoint_hash] * len(keys),
                "nll": [float(nll) for nll, _ in results],
                "tokens": [int(t) for _, t in results],
                "created_at": [utcnow()] * len(keys),
            },
            ignore_conflicts=True,
        )
