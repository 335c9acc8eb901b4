"""The metric contract as docs/plugins.md states it: per-sample statistics of shape
(samples, k), a vectorised from_statistics, and NaN from an @metric function leaving
that sample out of the corpus score (recorded as the plugin's error on it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness import metric
from harness.components.hookspecs import hookimpl
from harness.components.plugin_manager import load_plugins
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import item, mock_backend_plugin, mock_spec


@metric("only_numbers", higher_is_better=True)
def only_numbers(item) -> float:
    """1.0 when the output is the reference; NaN for samples without a numeric reference."""
    reference = item.sample.references[0]
    if not reference.isdigit():
        return float("nan")
    return float(item.output.strip() == reference)


def test_statistics_shapes_and_a_vectorised_corpus_formula() -> None:
    items = [item("1", reference="1"), item("2", reference="3"), item("x", reference="word")]
    stats = only_numbers.statistics(items, only_numbers.Args())
    assert stats.shape == (3, 2)
    # The NaN stays in the sample's row: scoring leaves the row out and records it (below).
    assert np.isnan(stats[2]).any() and not np.isnan(stats[:2]).any()
    assert only_numbers.from_statistics(stats[:2].sum(axis=0), only_numbers.Args()) == 0.5
    # Vectorised: a batch of bootstrap totals at once, (resamples, k) -> (resamples,).
    totals = np.stack([stats[[0, 0, 1]].sum(axis=0), stats[[1, 1, 0]].sum(axis=0)])
    assert list(only_numbers.from_statistics(totals, only_numbers.Args())) == [2 / 3, 1 / 3]
    per_sample = only_numbers.sample_scores(stats, only_numbers.Args())
    assert per_sample[0] == 1.0 and per_sample[1] == 0.0 and np.isnan(per_sample[2])


class _Plugin:
    @staticmethod
    @hookimpl
    def harness_register_metrics(registry) -> None:
        registry.add_metric(only_numbers)


def test_a_nan_sample_is_left_out_of_a_run_score(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    rows = [{"id": "a", "input": "1", "reference": "1"}, {"id": "b", "input": "2", "reference": "3"},
            {"id": "c", "input": "w", "reference": "word"}]
    (suite / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (suite / "suite.yaml").write_text("name: n\nversion: 1\ndata: data.jsonl\ninstruction: Echo.\nmetrics:\n  - only_numbers\n")
    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "mock"), (_Plugin(), "only")])
    with Store.writer(tmp_path / "s.duckdb") as store:
        summary = evaluate(load_suite(suite), mock_spec(), store, plugins, EvalOptions(resamples=50))
    assert summary.corpus["only_numbers"]["value"] == 0.5
