"""The store's loops: the loop's own bookkeeping, and questions about loops.

A loop is one `loops` row and an `iterations` row per iteration, linking its evaluation
runs, clustering, dataset and training run (see docs/schema.md). The functions are what
`harness.loop` records and reads back as it runs (so that an interrupted loop resumes);
`LoopQueries` is what reports and the viewer ask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, NotFoundError
from harness.store.core import Store, utcnow
from harness.store.reader import LATEST, StoreReader
from harness.store.results import IterationInfo, LoopInfo

ITERATION_JSON_COLUMNS = ("checkpoint", "comparison", "cost")
"""The columns of `iterations` stored as JSON text."""


def decode_iteration(row: dict[str, Any], *, empty_when_missing: bool = False) -> dict[str, Any]:
    """An `iterations` row with its JSON columns decoded, in place: what the loop resumes
    from (`iteration_row`) and what reports read (`LoopQueries.iterations`). A column
    that holds nothing stays None, or becomes {} with `empty_when_missing`."""
    for key in ITERATION_JSON_COLUMNS:
        raw = row.get(key)
        if isinstance(raw, str):
            row[key] = json.loads(raw)
        elif empty_when_missing and not raw:
            row[key] = {}
    return row


class LoopQueries(StoreReader):
    """Read-only questions about loops; `Queries` answers them with the rest."""

    def resolve_loop(self, ref: str | int) -> int:
        """A loop id from an id, 'latest' or 'latest~N'; unknown loops are errors."""
        text = str(ref).strip()
        if not self.has_table("loops"):
            raise NotFoundError(f"store {self.store.path} has no loops: run `harness loop` first")
        match = LATEST.match(text)
        if match:
            loop_id = self._scalar(
                "SELECT loop_id FROM loops ORDER BY loop_id DESC LIMIT 1 OFFSET ?", [int(match.group(1) or 0)]
            )
            if loop_id is None:
                raise NotFoundError(f"store {self.store.path} has no loops (that far back): run `harness loop`")
            return int(loop_id)
        if not text.isdigit():
            raise ConfigError(f"{text!r} is not a loop: give a loop id, 'latest' or 'latest~N'")
        if not self._scalar("SELECT count(*) FROM loops WHERE loop_id = ?", [int(text)]):
            known = [r["loop_id"] for r in self.store.query("SELECT loop_id FROM loops ORDER BY 1 DESC LIMIT 5")]
            raise NotFoundError(
                f"no loop {text} in store {self.store.path}"
                + (f": the newest are {', '.join(map(str, known))}" if known else ": it has no loops yet")
            )
        return int(text)

    def loop(self, ref: str | int) -> LoopInfo:
        loop_id = self.resolve_loop(ref)
        row = self.store.query(
            "SELECT loop_id, suite_name, guard_suite, base_model, config, output_dir, status, final_iteration, "
            "stop_reason, started_at, finished_at, mining_split, heldout_split, split_auto, split_sizes "
            "FROM loops WHERE loop_id = ?",
            [loop_id],
        )[0]
        row["config"] = json.loads(row["config"]) if row["config"] else {}
        row["split_sizes"] = json.loads(row["split_sizes"]) if row["split_sizes"] else None
        return LoopInfo(**row)

    def loops(self, limit: int = 20) -> list[LoopInfo]:
        if not self.has_table("loops"):
            return []
        ids = [r["loop_id"] for r in self.store.query("SELECT loop_id FROM loops ORDER BY 1 DESC LIMIT ?", [limit])]
        return [self.loop(i) for i in ids]

    def budget_notes(self, manifest_hash: str) -> dict[str, str]:
        """Cluster id (as text) -> why the rows a dataset added for it were not its share
        by size (see `harness.data.datasets.cluster_weights`); empty when every share was."""
        rows = self.store.query(
            "SELECT r.cluster, r.provenance FROM dataset_rows r JOIN datasets d USING (manifest_hash) "
            "WHERE r.manifest_hash = ? AND r.position >= d.n_rows - d.n_added "
            "AND r.provenance LIKE '%budget_reason%' ORDER BY r.position",
            [manifest_hash],
        )
        notes: dict[str, str] = {}
        for row in rows:
            reason = json.loads(row["provenance"]).get("budget_reason")
            if reason and row["cluster"] is not None:
                notes.setdefault(str(row["cluster"]), str(reason))
        return dict(sorted(notes.items()))

    def iterations(self, loop_id: int) -> list[IterationInfo]:
        """Every iteration of a loop with its main metric, guard metric, failures,
        clusters, data and training figures."""
        rows = self.store.query(
            """
            SELECT i.*,
                   ms.value AS main_value, ms.ci_low AS main_low, ms.ci_high AS main_high,
                   gs.value AS guard_value,
                   (SELECT count(*) FROM failures f WHERE f.run_id = i.eval_run_id) AS failing,
                   mv.value AS mining_value,
                   (SELECT count(*) FROM failures f WHERE f.run_id = i.mining_run_id) AS mining_failing,
                   (SELECT count(*) FROM clusters c WHERE c.clustering_id = i.clustering_id AND c.cluster_id >= 0)
                       AS clusters,
                   d.n_added AS rows_added, d.n_rows AS rows_total,
                   t.wall_time_s AS training_seconds, t.steps AS training_steps
            FROM iterations i
            LEFT JOIN runs r ON r.run_id = i.eval_run_id
            LEFT JOIN corpus_scores ms ON ms.run_id = i.eval_run_id AND ms.metric = r.main_metric
            LEFT JOIN corpus_scores mv ON mv.run_id = i.mining_run_id AND mv.metric = r.main_metric
            LEFT JOIN runs gr ON gr.run_id = i.guard_run_id
            LEFT JOIN corpus_scores gs ON gs.run_id = i.guard_run_id AND gs.metric = gr.main_metric
            LEFT JOIN datasets d ON d.manifest_hash = i.manifest_hash
            LEFT JOIN training_runs t ON t.training_id = i.training_id
            WHERE i.loop_id = ?
            ORDER BY i.iteration
            """,
            [loop_id],
        )
        out = []
        known = IterationInfo.__dataclass_fields__
        seen: set[str] = set()
        for row in rows:
            if row["manifest_hash"] in seen:  # trained on an earlier iteration's rows (--selection none)
                row["rows_added"] = 0
            elif row["manifest_hash"] is not None:
                seen.add(row["manifest_hash"])
            decode_iteration(row, empty_when_missing=True)
            row["main_ci"] = (row.pop("main_low"), row.pop("main_high"))
            if row.get("mining_run_id") is None:
                row["mining_failing"] = None
            out.append(IterationInfo(**{k: v for k, v in row.items() if k in known}))
        return out


# -- the loop's bookkeeping ----------------------------------------------------------


def resumable_loop(store: Store, fingerprint: str) -> int | None:
    """The newest running or failed loop with this fingerprint: the one to resume."""
    existing = store.scalar(
        "SELECT loop_id FROM loops WHERE fingerprint = ? AND status IN ('running', 'failed') "
        "ORDER BY loop_id DESC LIMIT 1",
        [fingerprint],
    )
    return None if existing is None else int(existing)


def create_loop(store: Store, values: Mapping[str, Any], output_root: Path | None) -> int:
    """A new running loop; its output directory is `output_root` or loops/<id>/ beside
    the store. `values`: fingerprint, suite_name, guard_suite, base_model, config,
    mining_split, heldout_split, split_auto, split_sizes."""
    with store.transaction() as con:
        inserted = con.execute(
            "INSERT INTO loops (fingerprint, suite_name, guard_suite, base_model, config, output_dir, "
            "status, started_at, mining_split, heldout_split, split_auto, split_sizes) "
            "VALUES (?, ?, ?, ?, ?, '', 'running', ?, ?, ?, ?, ?) RETURNING loop_id",
            [
                values["fingerprint"],
                values["suite_name"],
                values["guard_suite"],
                values["base_model"],
                values["config"],
                utcnow(),
                values["mining_split"],
                values["heldout_split"],
                values["split_auto"],
                values["split_sizes"],
            ],
        ).fetchone()
        assert inserted is not None  # RETURNING gives the inserted row
        loop_id = inserted[0]
        out = output_root or (store.path.parent / "loops" / str(loop_id))
        con.execute("UPDATE loops SET output_dir = ? WHERE loop_id = ?", [str(out.resolve()), loop_id])
    return int(loop_id)


def set_loop(store: Store, loop_id: int, **fields: Any) -> None:
    assignments = ", ".join(f"{k} = ?" for k in fields)
    with store.transaction() as con:
        con.execute(f"UPDATE loops SET {assignments} WHERE loop_id = ?", [*fields.values(), loop_id])


def loop_output_dir(store: Store, loop_id: int) -> Path:
    return Path(store.scalar("SELECT output_dir FROM loops WHERE loop_id = ?", [loop_id]))


def iteration_row(store: Store, loop_id: int, iteration: int) -> dict[str, Any] | None:
    """The iteration's row, its JSON columns decoded; None before it started."""
    rows = store.query("SELECT * FROM iterations WHERE loop_id = ? AND iteration = ?", [loop_id, iteration])
    if not rows:
        return None
    return decode_iteration(rows[0])


