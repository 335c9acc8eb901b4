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


# Each iteration as a reader saw it, with the state of everything its step says exists.
ITERATION_SNAPSHOT = """
SELECT i.loop_id, i.iteration, i.step, i.decision, i.reason, i.finished_at IS NOT NULL AS finished,
       i.comparison IS NOT NULL AS compared, i.clustering_id, i.manifest_hash, i.training_id,
       (SELECT status FROM runs r WHERE r.run_id = i.eval_run_id) AS eval_status,
       (SELECT status FROM runs r WHERE r.run_id = i.mining_run_id) AS mining_status,
       (SELECT status FROM runs r WHERE r.run_id = i.guard_run_id) AS guard_status,
       (SELECT count(*) FROM cluster_members m WHERE m.clustering_id = i.clustering_id) AS members,
       (SELECT n_rows FROM datasets d WHERE d.manifest_hash = i.manifest_hash) AS dataset_rows,
       (SELECT count(*) FROM dataset_rows d WHERE d.manifest_hash = i.manifest_hash) AS stored_rows,
       (SELECT status FROM training_runs t WHERE t.training_id = i.training_id) AS training_status
FROM iterations i
"""

LOOP_READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from harness.errors import StoreLockedError
    from harness.components.plugin_manager import load_plugins
    from harness.report.show import build_report
    from harness.store import Store

    STEPS = ["started", "clustered", "data", "trained", "evaluated", "decided"]
    path, stop, snapshot = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    plugins = load_plugins()
    steps, broken, refused, longest, reads = set(), [], 0, 0.0, 0
    deadline = time.monotonic() + 300
    while not stop.exists() and time.monotonic() < deadline:
        if reads == 1:
            print("ready", flush=True)
        started = time.monotonic()
        try:
            with Store.reader(path) as store:
                rows = store.query(snapshot)
                # The history a user would print, built from the same moment of the store.
                history = build_report(store, "history", plugins=plugins) if rows else None
        except StoreLockedError:
            refused += 1
            continue
        longest = max(longest, time.monotonic() - started)
        reads += 1
        for row in rows:
            where = f"iteration {row['iteration']} at step {row['step']}"
            steps.add(row["step"])
            reached = STEPS.index(row["step"])
            first = row["iteration"] == 0
            if not first and reached >= 1 and not row["members"]:
                broken.append(f"{where}: clustering {row['clustering_id']} has no members")
            if not first and reached >= 2 and row["dataset_rows"] != row["stored_rows"]:
                broken.append(f"{where}: dataset with {row['stored_rows']} of {row['dataset_rows']} rows")
            if not first and reached >= 3 and row["training_status"] != "completed":
                broken.append(f"{where}: training {row['training_status']}")
            if reached >= 4 and {row["eval_status"], row["mining_status"], row["guard_status"]} != {"completed"}:
                broken.append(f"{where}: runs {row['eval_status']}, {row['mining_status']}, {row['guard_status']}")
            if reached == 5 and not (row["decision"] and row["reason"] and row["finished"]
                                     and (first or row["compared"])):
                broken.append(f"{where}: decided without its decision, reason or comparison")
        if history is not None and not history.blocks:
            broken.append("the history report is empty")
        time.sleep(0.05)  # two readers polling flat out would starve the loop of the 2 cores
    print(json.dumps({"reads": reads, "steps": sorted(steps), "broken": broken, "refused": refused,
                      "longest_s": longest}))
    """
)


def test_a_reader_process_beside_a_loop_sees_whole_iterations(tmp_path: Path) -> None:
    """`harness history` (and any query) in another process while a loop writes: every
    iteration it sees is whole at the step it is at, and the loop is not held up."""
    from test_loop import PLUGIN, WORDS, IterationObserver, build_suites, config, reference, scripted_module

    from harness.components.plugin_manager import load_plugins
    from harness.loop.run import run_loop

    paths = build_suites(tmp_path)
    plugins = load_plugins([PLUGIN], autoload=False, extra=[(IterationObserver(), "observer")])
    scripted_module(plugins).ScriptedBackend.references = {w: reference(w) for w in WORDS}
    scripted_module(plugins).ScriptedTrainer.calls = []
    path = tmp_path / "loop.duckdb"
    with Store.writer(path) as store:  # the store exists before the readers start
        store.scalar("SELECT 1")
    stop = tmp_path / "stop"
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", LOOP_READER, str(path), str(stop), ITERATION_SNAPSHOT],
            stdout=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    for reader in readers:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    try:
        with Store.writer(path) as store:
            result = run_loop(
                config(paths, ["good-15", "good-15", "good-30"], iterations=3, fixed_iterations=True), store, plugins
            )
            writer_waited = store.longest_lock_wait_s
    finally:
        stop.touch()
    reports = [json.loads(r.communicate(timeout=60)[0].strip().splitlines()[-1]) for r in readers]
    assert [r.iteration for r in result.iterations] == [0, 1, 2, 3]
    broken = [b for r in reports for b in r["broken"]]
    assert broken == [], broken
    assert sum(r["reads"] for r in reports) > 4
    # The readers caught the loop between its steps, not only before and after it.
    assert len(set().union(*(r["steps"] for r in reports))) >= 2, reports
    assert writer_waited < 3 and sum(r["refused"] for r in reports) == 0, (writer_waited, reports)
