"""DuckDB write throughput of the store: bulk inserts of 100,000 rows through
`harness.store.insert` into the real schema, against a row-by-row loop.

    python bench/store.py                            # 100,000 rows, 3 repeats
    python bench/store.py --rows 20000 --row-by-row 1000 --repeats 5

Each measurement opens a fresh store file (schema migrated, outside the timing) in a
temporary directory and times the write, commit included:

- sample_scores, one bulk insert (as `runs.save_results` writes a run's scores): run id,
  sample id, metric, value and a list of sufficient statistics per row;
- generations, one bulk insert: cache key, checkpoint hash, a 200-400 character output,
  token counts, finish reason, latency, timestamp;
- generations in chunks of 64 rows, one transaction each (as `generate_with_cache`
  commits, so that an interrupted run keeps its work), plus the run_generations links;
- for contrast, sample_scores one `INSERT ... VALUES (?, ...)` per row, on fewer rows.

Rows per second, median of the repeats (in turns), with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import Timing, describe, machine, timed, write_json

from harness.store import Store, insert
from harness.store.core import utcnow

WORDS = (
    "the word means a small animal that lives in water and eats plants or insects it is often "
    "used to describe something that happens slowly over a long period of time"
).split()


def score_columns(n: int, rng: random.Random) -> dict[str, list[Any]]:
    return {
        "run_id": [1] * n,
        "sample_id": [f"s{i:06d}" for i in range(n)],
        "metric": ["chrf"] * n,
        "value": [rng.random() * 100 for _ in range(n)],
        "stats": [[float(rng.randint(0, 40)) for _ in range(6)] for _ in range(n)],
    }


def generation_columns(n: int, rng: random.Random) -> dict[str, list[Any]]:
    now = utcnow()
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(40, 80))) for _ in range(n)]
    return {
        "cache_key": [f"{rng.getrandbits(256):064x}" for _ in range(n)],
        "checkpoint_hash": ["c" * 64] * n,
        "text": texts,
        "prompt_tokens": [rng.randint(20, 40) for _ in range(n)],
        "completion_tokens": [rng.randint(10, 64) for _ in range(n)],
        "finish_reason": [rng.choice(["eos", "stop", "length"]) for _ in range(n)],
        "latency_s": [rng.random() for _ in range(n)],
        "created_at": [now] * n,
    }


def bulk(table: str, columns: dict[str, list[Any]]) -> Callable[[Store], None]:
    def write(store: Store) -> None:
        with store.transaction() as con:
            insert(con, table, columns)

    return write


def chunked_generations(columns: dict[str, list[Any]], chunk: int) -> Callable[[Store], None]:
    """As the generation cache writes: each chunk and its run links in one transaction."""
    n = len(columns["cache_key"])

    def write(store: Store) -> None:
        for start in range(0, n, chunk):
            part = {name: values[start : start + chunk] for name, values in columns.items()}
            size = len(part["cache_key"])
            with store.transaction() as con:
                insert(con, "generations", part, ignore_conflicts=True)
                insert(
                    con,
                    "run_generations",
                    {
                        "run_id": [1] * size,
                        "sample_id": [f"s{start + i:06d}" for i in range(size)],
                        "draw": [0] * size,
                        "cache_key": part["cache_key"],
                        "cached": [False] * size,
                    },
                    ignore_conflicts=True,
                )

    return write


def row_by_row(columns: dict[str, list[Any]]) -> Callable[[Store], None]:
    """The contrast: one INSERT statement per row, in one transaction."""
    names = list(columns)
    rows = list(zip(*columns.values()))

    def write(store: Store) -> None:
        sql = f"INSERT INTO sample_scores ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        with store.transaction() as con:
            for row in rows:
                con.execute(sql, list(row))

    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--row-by-row", type=int, default=2_000, help="rows for the row-by-row contrast")
    parser.add_argument("--chunk", type=int, default=64, help="rows per transaction of the chunked writes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    scores = score_columns(args.rows, rng)
    generations = generation_columns(args.rows, rng)
    few = {name: values[: args.row_by_row] for name, values in scores.items()}
    cases: list[tuple[str, int, Callable[[Store], None]]] = [
        ("sample_scores, bulk insert", args.rows, bulk("sample_scores", scores)),
        ("generations, bulk insert", args.rows, bulk("generations", generations)),
        (f"generations, chunks of {args.chunk} (commit each)", args.rows, chunked_generations(generations, args.chunk)),
        ("sample_scores, row by row", args.row_by_row, row_by_row(few)),
    ]
    info = machine()
    print(describe(info))
    print(f"fresh store per measurement, {args.repeats} repeats in turns, median reported\n", flush=True)
    timings = {name: Timing() for name, _, _ in cases}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for repeat in range(args.repeats):
            for index, (name, _, write) in enumerate(cases):
                path = Path(tmp) / f"r{repeat}-{index}.duckdb"
                with Store.writer(path) as store:
                    _, seconds = timed(lambda w=write, s=store: w(s))
                timings[name].add(seconds)
                path.unlink()

    print(f"{'write':<42} {'rows':>8} {'median s':>9} {'rows/s':>10} {'load':>5}")
    rows = []
    for name, count, _ in cases:
        timing = timings[name]
        rate = count / timing.median
        print(f"{name:<42} {count:8d} {timing.median:9.3f} {rate:10.0f} {timing.load:5.2f}")
        rows.append({"write": name, "rows": count, "seconds": timing.seconds, "median_s": timing.median,
                     "loads": timing.loads, "rows_per_s": rate})
    bulk_rate, slow_rate = rows[0]["rows_per_s"], rows[-1]["rows_per_s"]
    print(f"\nbulk insert: {bulk_rate / slow_rate:.0f}x the rows per second of a row-by-row loop")
    write_json(args.json, {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
