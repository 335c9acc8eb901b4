"""--train-seeds with a real trainer: the tiny Llama, LoRA, the hf backend. Two
adapters per iteration, trained with different seeds, evaluated, and decided on together."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.components.plugin_manager import load_plugins
from harness.loop.config import LoopConfig
from harness.loop.run import run_loop
from harness.store import Store
from harness.suite.load import load_suite


def _suite(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    words = ["apple", "river", "stone", "cloud", "bread", "chair", "glass", "paper", "grass", "flame", "storm", "coast"]
    with open(root / "eval.jsonl", "w") as f:
        for i, w in enumerate(words):
            f.write(json.dumps({"id": w, "input": w, "reference": f"a common {w}", "group": f"g{i // 2}"}) + "\n")
    with open(root / "pool.jsonl", "w") as f:
        for i in range(16):
            f.write(json.dumps({"instruction": "Define the word.", "input": f"word{i}", "output": f"a common word{i}"}) + "\n")
    (root / "suite.yaml").write_text(
        "name: tiny\nversion: 1\ndata: eval.jsonl\npool: pool.jsonl\ninstruction: Define the word.\n"
        "generation: {max_new_tokens: 6}\nmetrics:\n  - name: chrf\n    sample_threshold: 90\n"
    )
    return root


def test_two_training_seeds_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = LoopConfig(
        suite=str(_suite(tmp_path / "suite")), model=str(tiny_model_dir), backend="hf", guard=None,
        iterations=1, budget=4, featurizer="tfidf", clusterer_args={"min_cluster_size": 2},
        trainer="lora", trainer_args={"max_steps": 2, "learning_rate": 2e-2, "validation_fraction": 0.0},
        train_seeds=2, resamples=200,
    )
    started = time.perf_counter()
    with Store.writer(tmp_path / "store.duckdb") as store:
        result = run_loop(config, store, load_plugins(autoload=False), output_dir=tmp_path / "out")
        trainings = store.query("SELECT args, output_checkpoint_hash, status FROM training_runs ORDER BY training_id")
        row = store.query("SELECT comparison, checkpoint FROM iterations WHERE iteration = 1")[0]
    print(f"loop with 2 training seeds: {time.perf_counter() - started:.1f} s")
    assert [json.loads(t["args"])["seed"] for t in trainings] == [0, 1]
    assert all(t["status"] == "completed" for t in trainings)
    assert trainings[0]["output_checkpoint_hash"] != trainings[1]["output_checkpoint_hash"]
    record = json.loads(row["comparison"])
    assert record["decision"]["train_seeds"] == 2
    runs = [r["eval_run_id"] for r in record["decision"]["seed_runs"]]
    assert len(set(runs)) == 2 and all(runs)
    chrf = record["metrics"][0]
    # Decided on the held-out half (the harness splits a suite without declared splits),
    # whose paraphrase groups are resampled whole.
    held_out = load_suite(config.suite).split("test")
    groups = len({s.group for s in held_out.samples})
    assert chrf["seeds"] == 2 and chrf["resampled"] == f"{groups} clusters (by group)" and groups >= 2
    assert result.iterations[-1].decision in ("continue", "no_gain", "underpowered", "rollback")
    assert (tmp_path / "out" / "seed-1" / "iteration-1").is_dir()