def start_iteration(store: Store, loop_id: int, iteration: int, checkpoint: Mapping[str, Any]) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT INTO iterations (loop_id, iteration, step, checkpoint, started_at) "
            "VALUES (?, ?, 'started', ?, ?)",
            [loop_id, iteration, json.dumps(checkpoint), utcnow()],
        )


def update_iteration(store: Store, loop_id: int, iteration: int, **fields: Any) -> None:
    """Set fields of the iteration's row; dicts and lists are stored as JSON."""
    values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in fields.values()]
    assignments = ", ".join(f"{k} = ?" for k in fields)
    with store.transaction() as con:
        con.execute(
            f"UPDATE iterations SET {assignments} WHERE loop_id = ? AND iteration = ?",
            [*values, loop_id, iteration],
        )


def last_accepted_iteration(store: Store, loop_id: int, before: int) -> int | None:
    rows = store.query(
        "SELECT iteration FROM iterations WHERE loop_id = ? AND iteration < ? AND accepted "
        "ORDER BY iteration DESC LIMIT 1",
        [loop_id, before],
    )
    return int(rows[0]["iteration"]) if rows else None


def tokens_trained(store: Store, training_ids: Sequence[int]) -> int:
    """Tokens the given training runs trained on, together."""
    return int(
        store.scalar(
            "SELECT sum(tokens_trained) FROM training_runs WHERE list_contains(?, training_id)", [training_ids]
        )
        or 0
    )


