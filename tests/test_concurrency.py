"""A reader in another process, while evaluations write, sees whole runs only and does not
hold the writer up."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import mock_spec

ECHO_SUITE = Path(__file__).parent / "data" / "echo_suite"

# One statement, so one snapshot: a run's header, samples and scores as the reader saw them.
SNAPSHOT = """
SELECT r.run_id, r.status, r.n_samples, r.metrics,
       (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id) AS sample_rows,
       (SELECT count(*) FROM corpus_scores c WHERE c.run_id = r.run_id) AS corpus_rows
FROM runs r
"""

READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from harness.errors import StoreLockedError
    from harness.store.queries import Queries
    from harness.store import Store

    path, stop, snapshot = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    seen, broken, refused, longest, reads = 0, [], 0, 0.0, 0
    deadline = time.monotonic() + 300
    while not stop.exists() and time.monotonic() < deadline:
        if reads == 1:
            print("ready", flush=True)
        started = time.monotonic()
        try:
            with Store.reader(path) as store:
                rows = Queries(store).sql(snapshot).to_pylist()
        except StoreLockedError:
            refused += 1
            continue
        longest = max(longest, time.monotonic() - started)
        reads += 1
        for row in rows:
            seen += 1
            if row["sample_rows"] != row["n_samples"]:
                broken.append(f"run {row['run_id']}: {row['sample_rows']} of {row['n_samples']} samples")
            done = row["status"].startswith("completed")
            if done and row["corpus_rows"] != len(json.loads(row["metrics"])):
                broken.append(f"run {row['run_id']} {row['status']} with {row['corpus_rows']} corpus scores")
    print(json.dumps({"reads": reads, "seen": seen, "broken": broken, "refused": refused, "longest_s": longest}))
    """
)


def test_a_reader_process_sees_whole_runs_and_lets_the_writer_on(tmp_path: Path, harness_plugins, mock_backend) -> None:
    path = tmp_path / "s.duckdb"
    suite = load_suite(ECHO_SUITE)
    plugins = harness_plugins()
    with Store.writer(path) as store:  # the store exists before the reader starts
        evaluate(suite, mock_spec("ckpt-0"), store, plugins, EvalOptions(resamples=20))
    stop = tmp_path / "stop"
    # Two readers: their queries overlap, so without the writer's flag they could keep it
    # out of the file until it gave up.
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(path), str(stop), SNAPSHOT], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for reader in readers:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    runs = 1
    with Store.writer(path) as store:
        for _ in range(4):
            summary = evaluate(
                suite, mock_spec(f"ckpt-{runs}"), store, plugins, EvalOptions(resamples=20, chunk_size=2)
            )
            assert summary.ok
            runs += 1
        writer_waited = store.longest_lock_wait_s
    stop.touch()
    reports = [json.loads(r.communicate(timeout=60)[0].strip().splitlines()[-1]) for r in readers]
    report = {key: sum(r[key] for r in reports) for key in ("reads", "seen", "refused")}
    report["broken"] = [b for r in reports for b in r["broken"]]
    assert report["broken"] == [], report["broken"]
    assert report["reads"] > 2 and report["seen"] > 0
    # The reader holds the file only for one query: the writer's longest wait is a small
    # part of the 15 s a connection retries for, and no reader was turned away.
    assert writer_waited < 3 and report["refused"] == 0, (writer_waited, report)
    with Store.reader(path) as store:
        assert store.scalar("SELECT count(*) FROM runs WHERE status = 'completed'") == runs
