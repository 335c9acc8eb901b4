"""Does data aimed at the errors beat the same amount of data that is not, on held-out samples?

Runs the loop once per arm — targeted selection and the equal-budget controls `random`
(rows drawn from the whole pool) and `random_on_task` (rows drawn among the pool rows of
the suite's own task, without looking at the failures), and on request `augment`
(rule-based variants of the rows nearest the clusters) and `augment_random_on_task`
(variants of random on-task rows: untargeted augmentation) and `targeted_explore` (half
of each cluster's rows aimed at it, half drawn among the task's rows), and with
`--seed-rows N` (every arm then starts from a seed dataset of N on-task pool rows, drawn
uniformly) `no_new_data` (retrain on the seed alone) — with the same budget, seeds,
trainer and number of iterations (`fixed_iterations`: no arm stops early), on each
scenario:

    numbers-broad   the numbers task with the broad pool (42,640 rows, 3.5 % on-task)
    numbers         the numbers task with its own in-distribution pool

Both scenarios use the numbers suite's own splits: failures are mined on `dev` (150
rows) and every figure is measured on `test` (150 rows), which no selection step sees
(the loop decides on it too). The guard suite (`general`) is evaluated by the loop at
every iteration (`--guard-limit` samples of it).

Prints, per scenario: the held-out main metric per arm and iteration with its 95 % CI,
the guard's main metric and its change from iteration 0, the new rows that are on-task
and the arm's wall time; then the paired differences arm − control (for targeted,
targeted_explore and augment against every other arm run) on the held-out
split at each iteration (paired bootstrap: difference, 95 % CI, p), for the main metric
and the guard.

    python bench/loop_efficacy.py                                # both scenarios, 2 iterations
    python bench/loop_efficacy.py --scenarios numbers-broad --arms targeted random_on_task
    python bench/loop_efficacy.py --scenarios numbers-broad --seed-rows 100 --iterations 1 \
        --arms targeted random_on_task no_new_data      # does new data beat retraining on the seed?
    python bench/loop_efficacy.py --limit 20 --guard-limit 20 --budget 16 --iterations 1 -t max_steps=2   # smoke run

Results also go to --json (default: beside the store).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.components.plugin_manager import load_plugins
from harness.data.curation import normalize
from harness.data.manifests import load_manifest
from harness.loop.config import LoopConfig
from harness.loop.run import run_loop
from harness.plugins.data_sources._retrieval import suite_task
from harness.score.comparison import compare_runs
from harness.score.evaluate import EvalOptions, evaluate, load_backend
from harness.store import Store
from harness.store.queries import Queries
from harness.suite.config import TrainRowModel
from harness.suite.files import read_jsonl
from harness.suite.load import Suite, load_suite
from harness.types import ModelSpec

SCENARIOS = ("numbers-broad", "numbers")
ARMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # arm: (data source, selection, source arguments)
    "targeted": ("pool", "targeted", {}),
    "random": ("pool", "random", {}),
    "random_on_task": ("pool", "random_on_task", {}),
    # Half of each cluster's rows drawn among the task's rows, half aimed at the cluster.
    "targeted_explore": ("pool", "targeted", {"explore": 0.5}),
    # Rule-based variants of the pool rows nearest the clusters, and of random on-task rows
    # (untargeted augmentation): both with the same budget.
    "augment": ("augment", "targeted", {}),
    "augment_random_on_task": ("augment", "random_on_task", {}),
    # No new data: retrain on the seed dataset alone (needs --seed-rows).
    "no_new_data": ("pool", "none", {}),
}
DEFAULT_ARMS = ("targeted", "random", "random_on_task")
TREATMENTS = ("targeted", "targeted_explore", "augment")
"""Arms whose paired differences against every other arm run are printed."""


def arm_of(config: dict[str, Any]) -> str:
    """The arm a stored loop config ran."""
    wanted = (config.get("source", "pool"), config["selection"], config.get("source_args") or {})
    return next(arm for arm, spec in ARMS.items() if spec == wanted)
HELD_OUT = "numbers"
"""The suite whose `test` split is held out in both scenarios (and whose task is on-task)."""


def held_out_split(limit: int | None = None) -> Suite:
    suite = load_suite(HELD_OUT)
    return suite.split(suite.config.heldout_split).limited(limit)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [row.model_dump(exclude_defaults=True) for _, row in read_jsonl(path, TrainRowModel)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="held-out rows (default: all 150)")
    parser.add_argument("--guard-limit", type=int, help="guard rows (default: all 105)")
    parser.add_argument("--seed-rows", type=int, default=0,
                        help="every arm trains on a seed dataset of N on-task pool rows (drawn uniformly, "
                        "written beside the store) plus what it adds; needed by no_new_data")
    parser.add_argument("-t", "--trainer-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--store", type=Path, default=Path(".harness/bench/loop_efficacy.duckdb"))
    parser.add_argument("--json", type=Path, help="where results go (default: beside the store)")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="STORE",
                        help="run nothing: measure the loops of these stores (arms run in parallel "
                        "processes) on the held-out split in --store, and print the table")
    args = parser.parse_args(argv)
    if "no_new_data" in args.arms and not args.seed_rows and not args.combine:
        parser.error("the no_new_data arm retrains on a seed dataset: give --seed-rows N")
    return args


def trainer_args(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------------------
# Running the arms
# ---------------------------------------------------------------------------


def write_seed_file(pool: list[dict[str, Any]], n: int, seed: int, path: Path) -> Path:
    """N on-task pool rows drawn uniformly (seeded): the task data a user already has."""
    task = suite_task(load_suite(HELD_OUT))
    on_task = [r for r in pool if normalize(r.get("instruction", "")) in task]
    if n > len(on_task):
        raise SystemExit(f"--seed-rows {n}: the pool has only {len(on_task)} on-task rows")
    chosen = random.Random(seed).sample(on_task, n)
    path.write_text("".join(json.dumps({k: r[k] for k in ("instruction", "input", "output") if k in r}) + "\n"
                            for r in chosen))
    return path


def run_arm(
    store: Store, plugins: Any, suite_path: Path, held_out: Suite, arm: str, args: argparse.Namespace,
    seed_file: Path | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    source, selection, source_args = ARMS[arm]
    config = LoopConfig(
        suite=str(suite_path), model=args.model, iterations=args.iterations, budget=args.budget,
        source=source, selection=selection, source_args=source_args, seed=args.seed, guard="general", guard_limit=args.guard_limit,
        trainer_args=trainer_args(args.trainer_arg), fixed_iterations=True,
        seed_data=str(seed_file) if seed_file else None,
    )
    result = run_loop(config, store, plugins)
    iterations = loop_iterations(store, result.loop_id)
    wall = time.perf_counter() - started
    return {"arm": arm, "loop": result.loop_id, "iterations": measure(store, plugins, iterations, held_out, args),
            "wall_s": round(wall, 1)}


def loop_iterations(store: Store, loop_id: int) -> list[dict[str, Any]]:
    """A loop's iterations: checkpoint, decision, and the new rows (and how many on-task)."""
    task = suite_task(load_suite(HELD_OUT))
    out = []
    seen: set[str | None] = set()
    for row in store.query(
        "SELECT * FROM iterations WHERE loop_id = ? AND step = 'decided' ORDER BY iteration", [loop_id]
    ):
        checkpoint = json.loads(row["checkpoint"]) if isinstance(row["checkpoint"], str) else row["checkpoint"]
        on_task = added = 0
        # New rows only: not a seed dataset (iteration 0), nor a dataset trained on before.
        if row["manifest_hash"] and row["iteration"] and row["manifest_hash"] not in seen:
            manifest = load_manifest(store, row["manifest_hash"])
            added = manifest.n_added
            on_task = sum(normalize(r.instruction) in task for r in manifest.added)
        seen.add(row["manifest_hash"])
        out.append({"iteration": row["iteration"], "decision": row["decision"], "checkpoint": checkpoint,
                    "added": added, "on_task": on_task})
    return out


