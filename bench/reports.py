"""Benchmark: build and render the reports of a run of 10,000 samples.

    python bench/reports.py                 # 10,000 samples, temporary store
    python bench/reports.py --samples 50000 --store /tmp/big.duckdb

Builds a store with two runs of the same suite (bulk inserts through
`harness.store.insert`; outputs of a few hundred characters, four metrics with real
sacrebleu/jiwer statistics, three detectors' issues with evidence spans, a few plugin
errors), then times, with plugins already loaded:

- the `run` report: built (every query) and printed to a terminal console (StringIO),
  at 100 and 80 columns; built and rendered as HTML; as JSON;
- the `compare` report of the two runs (paired bootstrap, 1,000 resamples per metric).

Target: the run report in under a second.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from harness.components.plugin_manager import load_plugins
from harness.plugins.metrics import (
    Bleu,
    BleuArgs,
    Chrf,
    ChrfArgs,
    ErrorRateArgs,
    ExactMatch,
    ExactMatchArgs,
    Wer,
)
from harness.report.render import render
from harness.report.render.terminal import print_document
from harness.report.show import build_report
from harness.store import Store, insert
from harness.store.core import utcnow
from harness.testing import item

VOCABULARY = (
    "the of and a to in is was that for it with as his on be at by had not are but from or have "
    "an they which one you were all we her she there would their will when who him been has more "
    "if no out so said what up its about than into them can only other time new some could these "
    "two may first then do any like my now over such our man me even most made after also did many "
    "before must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off come"
)
WORDS = VOCABULARY.split()
METRICS = [
    ("chrf", Chrf(), ChrfArgs(), {"target": 60.0, "sample_threshold": 50.0}),
    ("exact_match", ExactMatch(), ExactMatchArgs(), {"target": None, "sample_threshold": None}),
    ("wer", Wer(), ErrorRateArgs(), {"target": 0.5, "sample_threshold": None}),
    ("bleu", Bleu(), BleuArgs(), {"target": None, "sample_threshold": None}),
]
DETECTORS = {"repetition": 0.5, "length": 0.6, "misspelling": 0.7}


def sentence(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))).capitalize() + "."


def make_texts(n: int, seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    references = [sentence(rng, 35, 75) for _ in range(n)]
    outputs = []
    for ref in references:
        words = ref.split()
        kept = [w if rng.random() < 0.6 else str(rng.choice(WORDS)) for w in words]
        if rng.random() < 0.1:
            kept += kept[-8:] * 3  # repetition: some long, looping outputs
        outputs.append(" ".join(kept))
    inputs = [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]
    return {"references": references, "outputs": outputs, "inputs": inputs}


def statistics_of(
    texts: dict[str, list[str]], only: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Each metric's per-sample statistics, computed by the metric itself (for `only`
    these samples, when given)."""
    indices = range(len(texts["outputs"])) if only is None else only
    items = [
        item(texts["outputs"][i], reference=texts["references"][i], id=str(i)) for i in indices
    ]
    return {
        name: np.asarray(metric.statistics(items, args), dtype=float)
        for name, metric, args, _ in METRICS
    }


