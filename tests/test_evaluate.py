"""Evaluation end to end with the mock backend: storage, cache, resume, plugin failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.components.contracts import Needs
from harness.components.hookspecs import hookimpl
from harness.components.registry import Registry
from harness.errors import NotFoundError, UnknownComponentError
from harness.score.evaluate import EvalOptions, evaluate
from harness.suite.load import load_suite
from harness.testing import MockBackend, mock_spec
from harness.types import Issue, ModelSpec

ECHO = Path(__file__).parent / "data" / "echo_suite"


@pytest.fixture
def suite():
    return load_suite(ECHO)


def test_a_run_stores_samples_generations_scores_and_failures(suite, harness_store, harness_plugins, mock_backend) -> None:
    summary = evaluate(suite, mock_spec(), harness_store, harness_plugins())
    assert summary.status == "completed" and summary.n_samples == 8
    assert (summary.generated, summary.cached) == (8, 0)
    run = harness_store.query("SELECT * FROM runs WHERE run_id = ?", [summary.run_id])[0]
    assert run["suite_name"] == "echo" and run["backend"] == "mock" and run["status"] == "completed"
    assert run["checkpoint_hash"] and run["fingerprint"] and run["library_versions"]
    rows = harness_store.query_arrow(
        "SELECT sample_id, text FROM run_generations JOIN generations USING (cache_key) WHERE run_id = ?",
        [summary.run_id],
    ).to_pylist()
    outputs = {row["sample_id"]: row["text"] for row in rows}
    assert outputs["a"] == "the cat sat" and outputs["c"] == "hello world"
    # Exact match: a, b, d, g echo their reference; the rest do not.
    assert summary.corpus["exact_match"]["value"] == pytest.approx(4 / 8)
    assert summary.corpus["exact_match"]["passed"] is False  # target 0.9
    low, high = summary.corpus["chrf"]["ci_low"], summary.corpus["chrf"]["ci_high"]
    assert low <= summary.corpus["chrf"]["value"] <= high
    failing = {r["sample_id"]: r["reasons"] for r in harness_store.query("SELECT * FROM failures")}
    assert failing == {"c": ["metric:chrf"], "f": ["metric:chrf"]}  # sentence chrF 39.9 and 49.0 < 50
    stats = harness_store.query("SELECT stats FROM sample_scores WHERE metric = 'wer' AND sample_id = 'h'")
    assert stats[0]["stats"] == [1.0, 4.0]  # one deletion out of four reference words


def test_an_unchanged_checkpoint_generates_nothing_the_second_time(suite, harness_store, harness_plugins, mock_backend) -> None:
    plugins = harness_plugins()
    first = evaluate(suite, mock_spec(), harness_store, plugins)
    calls = len(mock_backend.calls)
    second = evaluate(suite, mock_spec(), harness_store, plugins)
    assert len(mock_backend.calls) == calls == 8
    assert (second.generated, second.cached) == (0, 8)
    assert second.run_id != first.run_id
    assert second.corpus == first.corpus
    # Another checkpoint is another cache key.
    third = evaluate(suite, mock_spec(adapter="other"), harness_store, plugins)
    assert third.generated == 8


def test_an_interrupted_run_resumes_without_regenerating(suite, harness_store, harness_plugins, mock_backend) -> None:
    plugins = harness_plugins()
    original = mock_backend.responder
    calls = {"n": 0}

    def flaky(prompt: str) -> str:
        calls["n"] += 1
        if calls["n"] > 5:
            raise ConnectionError("server went away")
        return original(prompt)

    mock_backend.responder = staticmethod(flaky)
    with pytest.raises(ConnectionError):
        evaluate(suite, mock_spec(), harness_store, plugins, EvalOptions(chunk_size=2))
    failed = harness_store.query("SELECT run_id, status, error FROM runs")[0]
    assert failed["status"] == "failed" and "server went away" in failed["error"]
    done = harness_store.scalar("SELECT count(*) FROM run_generations WHERE run_id = ?", [failed["run_id"]])
    assert done == 4  # two committed chunks of two; the third chunk was lost mid-way

    mock_backend.responder = staticmethod(original)
    mock_backend.calls = []
    # A speed-only option (here the batch size) is not part of the run's identity: the run resumes.
    faster = ModelSpec(path="mock-model", backend="mock", options={"batch_size": 32})
    summary = evaluate(suite, faster, harness_store, plugins, EvalOptions(chunk_size=2))
    assert summary.resumed and summary.run_id == failed["run_id"]
    assert summary.generated == 4 and len(mock_backend.calls) == 4
    assert harness_store.scalar("SELECT status FROM runs WHERE run_id = ?", [summary.run_id]) == "completed"
    fresh = evaluate(suite, mock_spec(), harness_store, plugins, EvalOptions(resume=False))
    assert fresh.corpus == summary.corpus


class RaisingMetricPlugin:
    """A metric that fails on one sample."""

    @staticmethod
    @hookimpl
    def harness_register_metrics(registry: Registry) -> None:
        from harness.components.contracts import metric

        @metric("picky")
        def picky(item) -> float:
            if item.sample.id == "c":
                raise ValueError("cannot score this one")
            return 1.0

        registry.add_metric(picky)


def test_a_metric_that_raises_on_one_sample_is_recorded_and_the_rest_scored(tmp_path, harness_store, harness_plugins, mock_backend) -> None:
    suite_dir = tmp_path / "s"
    suite_dir.mkdir()
    (suite_dir / "data.jsonl").write_text((ECHO / "data.jsonl").read_text())
    (suite_dir / "suite.yaml").write_text((ECHO / "suite.yaml").read_text().replace("  - wer\n", "  - wer\n  - picky\n"))
    summary = evaluate(load_suite(suite_dir), mock_spec(), harness_store, harness_plugins(RaisingMetricPlugin()))
    assert summary.status == "completed_with_errors"
    errors = harness_store.query("SELECT plugin, hook, component, sample_id, message FROM run_errors")
    assert errors == [
        {
            "plugin": "RaisingMetricPlugin",
            "hook": "Metric.statistics",
            "component": "picky",
            "sample_id": "c",
            "message": "ValueError: cannot score this one",
        }
    ]
    assert harness_store.scalar("SELECT count(*) FROM sample_scores WHERE metric = 'picky'") == 7
    assert harness_store.scalar("SELECT status FROM runs") == "completed_with_errors"


class DrawingDetectorPlugin:
    """A detector that asks for sampled draws and returns a malformed issue on one sample."""

    @staticmethod
    @hookimpl
    def harness_register_detectors(registry: Registry) -> None:
        from harness.components.contracts import Detector

        class CountsDraws(Detector):
            name = "counts_draws"

            def needs(self, args):
                return Needs(draws=2, draw_temperature=0.7)

            def detect(self, items, args):
                out = []
                for it in items:
                    assert len(it.draws) == 2 and all(d.draw in (1, 2) for d in it.draws)
                    if it.sample.id == "b":
                        out.append([Issue(severity=2.0, message="too severe")])
                    else:
                        out.append([Issue(severity=0.6, message=f"{len(it.draws)} draws", start=0, end=3)])
                return out

        registry.add_detector(CountsDraws())


def test_detectors_get_draws_and_malformed_issues_are_errors_naming_the_detector(tmp_path, harness_store, harness_plugins, mock_backend) -> None:
    suite_dir = tmp_path / "s"
    suite_dir.mkdir()
    (suite_dir / "data.jsonl").write_text((ECHO / "data.jsonl").read_text())
    (suite_dir / "suite.yaml").write_text(
        (ECHO / "suite.yaml").read_text() + "detectors:\n  - name: counts_draws\n    threshold: 0.5\n"
    )
    summary = evaluate(load_suite(suite_dir), mock_spec(), harness_store, harness_plugins(DrawingDetectorPlugin()))
    assert summary.generated == 8 * 3
    assert harness_store.scalar("SELECT count(*) FROM run_generations WHERE draw > 0") == 16
    assert summary.issue_counts == {"counts_draws": 7}
    error = harness_store.query("SELECT component, sample_id, message FROM run_errors")[0]
    assert error["component"] == "counts_draws" and error["sample_id"] == "b"
    assert "detector 'counts_draws' returned a malformed issue: issue severity 2.0 is outside [0, 1]" in error["message"]
    failing = {r["sample_id"] for r in harness_store.query("SELECT sample_id FROM failures")}
    assert failing == {"a", "c", "d", "e", "f", "g", "h"}


class Observer:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[dict] = []

    @hookimpl
    def harness_eval_started(self, run_id: int, run: dict) -> None:
        self.started.append(run_id)
        assert run["suite_name"] == "echo"

    @hookimpl
    def harness_eval_finished(self, run_id: int, summary: dict) -> None:
        self.finished.append(summary)


class FailingObserver:
    @staticmethod
    @hookimpl
    def harness_eval_finished(run_id: int) -> None:
        raise RuntimeError("tracker unavailable")


def test_harness_eval_started_and_harness_eval_finished_hooks(suite, harness_store, harness_plugins, mock_backend) -> None:
    observer = Observer()
    summary = evaluate(suite, mock_spec(), harness_store, harness_plugins(observer, FailingObserver()))
    assert observer.started == [summary.run_id]
    assert observer.finished[0]["run_id"] == summary.run_id
    assert observer.finished[0]["corpus"]["exact_match"]["value"] == pytest.approx(0.5)
    # The failing observer did not stop the run, but the run says so.
    assert summary.status == "completed_with_errors"
    error = harness_store.query("SELECT plugin, hook, message FROM run_errors")[0]
    assert error == {"plugin": "FailingObserver", "hook": "harness_eval_finished", "message": "RuntimeError: tracker unavailable"}


def test_perplexity_uses_the_backends_loglikelihood_through_the_cache(tmp_path, harness_store, harness_plugins, mock_backend) -> None:
    suite_dir = tmp_path / "s"
    suite_dir.mkdir()
    (suite_dir / "data.jsonl").write_text((ECHO / "data.jsonl").read_text())
    (suite_dir / "suite.yaml").write_text((ECHO / "suite.yaml").read_text().replace("  - wer\n", "  - perplexity\n"))
    plugins = harness_plugins()
    summary = evaluate(load_suite(suite_dir), mock_spec(), harness_store, plugins)
    assert harness_store.scalar("SELECT count(*) FROM loglikelihoods") == 8
    # mock: NLL 0.5 per reference word -> perplexity e^0.5 for every sample
    assert summary.corpus["perplexity"]["value"] == pytest.approx(2.718281828**0.5)
    evaluate(load_suite(suite_dir), mock_spec(), harness_store, plugins)
    assert harness_store.scalar("SELECT count(*) FROM loglikelihoods") == 8


def test_a_missing_model_path_is_refused_and_nothing_is_written(suite, harness_store, harness_plugins) -> None:
    with pytest.raises(NotFoundError, match="model path '/no/such/model' does not exist"):
        evaluate(suite, ModelSpec("/no/such/model"), harness_store, harness_plugins())
    assert harness_store.scalar("SELECT count(*) FROM runs") == 0


def test_an_unknown_backend_is_refused_before_anything_is_written(suite, harness_store, harness_plugins) -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean 'mock'"):
        evaluate(suite, ModelSpec("x", backend="mokc"), harness_store, harness_plugins())
    assert harness_store.scalar("SELECT count(*) FROM runs") == 0


def test_limit_evaluates_the_first_samples(suite, harness_store, harness_plugins, mock_backend) -> None:
    summary = evaluate(suite, mock_spec(), harness_store, harness_plugins(), EvalOptions(limit=3))
    assert summary.n_samples == 3
    ids = [r["sample_id"] for r in harness_store.query("SELECT sample_id FROM samples ORDER BY position")]
    assert ids == ["a", "b", "c"]
    assert MockBackend.calls and len(MockBackend.calls) == 3