def measure(
    store: Store, plugins: Any, iterations: list[dict[str, Any]], held_out: Suite, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Evaluate each iteration's checkpoint on the held-out split and the guard suite in
    `store` (the loop's own guard runs are cached generations, so they cost nothing)."""
    guard = load_suite("general")
    for it in iterations:
        c = it["checkpoint"]
        spec = ModelSpec(c["path"], c.get("adapter"), c.get("backend", "hf"), dict(c.get("options") or {}))
        backend = load_backend(spec, plugins.registry)
        try:
            it["test_run"] = evaluate(held_out, backend, store, plugins, EvalOptions(seed=args.seed)).run_id
            it["guard_run"] = evaluate(
                guard, backend, store, plugins, EvalOptions(limit=args.guard_limit, seed=args.seed)
            ).run_id
        finally:
            backend.close()
    return iterations


def combine(args: argparse.Namespace) -> dict[str, Any]:
    """Arms run in other stores (`--combine`), measured in this one so that every paired
    comparison is on the same samples in one store."""
    held_out = held_out_split(args.limit)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in args.combine:
        with Store.reader(path) as other:
            for loop in other.query(
                "SELECT loop_id, suite_name, config, status FROM loops ORDER BY loop_id"
            ):
                config = json.loads(loop["config"])
                scenario = loop["suite_name"]
                if scenario in args.scenarios:
                    # An interrupted loop counts with the iterations it finished.
                    found[scenario].append({"arm": arm_of(config), "loop": f"{path}:{loop['loop_id']}",
                                            "status": loop["status"],
                                            "iterations": loop_iterations(other, loop["loop_id"]), "wall_s": None})
    for scenario, arms in found.items():  # one loop per arm: the one that got furthest
        best: dict[str, dict[str, Any]] = {}
        for arm in arms:
            if arm["arm"] in args.arms and len(arm["iterations"]) > len(best.get(arm["arm"], {}).get("iterations", [])):
                best[arm["arm"]] = arm
        found[scenario] = [best[a] for a in args.arms if a in best]
    plugins = load_plugins()
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "scenarios": {}}
    with Store.writer(args.store) as store:
        guard = load_suite("general")
        for scenario, arms in found.items():
            for arm in arms:
                measure(store, plugins, arm["iterations"], held_out, args)
            results["scenarios"][scenario] = summarise(store, plugins, arms, held_out, guard)
    return results


def main_score(queries: Queries, run_id: int, metric: str) -> dict[str, Any]:
    score = next(s for s in queries.corpus_scores(run_id) if s.metric == metric)
    return {"value": score.value, "ci": [score.ci_low, score.ci_high], "higher_is_better": score.higher_is_better}


def paired(queries: Queries, control_run: int, targeted_run: int, metric: str) -> dict[str, Any] | None:
    """targeted − control on the same samples (paired bootstrap from harness.score.comparison)."""
    found = [c for c in compare_runs(queries, control_run, targeted_run) if c.metric == metric]
    if not found or found[0].test is None:
        return None
    t = found[0].test
    return {"difference": t.difference, "ci": [t.ci_low, t.ci_high], "p": t.p_value, "n": t.n, "test": t.test}


def summarise(store: Store, plugins: Any, arms: list[dict[str, Any]], held_out: Suite, guard: Suite) -> dict[str, Any]:
    queries = Queries(store, plugins.registry)
    main, guard_main = held_out.config.main, guard.config.main
    # The guard's main metric decides; its other metrics are shown beside it.
    guard_other = next(m.name for m in guard.config.metrics if m.name != guard_main)
    for arm in arms:
        guard0 = arm["iterations"][0]["guard_run"]
        for it in arm["iterations"]:
            it["test"] = main_score(queries, it["test_run"], main)
            it["guard"] = main_score(queries, it["guard_run"], guard_main)
            it["guard_change"] = paired(queries, guard0, it["guard_run"], guard_main) if it["iteration"] else None
            it["guard_other_change"] = (
                paired(queries, guard0, it["guard_run"], guard_other) if it["iteration"] else None
            )
    by_arm = {a["arm"]: a for a in arms}
    differences = []
    treatments = [a for a in TREATMENTS if a in by_arm]
    for treatment in treatments:
        # Each pair once: a treatment against the arms that are not earlier treatments.
        earlier = treatments[: treatments.index(treatment)]
        controls = [a for a in by_arm if a != treatment and a not in earlier]
        for control in controls:
            for t_it, c_it in zip(by_arm[treatment]["iterations"][1:], by_arm[control]["iterations"][1:]):
                differences.append({
                    "arm": treatment, "control": control, "iteration": t_it["iteration"],
                    "test": paired(queries, c_it["test_run"], t_it["test_run"], main),
                    "guard": paired(queries, c_it["guard_run"], t_it["guard_run"], guard_main),
                })
    return {"main": main, "guard_main": guard_main, "guard_other": guard_other, "arms": arms,
            "differences": differences}


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


def _ci(d: dict[str, Any] | None, digits: int = 3) -> str:
    if d is None:
        return "—"
    low, high = d["ci"]
    fmt = f"{{:+.{digits}f}}"
    return f"{fmt.format(d['difference'])} [{fmt.format(low)}, {fmt.format(high)}] p={d['p']:.3f}"


def print_scenario(name: str, summary: dict[str, Any], pool_rows: int | None, pool_on_task: int | None) -> None:
    main, guard, other = summary["main"], summary["guard_main"], summary["guard_other"]
    if pool_rows and pool_on_task is not None:
        print(f"\n## {name}: pool {pool_rows:,} rows, {pool_on_task:,} on-task ({100 * pool_on_task / pool_rows:.1f} %)\n")
    else:
        print(f"\n## {name}\n")
    print(f"| arm | iteration | decision | held-out {main} [95 % CI] | guard {guard} | guard {guard} change vs it. 0 "
          f"| guard {other} change vs it. 0 | new rows on-task | wall |")
    print("|---|---:|---|---|---|---|---|---|---:|")
    for arm in summary["arms"]:
        wall = f"{arm['wall_s'] / 60:.1f} min" if arm["wall_s"] else "see log"
        for it in arm["iterations"]:
            t, g = it["test"], it["guard"]
            print(
                f"| {arm['arm']} | {it['iteration']} | {it['decision']} | {t['value']:.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}] "
                f"| {g['value']:.2f} | {_ci(it['guard_change'], 2)} | {_ci(it.get('guard_other_change'), 2)} | "
                f"{it['on_task']}/{it['added'] if it['added'] else '—'} | "
                f"{wall} |"
            )
    if summary["differences"]:
        print(f"\n| arm − control | iteration | held-out {main}: diff [95 % CI] p | guard {guard}: diff [95 % CI] p |")
        print("|---|---:|---|---|")
        for d in summary["differences"]:
            print(f"| {d.get('arm', 'targeted')} − {d['control']} | {d['iteration']} | {_ci(d['test'])} "
                  f"| {_ci(d['guard'], 2)} |")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    out = args.json or args.store.with_suffix(".json")
    if args.combine:
        combined = combine(args)
        out.write_text(json.dumps(combined, indent=1, default=str))
        for name, summary in combined["scenarios"].items():
            print_scenario(name, summary, None, None)
        print(f"\nresults: {out}")
        return 0
    plugins = load_plugins()
    held_out = held_out_split(args.limit)
    guard = load_suite("general")
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "scenarios": {}}
    with Store.writer(args.store) as store:
        for name in args.scenarios:
            scenario = load_suite(name)
            suite_path = scenario.path
            assert scenario.pool_path is not None
            pool = _rows(scenario.pool_path)
            task = suite_task(load_suite(HELD_OUT))
            pool_on_task = sum(normalize(r.get("instruction", "")) in task for r in pool)
            mining = scenario.split(scenario.config.mining_split)
            rows = mining.samples
            print(f"{name}: mining split {len(rows)} rows, held-out {len(held_out.samples)}, "
                  f"pool {len(pool):,} rows ({pool_on_task:,} on-task)", flush=True)
            seed_file = None
            if args.seed_rows:
                seed_file = write_seed_file(pool, args.seed_rows, args.seed,
                                            args.store.parent / f"seed-{name}-{args.seed_rows}.jsonl")
                print(f"{name}: every arm starts from a seed of {args.seed_rows} on-task rows ({seed_file})",
                      flush=True)
            arms = []
            for arm in args.arms:
                if arm == "random_on_task" and pool_on_task == len(pool):
                    print(f"{name}: every pool row is on-task, so random_on_task is random; skipped", flush=True)
                    continue
                print(f"{name}: arm {arm} ...", flush=True)
                arms.append(run_arm(store, plugins, suite_path, held_out, arm, args, seed_file))
                summary = summarise(store, plugins, arms, held_out, guard)
                results["scenarios"][name] = {"pool_rows": len(pool), "pool_on_task": pool_on_task,
                                              "mining_rows": len(rows), **summary}
                out.write_text(json.dumps(results, indent=1, default=str))
                print(f"{name}: arm {arm} done in {arms[-1]['wall_s'] / 60:.1f} min", flush=True)
            print_scenario(name, results["scenarios"][name], len(pool), pool_on_task)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