def add_run(
    store: Store,
    label: str,
    texts: dict[str, list[str]],
    stats_by_metric: dict[str, np.ndarray],
    seed: int,
) -> int:
    n = len(texts["outputs"])
    ids = [f"q{i:05d}" for i in range(n)]
    instruction = "Define the word, in one sentence, as a dictionary would."
    prompts = [
        f"### Instruction:\n{instruction}\n\n### Input:\n{x}\n\n### Response:\n"
        for x in texts["inputs"]
    ]
    rng = np.random.default_rng(seed)
    header = {
        "fingerprint": f"bench-{label}",
        "suite_name": "bench",
        "suite_version": "1",
        "suite_hash": "b" * 64,
        "suite_path": "/bench/suite.yaml",
        "model_path": f"/models/{label}",
        "adapter_path": None,
        "model_hash": label * 16,
        "adapter_hash": None,
        "checkpoint_hash": (label * 64)[:64],
        "backend": "hf",
        "backend_options": json.dumps({"batch_size": 32}),
        "model_info": json.dumps({"dtype": "float32"}),
        "prompt": json.dumps({"format": "instruction", "template": None, "system": None}),
        "generation": json.dumps(
            {
                "max_new_tokens": 96,
                "temperature": 0.0,
                "top_p": 1.0,
                "top_k": 0,
                "stop": [],
                "seed": 0,
            }
        ),
        "seed": 0,
        "metrics": json.dumps([{"name": name, "args": {}, **cfg} for name, _, _, cfg in METRICS]),
        "detectors": json.dumps(
            [{"name": name, "args": {}, "threshold": t} for name, t in DETECTORS.items()]
        ),
        "main_metric": "chrf",
        "plugin_versions": json.dumps({"harness.plugins.metrics": "0.1.0"}),
        "library_versions": json.dumps({"python": "3.11", "duckdb": "2.0"}),
        "git_revision": "0" * 40,
        "host": "bench",
        "n_samples": n,
        "label": label,
        "status": "completed_with_errors",
        "started_at": utcnow(),
        "finished_at": utcnow(),
        "generation_s": 3600.0,
        "scoring_s": 40.0,
    }
    with store.transaction() as con:
        run_id = con.execute(
            f"INSERT INTO runs ({', '.join(header)}) VALUES ({', '.join('?' * len(header))}) RETURNING run_id",
            list(header.values()),
        ).fetchone()[0]
        insert(
            con,
            "samples",
            {
                "run_id": [run_id] * n,
                "sample_id": ids,
                "position": list(range(n)),
                "instruction": [instruction] * n,
                "input": texts["inputs"],
                "refs": [[r] for r in texts["references"]],
                "tags": [["bench"]] * n,
                "group_id": [None] * n,
                "metadata": ["{}"] * n,
                "prompt": prompts,
            },
        )
        keys = [f"{label}-{i}" for i in ids]
        insert(
            con,
            "generations",
            {
                "cache_key": keys,
                "checkpoint_hash": [header["checkpoint_hash"]] * n,
                "text": texts["outputs"],
                "prompt_tokens": [40] * n,
                "completion_tokens": [len(o.split()) for o in texts["outputs"]],
                "finish_reason": ["eos"] * n,
                "latency_s": [0.3] * n,
                "created_at": [utcnow()] * n,
            },
            ignore_conflicts=True,
        )
        insert(
            con,
            "run_generations",
            {
                "run_id": [run_id] * n,
                "sample_id": ids,
                "draw": [0] * n,
                "cache_key": keys,
                "cached": [False] * n,
            },
        )
        failing: dict[str, list[str]] = {}
        for name, metric, args, cfg in METRICS:
            stats = stats_by_metric[name]
            values = np.asarray(metric.sample_scores(stats, args), dtype=float)
            corpus = float(metric.from_statistics(stats.sum(axis=0), args))
            insert(
                con,
                "sample_scores",
                {
                    "run_id": [run_id] * n,
                    "sample_id": ids,
                    "metric": [name] * n,
                    "value": values.tolist(),
                    "stats": stats.tolist(),
                },
            )
            target = cfg["target"]
            passed = (
                None
                if target is None
                else (corpus >= target if metric.higher_is_better else corpus <= target)
            )
            insert(
                con,
                "corpus_scores",
                {
                    "run_id": [run_id],
                    "metric": [name],
                    "value": [corpus],
                    "ci_low": [corpus * 0.98],
                    "ci_high": [corpus * 1.02],
                    "confidence": [0.95],
                    "higher_is_better": [metric.higher_is_better],
                    "target": [target],
                    "passed": [passed],
                    "sample_threshold": [cfg["sample_threshold"]],
                    "n": [n],
                },
            )
            threshold = cfg["sample_threshold"]
            if threshold is not None:
                for sample_id, v in zip(ids, values):
                    if v < threshold:
                        failing.setdefault(sample_id, []).append(f"metric:{name}")
        issues: dict[str, list[Any]] = {
            k: []
            for k in (
                "run_id",
                "sample_id",
                "detector",
                "kind",
                "severity",
                "message",
                "span_start",
                "span_end",
                "data",
            )
        }
        for sample_id, output in zip(ids, texts["outputs"]):
            for detector, threshold in DETECTORS.items():
                if rng.random() < 0.12:
                    start = int(rng.integers(0, max(1, len(output) - 40)))
                    severity = float(rng.random())
                    for key, value in (
                        ("run_id", run_id),
                        ("sample_id", sample_id),
                        ("detector", detector),
                        ("kind", detector),
                        ("severity", severity),
                        ("message", f"{detector} found in the output"),
                        ("span_start", start),
                        ("span_end", min(len(output), start + 30)),
                        ("data", "{}"),
                    ):
                        issues[key].append(value)
                    if severity >= threshold:
                        failing.setdefault(sample_id, []).append(f"detector:{detector}")
        insert(con, "issues", issues)
        insert(
            con,
            "failures",
            {
                "run_id": [run_id] * len(failing),
                "sample_id": list(failing),
                "reasons": list(failing.values()),
            },
        )
        insert(
            con,
            "run_errors",
            {
                "run_id": [run_id] * 3,
                "sample_id": ids[:3],
                "plugin": ["team.plugin"] * 3,
                "hook": ["Detector.detect"] * 3,
                "component": ["toxicity"] * 3,
                "message": ["ValueError: model output too long"] * 3,
                "traceback": [""] * 3,
                "created_at": [utcnow()] * 3,
            },
        )
    return int(run_id)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(first call, median of the rest) in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument(
        "--store", type=Path, help="Keep the store here (default: a temporary directory)."
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    path = args.store or directory / "bench.duckdb"
    started = time.perf_counter()
    texts_a = make_texts(args.samples, seed=1)
    # Checkpoint B: the same outputs, with one in ten replaced by its reference.
    texts_b = dict(
        texts_a,
        outputs=[
            r if i % 10 == 0 else o
            for i, (o, r) in enumerate(zip(texts_a["outputs"], texts_a["references"]))
        ],
    )
    stats_a = statistics_of(texts_a)
    changed = list(range(0, args.samples, 10))
    stats_b = {name: values.copy() for name, values in stats_a.items()}
    for name, rows in statistics_of(texts_b, changed).items():
        stats_b[name][changed] = rows
    with Store.writer(path) as store:
        run_a = add_run(store, "a", texts_a, stats_a, seed=1)
        run_b = add_run(store, "b", texts_b, stats_b, seed=2)
    mean_chars = int(np.mean([len(o) for o in texts_a["outputs"]]))
    print(
        f"store: {path}, 2 runs x {args.samples} samples (outputs {mean_chars} chars on average), "
        f"built in {time.perf_counter() - started:.1f} s"
    )

    start = time.perf_counter()
    plugins = load_plugins(autoload=False)
    print(
        f"loading plugins (once per command, not counted below): {time.perf_counter() - start:.2f} s"
    )

    with Store.reader(path) as store:

        def terminal(width: int) -> Callable[[], None]:
            def go() -> None:
                doc = build_report(store, "run", plugins=plugins, run=run_a)
                print_document(doc, Console(file=io.StringIO(), width=width, force_terminal=True))

            return go

        def html() -> None:
            render(build_report(store, "run", plugins=plugins, run=run_a), "html")

        def as_json() -> None:
            render(build_report(store, "run", plugins=plugins, run=run_a), "json")

        def compare() -> None:
            doc = build_report(store, "compare", plugins=plugins, run_a=run_a, run_b=run_b)
            print_document(doc, Console(file=io.StringIO(), width=100, force_terminal=True))

        rows = [
            ("run report, build + terminal (100 columns)", terminal(100)),
            ("run report, build + terminal (80 columns)", terminal(80)),
            ("run report, build + HTML", html),
            ("run report, build + JSON", as_json),
            ("compare report, build + terminal (4 paired tests)", compare),
        ]
        print(f"\n{'':52} {'first':>8} {'median':>8}")
        for label, fn in rows:
            first, median = timed(fn, args.repeat)
            print(f"{label:52} {first:7.3f}s {median:7.3f}s")


if __name__ == "__main__":
    main()
