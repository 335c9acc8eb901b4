"""An evaluation killed with SIGKILL part way resumes without regenerating finished work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).parent / "data"
PLUGIN = DATA / "plugins" / "slow_echo.py"


def make_suite(root: Path, n: int = 40) -> Path:
    root.mkdir()
    with open(root / "data.jsonl", "w") as handle:
        for i in range(n):
            words = f"item {i} says hello {i % 7}"
            reference = words if i % 3 else f"item {i} says goodbye"
            handle.write(json.dumps({"id": f"s{i:02d}", "input": words, "reference": reference}) + "\n")
    (root / "suite.yaml").write_text(
        "name: resumable\nversion: 1\ndata: data.jsonl\ninstruction: Repeat.\n"
        "metrics:\n  - exact_match\n  - chrf\n  - wer\n"
    )
    return root


def harness(store: Path, suite: Path, log: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "harness", "--store", str(store), "--plugin", str(PLUGIN),
        "eval", str(suite), "--backend", "slow_echo", "--model", "m",
        "--commit-every", "4", "--no-report", *extra,
    ]


def env(log: Path) -> dict[str, str]:
    return {**os.environ, "SLOW_ECHO_LOG": str(log), "SLOW_ECHO_DELAY": "0.05"}


def results(store: Path, run_id: int | None = None) -> dict:
    import duckdb

    con = duckdb.connect(str(store), read_only=True)
    try:
        if run_id is None:
            run_id = con.execute("SELECT max(run_id) FROM runs").fetchone()[0]
        outputs = dict(con.execute(
            "SELECT sample_id, text FROM run_generations JOIN generations USING (cache_key) WHERE run_id = ?",
            [run_id]).fetchall())
        scores = {(s, m): v for s, m, v in con.execute(
            "SELECT sample_id, metric, value FROM sample_scores WHERE run_id = ?", [run_id]).fetchall()}
        corpus = dict(con.execute("SELECT metric, value FROM corpus_scores WHERE run_id = ?", [run_id]).fetchall())
        status = con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchone()[0]
    finally:
        con.close()
    return {"outputs": outputs, "scores": scores, "corpus": corpus, "status": status}


def test_sigkill_then_rerun_regenerates_nothing_that_was_committed(tmp_path: Path) -> None:
    suite = make_suite(tmp_path / "suite")
    store, log = tmp_path / "store.duckdb", tmp_path / "first.log"
    proc = subprocess.Popen(harness(store, suite, log), env=env(log), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until a few chunks are committed
        if log.exists() and len(log.read_text().splitlines()) >= 18:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = log.read_text().splitlines()
    assert 18 <= len(first) < 40, "the kill must land part way through"

    import duckdb

    con = duckdb.connect(str(store), read_only=True)
    committed = {r[0] for r in con.execute("SELECT sample_id FROM run_generations").fetchall()}
    status = con.execute("SELECT status FROM runs").fetchone()[0]
    con.close()
    assert status == "running" and 16 <= len(committed) < 40 and len(committed) % 4 == 0

    second_log = tmp_path / "second.log"
    done = subprocess.run(harness(store, suite, second_log), env=env(second_log), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "(resumed)" in done.stderr
    regenerated = second_log.read_text().splitlines()
    committed_inputs = {f"item {int(s[1:])} says hello {int(s[1:]) % 7}" for s in committed}
    assert not committed_inputs & set(regenerated), "committed samples were generated again"
    assert len(regenerated) == 40 - len(committed)

    resumed = results(store)
    assert resumed["status"] == "completed" and len(resumed["outputs"]) == 40

    clean_store, clean_log = tmp_path / "clean.duckdb", tmp_path / "clean.log"
    clean = subprocess.run(harness(clean_store, suite, clean_log), env=env(clean_log), capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    uninterrupted = results(clean_store)
    assert resumed["outputs"] == uninterrupted["outputs"]
    assert resumed["scores"] == uninterrupted["scores"]
    assert resumed["corpus"] == uninterrupted["corpus"]
