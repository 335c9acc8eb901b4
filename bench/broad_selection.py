"""How many of the rows the `pool` source picks from the broad pool are on-task?

Takes the first 40 samples of the `numbers-broad` suite as one cluster of failures
(without evaluating a model: what the pool source reads of a failure is its prompt and
reference) and asks the `pool` source for 100 rows from the 42,859-row broad pool
(1,500 numbers rows, 3.5 %) four ways: targeted with the task compared automatically (the
pool mixes tasks), targeted comparing input and reference only
(`include_instruction=false`), `random` and `random_on_task`. Prints, for each, how many
rows are of the numbers task, the time, and the first inputs.

    python bench/broad_selection.py
"""

from __future__ import annotations

import time
from typing import Any

from harness import DataRequest
from harness.cluster.clustering import Cluster, Failure
from harness.data.curation import build_eval_index, normalize
from harness.plugins.data_sources._retrieval import suite_task
from harness.plugins.data_sources.pool import PoolArgs, PoolSource
from harness.suite.load import load_suite
from harness.types import Generation

ARMS: tuple[dict[str, Any], ...] = (
    {},
    {"include_instruction": False},
    {"selection": "random"},
    {"selection": "random_on_task"},
)


def main() -> None:
    suite = load_suite("numbers-broad")
    failures = tuple(Failure(s, Generation(s.id, "x"), (), {}, ()) for s in suite.samples[:40])
    cluster = Cluster(0, tuple(f.sample.id for f in failures), "all", (), None, (), None, None, (), {})
    index = build_eval_index([suite, load_suite("general")], n=13)
    task = suite_task(suite)
    source = PoolSource()
    for args in ARMS:
        started = time.perf_counter()
        request = DataRequest(cluster=cluster, failures=failures, budget=100, suite=suite,
                              exclude_inputs=index.excluded_inputs)
        rows = source.gather(request, PoolArgs(**args))
        on_task = sum(normalize(r.instruction) in task for r in rows)
        print(f"{args or 'targeted (automatic)'}: {on_task} of {len(rows)} on-task, "
              f"{time.perf_counter() - started:.1f} s, first inputs {[r.input for r in rows[:6]]}")


if __name__ == "__main__":
    main()
