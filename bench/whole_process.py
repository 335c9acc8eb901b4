"""`harness eval` against lm-evaluation-harness's `lm_eval run`, each as a whole process
(start-up, model load, generation, scoring, writing results), on the same prompts.

    python bench/whole_process.py                                   # dictionary test split, 200 prompts
    python bench/whole_process.py --lm-eval-batch-sizes 32,64,128,200 --repeats 2
    python bench/whole_process.py --prompts 50 --lm-eval-batch-sizes 50   # a quick look

Both score the dictionary suite's held-out `test` split with the default model
(SmolLM2-135M-Instruct, float32, CPU), greedily, at most 32 new tokens, stopping at a
newline or EOS — the suite's own settings. lm-eval gets the harness's rendered prompt
texts as a custom `generate_until` task (a JSONL file and a task YAML written to a
temporary directory, loaded with `--include_path`) scoring chrF and BLEU, and the
model's directory (`--model hf`, dtype float32, `--device cpu`), at each batch size
given; the harness runs `harness eval dictionary --split test --model default` with
its defaults (`batch_size=auto`), into a fresh store so no generation comes from its
cache, and scores chrF, BLEU and its four detectors. Each process is timed from launch
to exit, in turns (each repeat runs every configuration once); the figure is the median
of the repeats, with the 1-minute load average beside it. The outputs are compared
text for text (lm-eval's logged samples against the store's completions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import describe, load_average, machine, write_json

HERE = Path(__file__).resolve().parent
TASK = "harness_dictionary_test"


def prompts_and_references(n: int | None) -> list[dict[str, str]]:
    from harness.suite.load import load_suite
    from harness.suite.prompts import instruction_prompt

    split = load_suite("dictionary").split("test")
    samples = split.samples[:n] if n else split.samples
    return [{"id": s.id, "prompt": instruction_prompt(s.instruction, s.input), "reference": s.references[0]}
            for s in samples]


def write_task(directory: Path, rows: list[dict[str, str]], max_new_tokens: int) -> None:
    data = directory / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Block style, and the prompt passed through a Jinja expression: no chat template, no
    # few-shot, no description, so the model sees exactly the harness's prompt text.
    (directory / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{reference}}"\n'
        "target_delimiter: \"\"\n"
        "generation_kwargs:\n"
        '  until: ["\\n"]\n'
        f"  max_gen_toks: {max_new_tokens}\n"
        "  do_sample: false\n"
        "metric_list:\n"
        "  - metric: chrf\n    aggregation: chrf\n    higher_is_better: true\n"
        "  - metric: bleu\n    aggregation: bleu\n    higher_is_better: true\n"
    )


def run_timed(command: list[str], env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    return seconds


def harness_outputs(store: Path) -> dict[str, str]:
    from harness.store import Store
    from harness.store.queries import Queries

    with Store.reader(store) as s:
        queries = Queries(s)
        run_id = queries.resolve("latest")
        table = queries.samples(run_id).select(["sample_id", "output"]).to_pylist()
        return {r["sample_id"]: r["output"] or "" for r in table}


def lm_eval_outputs(output_dir: Path) -> dict[str, str]:
    found = sorted(output_dir.rglob(f"samples_{TASK}_*.jsonl"))
    if not found:
        raise SystemExit(f"lm-eval wrote no samples under {output_dir}")
    out = {}
    for line in found[-1].read_text().splitlines():
        record = json.loads(line)
        out[record["doc"]["id"]] = record["filtered_resps"][0]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--prompts", type=int, help="first N samples of the test split (default: all 200)")
    parser.add_argument("--lm-eval-batch-sizes", default="32,64,128,200")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="the suite's own limit")
    parser.add_argument("--json", type=Path, default=Path(".harness/bench/whole_process.json"))
    parser.add_argument("--glibc-allocator", action="store_true",
                        help="also time harness eval with HARNESS_KEEP_FREED_MEMORY=0 (the C library's "
                        "allocator defaults, as lm-eval runs)")
    args = parser.parse_args(argv)

    from harness.generate.checkpoints import default_model_dir

    model_dir = default_model_dir()
    rows = prompts_and_references(args.prompts)
    batch_sizes = [int(b) for b in args.lm_eval_batch_sizes.split(",") if b]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    bin_dir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="whole_process-"))
    write_task(work, rows, args.max_new_tokens)
    print(describe(machine()), flush=True)
    print(f"{len(rows)} prompts of dictionary/test, model {model_dir}\n", flush=True)

    configs: dict[str, dict[str, Any]] = {"harness eval (batch auto)": {"kind": "harness"}}
    if args.glibc_allocator:
        configs["harness eval (batch auto), glibc allocator"] = {"kind": "harness", "batch": "glibc",
                                                                 "env": {"HARNESS_KEEP_FREED_MEMORY": "0"}}
    for b in batch_sizes:
        configs[f"lm_eval run --batch_size {b}"] = {"kind": "lm_eval", "batch": b}
    for config in configs.values():
        config.update(seconds=[], loads=[])
    outputs: dict[str, dict[str, str]] = {}
    try:
        for repeat in range(args.repeats):
            for name, config in configs.items():
                target = work / f"{config['kind']}-{config.get('batch', 'auto')}-{repeat}"
                target.mkdir()
                if config["kind"] == "harness":
                    store = target / "store.duckdb"
                    command = [str(bin_dir / "harness"), "--store", str(store), "eval", "dictionary",
                               "--split", "test", "--model", "default"]
                    if args.prompts:
                        command += ["--limit", str(args.prompts)]
                else:
                    command = [str(bin_dir / "lm_eval"), "run", "--model", "hf", "--model_args",
                               f"pretrained={model_dir},dtype=float32", "--device", "cpu", "--batch_size",
                               str(config["batch"]), "--tasks", TASK, "--include_path", str(work),
                               "--output_path", str(target / "out"), "--log_samples"]
                load = load_average()
                seconds = run_timed(command, {**env, **config.get("env", {})}, target / "log.txt")
                config["seconds"].append(seconds)
                config["loads"].append(load)
                print(f"  {name}: {seconds:.2f} s (load {load:.1f})", flush=True)
                if repeat == 0:
                    outputs[name] = (harness_outputs(store) if config["kind"] == "harness"
                                     else lm_eval_outputs(target / "out"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference = outputs["harness eval (batch auto)"]
    harness_s = statistics.median(configs["harness eval (batch auto)"]["seconds"])
    print("\n| process | s | load | harness speed-up | outputs as the harness's |")
    print("|---|---:|---:|---:|---|")
    results = []
    for name, config in configs.items():
        seconds, load = statistics.median(config["seconds"]), statistics.median(config["loads"])
        theirs = outputs[name]
        differ = [i for i in reference if theirs.get(i, "").strip() != reference[i].strip()]
        same = "yes" if not differ else f"no: {len(differ)} of {len(reference)} differ"
        print(f"| {name} | {seconds:.2f} | {load:.1f} | {seconds / harness_s:.2f}× | {same} |")
        results.append({"process": name, "seconds": seconds, "load": load, "all_seconds": config["seconds"],
                        "differ": differ})
    best = min((r for r in results if r["process"].startswith("lm_eval")), key=lambda r: r["seconds"])
    print(f"\nharness against lm-eval at its best batch ({best['process']}): {best['seconds'] / harness_s:.2f}×")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(str(args.json), {"machine": machine(), "prompts": len(rows), "results": results})
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
