"""`harness view` on a store of 100,000 samples: how long the pages take to serve.

    python bench/view.py                     # 100,000 samples, 5 repeats
    python bench/view.py --samples 20000 --repeats 3

Builds one run of N samples (outputs, references, two metrics, issues on a tenth of the
samples, a third failing, those clustered into 8 clusters) with bulk inserts into a fresh
store, then requests each page through Starlette's in-process client, so each figure is
the whole request: the read-only connection opened for it, the SQL, the template and the
response. Median of the repeats, in turns, with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

from _machine import Timing, describe, machine, timed, write_json

from harness.store import Store, insert
from harness.store.core import utcnow

WORDS = (
    "the word means a small animal that lives in water and eats plants or insects it is often "
    "used to describe something that happens slowly over a long period of time"
).split()


def build(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    now = utcnow()
    ids = [f"s{i:06d}" for i in range(n)]
    outputs = [" ".join(rng.choices(WORDS, k=rng.randint(10, 40))) for _ in range(n)]
    keys = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
    chrf = [rng.random() * 100 for _ in range(n)]
    failing = [i for i in range(n) if chrf[i] < 33]
    flagged = rng.sample(range(n), n // 10)
    with Store.writer(path) as store, store.transaction() as con:
        insert(con, "runs", {
            "fingerprint": ["f"], "suite_name": ["bench"], "suite_version": ["1"], "suite_hash": ["h"],
            "suite_path": ["bench/suite.yaml"], "model_path": ["model"], "model_hash": ["m"],
            "checkpoint_hash": ["c"], "backend": ["mock"], "prompt": ["{}"], "generation": ["{}"], "seed": [0],
            "metrics": [json.dumps([{"name": "chrf", "args": {}}, {"name": "exact_match", "args": {}}])],
            "detectors": [json.dumps([{"name": "repetition", "threshold": 0.5}])], "main_metric": ["chrf"],
            "plugin_versions": ["{}"], "library_versions": ["{}"], "n_samples": [n], "status": ["completed"],
            "started_at": [now], "finished_at": [now],
        })
        insert(con, "samples", {
            "run_id": [1] * n, "sample_id": ids, "position": list(range(n)),
            "instruction": ["Define the word."] * n, "input": [f"word{i}" for i in range(n)],
            "refs": [[f"a reference for word{i}"] for i in range(n)], "tags": [[f"t{i % 10}"] for i in range(n)],
            "prompt": [f"### Instruction:\nDefine the word.\n\n### Input:\nword{i}" for i in range(n)],
        })
        insert(con, "generations", {
            "cache_key": keys, "checkpoint_hash": ["c"] * n, "text": outputs,
            "prompt_tokens": [20] * n, "completion_tokens": [len(o.split()) for o in outputs],
            "finish_reason": ["eos"] * n, "latency_s": [0.1] * n, "created_at": [now] * n,
        })
        insert(con, "run_generations", {
            "run_id": [1] * n, "sample_id": ids, "draw": [0] * n, "cache_key": keys, "cached": [False] * n,
        })
        insert(con, "sample_scores", {
            "run_id": [1] * (2 * n), "sample_id": ids + ids, "metric": ["chrf"] * n + ["exact_match"] * n,
            "value": chrf + [float(rng.random() < 0.1) for _ in range(n)],
            "stats": [[rng.random() for _ in range(6)] for _ in range(n)] + [[0.0, 1.0]] * n,
        })
        insert(con, "corpus_scores", {
            "run_id": [1, 1], "metric": ["chrf", "exact_match"], "value": [50.0, 0.1], "ci_low": [49.0, 0.09],
            "ci_high": [51.0, 0.11], "confidence": [0.95, 0.95], "higher_is_better": [True, True],
            "sample_threshold": [33.0, None], "n": [n, n],
        })
        insert(con, "issues", {
            "run_id": [1] * len(flagged), "sample_id": [ids[i] for i in flagged],
            "detector": ["repetition"] * len(flagged), "kind": ["repeated_ngram"] * len(flagged),
            "severity": [rng.random() for _ in flagged], "message": ["a repeated phrase"] * len(flagged),
            "span_start": [0] * len(flagged), "span_end": [8] * len(flagged),
        })
        insert(con, "failures", {
            "run_id": [1] * len(failing), "sample_id": [ids[i] for i in failing],
            "reasons": [["metric:chrf"]] * len(failing),
        })
        insert(con, "clusterings", {
            "run_id": [1], "featurizer": ["tfidf"], "featurizer_args": ["{}"], "clusterer": ["kmeans"],
            "clusterer_args": ["{}"], "n_failures": [len(failing)], "n_clusters": [8], "unclustered": [0],
            "created_at": [now],
        })
        insert(con, "clusters", {
            "clustering_id": [1] * 8, "cluster_id": list(range(8)), "label": [f"cluster {c}" for c in range(8)],
            "top_terms": [["word"]] * 8, "tags": [[]] * 8, "size": [sum(1 for j, _ in enumerate(failing) if j % 8 == c) for c in range(8)],
            "examples": [[]] * 8, "reasons": ["{}"] * 8,
        })
        insert(con, "cluster_members", {
            "clustering_id": [1] * len(failing), "cluster_id": [j % 8 for j in range(len(failing))],
            "sample_id": [ids[i] for i in failing], "distance": [rng.random() for _ in failing],
        })


def pages(n: int) -> list[tuple[str, str]]:
    last = max(n - 50, 0)
    return [
        ("runs (first page)", "/"),
        ("run", "/runs/1"),
        ("samples, first page", "/runs/1/samples"),
        ("samples, failing + tag", "/runs/1/samples?status=fail&tag=t3"),
        ("samples, metric range", "/runs/1/samples?metric=chrf&low=10&high=20"),
        ("samples, detector + cluster", "/runs/1/samples?detector=repetition&cluster=2"),
        ("samples, text search", "/runs/1/samples?text=word4242"),
        ("samples, last page", f"/runs/1/samples?offset={last}"),
        ("a sample", "/runs/1/samples/s004242"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from starlette.testclient import TestClient

    from harness.view.app import create_app

    info = machine()
    print(describe(info))
    with tempfile.TemporaryDirectory(prefix="bench-view-") as tmp:
        path = Path(tmp) / "view.duckdb"
        _, seconds = timed(lambda: build(path, args.samples, args.seed))
        print(f"built a store of {args.samples:,} samples in {seconds:.1f} s; {args.repeats} repeats in turns, median reported\n")
        client = TestClient(create_app(path))
        cases = pages(args.samples)
        for _, url in cases:  # warm up: first imports, template compilation
            assert client.get(url).status_code == 200, url
        timings = {name: Timing() for name, _ in cases}
        sizes: dict[str, Any] = {}
        for _ in range(args.repeats):
            for name, url in cases:
                response, seconds = timed(lambda u=url: client.get(u))
                assert response.status_code == 200, (url, response.text[:500])
                timings[name].add(seconds)
                sizes[name] = response.text.split("<tbody>")[-1].split("</tbody>")[0].count("<tr") if "<tbody>" in response.text else 0
    print(f"{'page':<30} {'rows':>5} {'median s':>9} {'spread':>15} {'load':>5}")
    rows = []
    for name, url in cases:
        t = timings[name]
        print(f"{name:<30} {sizes[name]:5d} {t.median:9.3f} {t.spread():>15} {t.load:5.2f}")
        rows.append({"page": name, "url": url, "rows": sizes[name], "seconds": t.seconds, "median_s": t.median, "loads": t.loads})
    write_json(args.json, {"machine": info, "samples": args.samples, "pages": rows})


if __name__ == "__main__":
    main()
