"""The store's loops: questions about loops and their iterations.

A loop is one `loops` row and an `iterations` row per iteration, linking its evaluation
runs, clustering, dataset and training run (see docs/schema.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from harness.errors import ConfigError, NotFoundError
from harness.store.reader import LATEST, StoreReader
from harness.store.results import IterationInfo, LoopInfo

if TYPE_CHECKING:
    pass


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
        for row in rows:
            for key in ("checkpoint", "comparison", "cost"):
                raw = row.get(key)
                row[key] = json.loads(raw) if isinstance(raw, str) else (raw or {})
            row["main_ci"] = (row.pop("main_low"), row.pop("main_high"))
            if row.get("mining_run_id") is None:
                row["mining_failing"] = None
            out.append(IterationInfo(**{k: v for k, v in row.items() if k in known}))
        return out
