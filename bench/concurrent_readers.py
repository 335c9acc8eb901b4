"""Readers beside a writer: how long evaluations wait for reader processes, and whether a
reader ever sees a half-written run.

    python bench/concurrent_readers.py                  # 8 evaluations, 2 reader processes
    python bench/concurrent_readers.py --runs 20 --readers 4

The writer evaluates the test suite `tests/data/echo_suite` with the mock backend (no
model: the figures are the store's), committing every 2 generations, first alone and
then while reader processes run `harness sql`'s code path (`Queries.sql`, the sandboxed
connection) in a loop. Each reader checks every snapshot: a run's samples all there, a
completed run's corpus scores all there. Printed: the writer's wall time alone and with
readers, its longest single wait for the file and its total wait, the readers' reads,
their longest read, and broken snapshots (must be 0). The 1-minute load average is
printed beside them: on a shared machine the waits grow with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_concurrency import READER, SNAPSHOT  # noqa: E402  (the test's reader, reused)

from harness.components.plugin_manager import load_plugins  # noqa: E402
from harness.score.evaluate import EvalOptions, evaluate  # noqa: E402
from harness.store import Store  # noqa: E402
from harness.suite.load import load_suite  # noqa: E402
from harness.testing import mock_backend_plugin, mock_spec  # noqa: E402


def write(path: Path, runs: int, offset: int) -> tuple[float, float, float]:
    suite = load_suite(ROOT / "tests" / "data" / "echo_suite")
    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "mock")])
    started = time.perf_counter()
    with Store.writer(path) as store:
        for i in range(runs):
            summary = evaluate(
                suite, mock_spec(f"ckpt-{offset + i}"), store, plugins, EvalOptions(resamples=20, chunk_size=2)
            )
            assert summary.ok
        return time.perf_counter() - started, store.longest_lock_wait_s, store.lock_wait_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--readers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.duckdb"
        alone, _, _ = write(path, args.runs, 0)
        load_alone = os.getloadavg()[0]
        stop = Path(tmp) / "stop"
        readers = [
            subprocess.Popen([sys.executable, "-c", READER, str(path), str(stop), SNAPSHOT],
                             stdout=subprocess.PIPE, text=True)
            for _ in range(args.readers)
        ]
        for reader in readers:
            assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        shared, longest, total = write(path, args.runs, args.runs)
        load_shared = os.getloadavg()[0]
        stop.touch()
        reports = [json.loads(r.communicate(timeout=120)[0].strip().splitlines()[-1]) for r in readers]
    print(f"{args.runs} evaluations of 8 samples (mock backend), {args.readers} reader process(es)")
    print(f"writer alone:        {alone:6.2f} s   (load {load_alone:.1f})")
    print(f"writer with readers: {shared:6.2f} s   (load {load_shared:.1f})")
    print(f"writer's longest wait for the file: {longest:.3f} s; total wait {total:.2f} s")
    print(f"reads: {sum(r['reads'] for r in reports)}, longest read {max(r['longest_s'] for r in reports):.2f} s, "
          f"refused {sum(r['refused'] for r in reports)}, broken snapshots {sum(len(r['broken']) for r in reports)}")


if __name__ == "__main__":
    main()
