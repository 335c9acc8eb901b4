"""Grouped samples through the store: single-run intervals and paired comparisons
resample clusters (the rows' group, or the suite's cluster_by), and say so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.components.plugin_manager import load_plugins
from harness.report.render import render
from harness.report.show import build_report
from harness.score.comparison import compare_runs
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.store.queries import Queries
from harness.suite.load import load_suite
from harness.testing import MockBackend, mock_backend_plugin, mock_spec

GROUPS = 12
PER_GROUP = 5


def _suite(directory: Path, cluster_by: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    extra = f"cluster_by: {json.dumps(cluster_by)}\n" if cluster_by else ""
    (directory / "suite.yaml").write_text(
        "name: grouped\nversion: 1\ndata: data.jsonl\ninstruction: Answer.\n"
        "generation: {max_new_tokens: 8}\nmetrics:\n  - exact_match\n  - chrf\n" + extra,
        encoding="utf-8",
    )
    rows = [
        {"id": f"q{g}-{k}", "input": f"q{g}-{k}", "reference": "yes", "group": f"q{g}",
         "tags": [f"tmpl-{k}"], "metadata": {"source": f"src{g % 3}"}}
        for g in range(GROUPS) for k in range(PER_GROUP)
    ]
    (directory / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return directory


def _responder(right_groups: set[int]) -> Any:
    """Whole groups right or wrong: paraphrases of one question succeed together."""
    def respond(prompt: str) -> str:
        group = int(prompt.split("### Input:\n")[1].split("-")[0].removeprefix("q"))
        return "yes" if group in right_groups else "no"

    return respond


def _runs(tmp_path: Path, cluster_by: str | None) -> tuple[Store, int, int, Any]:
    suite = load_suite(_suite(tmp_path / "suite", cluster_by))
    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "mock")])
    store = Store.writer(tmp_path / "store.duckdb").__enter__()
    original = MockBackend.responder
    try:
        MockBackend.responder = staticmethod(_responder(set(range(5))))
        a = evaluate(suite, mock_spec("a"), store, plugins, EvalOptions(resamples=200))
        MockBackend.responder = staticmethod(_responder(set(range(8))))
        b = evaluate(suite, mock_spec("b"), store, plugins, EvalOptions(resamples=200))
    finally:
        MockBackend.responder = original
    return store, a.run_id, b.run_id, plugins


@pytest.mark.parametrize(
    ("cluster_by", "expected"),
    [(None, GROUPS), ("tag:tmpl-", PER_GROUP), ("metadata.source", 3), ("none", None)],
)
def test_comparisons_resample_the_declared_clusters(tmp_path: Path, cluster_by: str | None, expected: int | None) -> None:
    store, a, b, plugins = _runs(tmp_path, cluster_by)
    with store:
        queries = Queries(store, plugins.registry)
        assert queries.run(b).cluster_by == cluster_by
        exact = next(c for c in compare_runs(queries, a, b, resamples=200) if c.metric == "exact_match")
        assert exact.test is not None and exact.test.clusters == expected
        if expected is None:
            assert exact.test.test == "mcnemar exact" and exact.resampled == "samples"
        else:
            assert exact.test.test == "paired bootstrap"
            assert exact.resampled == f"{expected} clusters (by {cluster_by or 'group'})"


def test_grouped_samples_widen_intervals_and_the_report_says_why(tmp_path: Path) -> None:
    """15 samples fixed as 3 whole groups are 3 pieces of evidence, not 15: resampling the
    groups widens the interval of the change, and the single-run interval, too."""
    grouped, a, b, plugins = _runs(tmp_path / "grouped", None)
    with grouped:
        queries = Queries(grouped, plugins.registry)
        clustered = next(c for c in compare_runs(queries, a, b, resamples=500) if c.metric == "chrf").test
        single = next(s for s in queries.corpus_scores(a) if s.metric == "chrf")
        text = render(build_report(grouped, "compare", plugins=plugins, run_a=a, run_b=b), "terminal", width=200)
    ungrouped, a2, b2, plugins2 = _runs(tmp_path / "alone", "none")
    with ungrouped:
        queries = Queries(ungrouped, plugins2.registry)
        naive = next(c for c in compare_runs(queries, a2, b2, resamples=500) if c.metric == "chrf").test
        single_naive = next(s for s in queries.corpus_scores(a2) if s.metric == "chrf")
    assert clustered is not None and naive is not None
    assert clustered.difference == pytest.approx(naive.difference)
    assert clustered.ci_high - clustered.ci_low > 1.5 * (naive.ci_high - naive.ci_low)
    assert clustered.mde > 1.5 * naive.mde
    assert single.ci_high - single.ci_low > 1.5 * (single_naive.ci_high - single_naive.ci_low)
    assert "12 clusters (by group)" in text
