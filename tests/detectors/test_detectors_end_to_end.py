"""The built-in detectors in a real run: suite arguments, draws, stored issues."""

from __future__ import annotations

from pathlib import Path

from harness.score.evaluate import evaluate
from harness.suite.load import load_suite
from harness.testing import mock_spec

ECHO = Path(__file__).resolve().parents[1] / "data" / "echo_suite"

DETECTORS = """detectors:
  - name: repetition
    args: {max_repeat_tokens: 6}
  - length
  - grounding
  - name: self_consistency
    args: {draws: 2}
  - misspelling
  - inconsistency
"""


def test_every_builtin_detector_runs_in_a_suite(
    tmp_path, harness_store, harness_plugins, mock_backend
) -> None:
    suite_dir = tmp_path / "s"
    suite_dir.mkdir()
    (suite_dir / "data.jsonl").write_text((ECHO / "data.jsonl").read_text())
    (suite_dir / "suite.yaml").write_text((ECHO / "suite.yaml").read_text() + DETECTORS)

    def respond(prompt: str) -> str:
        if "the cat sat" in prompt:  # sample "a" loops, with a misspelling
            return "the catt sat on the mat and the catt sat on the mat"
        return prompt.strip().splitlines()[-1]

    mock_backend.responder = staticmethod(respond)
    summary = evaluate(load_suite(suite_dir), mock_spec(), harness_store, harness_plugins())
    assert summary.status == "completed"
    assert harness_store.query("SELECT * FROM run_errors") == []
    # self_consistency asked for two draws per sample
    assert (
        harness_store.scalar("SELECT count(*) FROM run_generations WHERE draw > 0")
        == 2 * summary.n_samples
    )
    rows = harness_store.query(
        "SELECT detector, kind, sample_id, span_start, span_end, data FROM issues"
    )
    found = {(r["detector"], r["kind"], r["sample_id"]): r for r in rows}
    output = "the catt sat on the mat and the catt sat on the mat"
    loop = found[("repetition", "loop", "a")]
    assert output[loop["span_start"] : loop["span_end"]] == "the catt sat on the mat"
    typo = found[("misspelling", "misspelling", "a")]
    assert output[typo["span_start"] : typo["span_end"]] == "catt"
    failing = {r["sample_id"]: r["reasons"] for r in harness_store.query("SELECT * FROM failures")}
    assert "detector:repetition" in failing["a"]
