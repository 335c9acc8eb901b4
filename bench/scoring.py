"""Scoring 10,000 samples with the built-in metrics and detectors, through the harness's
scoring code, bootstrap confidence intervals included.

    python bench/scoring.py                          # 10,000 items, 3 repeats
    python bench/scoring.py --items 2000 --repeats 5 --resamples 1000

The items are what a run leaves in the store for a dictionary / numbers / arithmetic
suite (bench/detectors.py builds them: definitions of 10-150 words, some looping to the
token limit, numbers in words, arithmetic, misspellings, paraphrase groups, four
re-sampled draws on one item in ten). Each component is resolved as a suite resolves it
(registry, validated default arguments) and scored with `harness.score.scoring.score_items`,
alone, then all together as a run does: metrics chrf, bleu, wer, cer and exact_match
(each with a 1,000-resample bootstrap CI), and every built-in detector except
self_consistency (which compares sampled draws and is timed with generation).

Wall and CPU seconds, median of the repeats (measured in turns), with the 1-minute
load average; "first" is the first call of the process, which includes one-off loading
(the misspelling detector's word list).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _machine import Timing, describe, machine, write_json
from detectors import make_items

from harness.components.plugin_manager import load_plugins
from harness.score.scoring import Components, ResolvedDetector, ResolvedMetric, score_items
from harness.suite.config import DetectorConfig, MetricConfig

METRICS = ("chrf", "bleu", "wer", "cer", "exact_match")
SKIPPED_DETECTORS = {"self_consistency"}


def resolve(registry: Any) -> tuple[list[ResolvedMetric], list[ResolvedDetector]]:
    """The components as `resolve_components` builds them from a suite naming them."""
    metrics = []
    for name in METRICS:
        reg = registry.get("metric", name)
        metrics.append(ResolvedMetric(MetricConfig(name=name), reg.component, reg.component.Args(), reg.plugin.name))
    detectors = []
    for name in registry.names("detector"):
        if name in SKIPPED_DETECTORS:
            continue
        reg = registry.get("detector", name)
        detectors.append(
            ResolvedDetector(DetectorConfig(name=name), reg.component, reg.component.Args(), reg.plugin.name)
        )
    return metrics, detectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    items = make_items(args.items, args.seed)
    metrics, detectors = resolve(load_plugins(autoload=False).registry)
    parts: list[tuple[str, Components]] = [(m.name, Components([m], [])) for m in metrics]
    parts += [(d.name, Components([], [d])) for d in detectors]
    parts.append(("all together", Components(metrics, detectors)))
    info = machine()
    print(describe(info))
    print(f"{len(items)} items, {args.resamples} bootstrap resamples, {args.repeats} repeats in turns\n", flush=True)

    wall = {name: Timing() for name, _ in parts}
    cpu = {name: Timing() for name, _ in parts}
    first: dict[str, float] = {}
    found: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, components in parts:
            started, started_cpu = time.perf_counter(), time.process_time()
            result = score_items(items, components, resamples=args.resamples, seed=args.seed)
            # CPU time as well: on a shared machine the wall clock includes waiting.
            wall[name].add(time.perf_counter() - started)
            cpu[name].add(time.process_time() - started_cpu)
            first.setdefault(name, wall[name].seconds[0])
            if result.errors:
                raise SystemExit(f"{name}: {result.errors[0].message}")
            found[name] = len(result.issues) if components.detectors else len(result.metrics[0].sample_ids)

    print(f"{'component':<15} {'wall s':>8} {'cpu s':>8} {'first s':>8} {'items/s':>9} {'load':>5}")
    rows = []
    for name, _ in parts:
        if name == "all together":
            separate = sum(wall[n].median for n, _ in parts if n != "all together")
            print(f"{'sum of parts':<15} {separate:8.2f}")
        rate = len(items) / wall[name].median
        print(f"{name:<15} {wall[name].median:8.2f} {cpu[name].median:8.2f} {first[name]:8.2f} {rate:9.0f} "
              f"{wall[name].load:5.2f}")
        rows.append({
            "component": name, "wall_s": wall[name].seconds, "cpu_s": cpu[name].seconds,
            "median_wall_s": wall[name].median, "median_cpu_s": cpu[name].median, "first_s": first[name],
            "loads": wall[name].loads, "items_per_s": rate,
        })
    write_json(args.json, {"machine": info, "items": len(items), "resamples": args.resamples, "rows": rows})


if __name__ == "__main__":
    main()
