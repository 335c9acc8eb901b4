"""A metric's bad values and failures are recorded against the run; they never end it."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from harness import Metric, hookimpl, metric
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.store.queries import Queries
from harness.suite.load import load_suite
from harness.testing import mock_spec

ECHO_SUITE = Path(__file__).parent / "data" / "echo_suite"
FAST = EvalOptions(resamples=50)


@metric("nan_on_first")
def nan_on_first(item) -> float:
    """NaN for sample 'a', 1.0 for the others."""
    return math.nan if item.sample.id == "a" else 1.0


class ScalarOnly(Metric):
    """A ratio whose from_statistics only takes one row of totals (not vectorised)."""

    name = "scalar_only"

    def statistics(self, items, args):
        return np.asarray([[1.0, 2.0] for _ in items])

    def from_statistics(self, totals, args):
        return float(totals[0] / totals[1])  # raises on a matrix of totals


@hookimpl
def harness_register_metrics(registry) -> None:
    registry.add_metric(nan_on_first)
    registry.add_metric(ScalarOnly())


PLUGIN = SimpleNamespace(harness_register_metrics=harness_register_metrics)


def _suite_with(tmp_path: Path, *names: str) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "data.jsonl").write_text((ECHO_SUITE / "data.jsonl").read_text())
    metrics = "\n".join(f"  - {n}" for n in names)
    (suite / "suite.yaml").write_text(
        f"name: t\nversion: 1\ndata: data.jsonl\ninstruction: Repeat.\nmetrics:\n{metrics}\n"
    )
    return suite


def _run(tmp_path: Path, harness_plugins, *names: str):
    path = tmp_path / "s.duckdb"
    suite = load_suite(_suite_with(tmp_path, *names))
    plugins = harness_plugins(PLUGIN)
    with Store.writer(path) as store:
        summary = evaluate(suite, mock_spec(), store, plugins, FAST)
    return path, suite, summary


def test_a_nan_for_one_sample_is_a_recorded_error_not_a_blank_score(tmp_path: Path, harness_plugins, mock_backend) -> None:
    first_id = "a"
    path, suite, summary = _run(tmp_path, harness_plugins, "nan_on_first", "exact_match")
    assert summary.status == "completed_with_errors"
    assert summary.corpus["nan_on_first"]["value"] == 1.0  # the others' mean, not NaN
    (error,) = [e for e in summary.errors if e.component == "nan_on_first"]
    assert error.hook == "Metric.statistics" and error.sample_id == first_id
    assert "non-finite" in error.message and error.plugin
    with Store.reader(path) as store:
        stored = Queries(store).sql("SELECT plugin, hook, sample_id FROM run_errors").to_pylist()
    assert stored == [{"plugin": error.plugin, "hook": "Metric.statistics", "sample_id": first_id}]


def test_a_metric_raising_in_its_corpus_step_does_not_end_the_run(tmp_path: Path, harness_plugins, mock_backend) -> None:
    path, suite, summary = _run(tmp_path, harness_plugins, "scalar_only", "exact_match")
    assert summary.status == "completed_with_errors"
    assert math.isfinite(summary.corpus["exact_match"]["value"])  # the other metric is intact
    assert math.isnan(summary.corpus["scalar_only"]["value"])
    (error,) = [e for e in summary.errors if e.component == "scalar_only"]
    assert error.hook in {"Metric.sample_scores", "Metric.from_statistics"}
    assert error.sample_id is None and "TypeError" in error.message and error.traceback
    with Store.reader(path) as store:
        (run,) = Queries(store).sql("SELECT status FROM runs").to_pylist()
        hooks = Queries(store).sql("SELECT hook FROM run_errors").column("hook").to_pylist()
    assert run["status"] == "completed_with_errors" and hooks == [error.hook]