def tokens_evaluated(store: Store, run_ids: Sequence[int]) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of the generations linked to the runs."""
    row = store.query(
        "SELECT coalesce(sum(g.prompt_tokens), 0) AS input, coalesce(sum(g.completion_tokens), 0) AS output "
        "FROM run_generations rg JOIN generations g USING (cache_key) WHERE list_contains(?, rg.run_id)",
        [list(run_ids)],
    )[0]
    return int(row["input"]), int(row["output"])


def corpus_value(store: Store, run_id: int, metric: str) -> float | None:
    """A run's corpus score for one metric; None when it has none."""
    value = store.scalar("SELECT value FROM corpus_scores WHERE run_id = ? AND metric = ?", [run_id, metric])
    return value


def cluster_progress(store: Store, mining_run_id: int, clustering_id: int) -> list[dict[str, Any]]:
    """How many members of each cluster (mining-split samples) still fail in a run."""
    return store.query(
        """
        SELECT c.cluster_id, c.label, c.size, c.dominant_issue,
               count(f.sample_id) AS still_failing, c.size - count(f.sample_id) AS fixed
        FROM clusters c
        JOIN cluster_members m USING (clustering_id, cluster_id)
        LEFT JOIN failures f ON f.run_id = ? AND f.sample_id = m.sample_id
        WHERE c.clustering_id = ?
        GROUP BY c.cluster_id, c.label, c.size, c.dominant_issue
        ORDER BY c.cluster_id = -1, c.cluster_id
        """,
        [mining_run_id, clustering_id],
    )


def issue_counts(store: Store, run_a: int, run_b: int) -> dict[str, dict[str, int]]:
    """Issues per detector in two runs: {detector: {"before": n_a, "after": n_b}}."""
    counts: dict[str, dict[str, int]] = {}
    for run, key in ((run_a, "before"), (run_b, "after")):
        for r in store.query("SELECT detector, count(*) AS n FROM issues WHERE run_id = ? GROUP BY detector", [run]):
            counts.setdefault(r["detector"], {"before": 0, "after": 0})[key] = r["n"]
    return counts
