"""Training as several processes (DDP over gloo, on CPU) through `harness train`.

One launch of `torchrun --standalone --nproc_per_node 2 -m harness train` on the tiny
model is compared with one process training the same global batch: with gradient
accumulation (the same micro-batches, so the training and the validation curves must
agree) and with one batch twice as large (the training curve must agree).

Tolerance: relative 1e-5 on every loss. Not exact in general because the sums are
taken in another order: DDP adds the processes' gradients in its all-reduce while one
process adds its micro-batches' gradients itself, and a batch of 2B rows goes through
matrix products of another shape than two batches of B. Adam divides each gradient by
its own running size, so the last-bit differences do not shrink over steps. Measured
here: the 2-process and accumulation runs agree to the last bit (two summands add the
same either way); the 2B-row run differs by about 1e-7 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from harness.cli.main import main
from harness.cli.train_commands import _trainer_args
from harness.errors import ConfigError
from harness.generate.checkpoints import content_hash
from harness.plugins.backends.hf import HFBackend, HFOptions
from harness.plugins.trainers.lora import LoraArgs, LoraTrainer
from harness.suite.prompts import PromptConfig
from harness.train import _accelerator_available, check_launch, prepare
from harness.types import GenerationConfig, ModelSpec, TrainingExample

pytestmark = pytest.mark.slow

WORDS = ["apple", "river", "stone", "cloud", "bread", "lamp", "wheel", "glass"]
ROWS = [
    {"instruction": "Define the word.", "input": w, "output": f"zebra stripes {w}" + " zebra" * (i % 4)}
    for i, w in enumerate(WORDS * 4)
]
# Four optimizer steps of two packed 64-token rows; validation at steps 2 and 4, and the
# best checkpoint restored at the end (every process reads it before the main one
# removes it). No dropout and no warm-up: dropout masks are drawn per process, so they
# differ from one process's draws by design.
ARGS = [
    "max_steps=4",
    "max_length=64",
    "learning_rate=1e-2",
    "warmup_ratio=0",
    "dropout=0",
    "validation_fraction=0.25",
    "save_steps=2",
    "threads=1",
]
TOLERANCE = 1e-5


def harness_train(store: Path, rows: Path, tiny: Path, output: Path, *extra: str) -> None:
    """`harness train` in this process."""
    trainer_args = [part for arg in [*ARGS, *extra] for part in ("-t", arg)]
    result = CliRunner().invoke(
        main,
        ["--store", str(store), "train", str(rows), "--model", str(tiny), "--output", str(output), *trainer_args],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)


def curves(store: Path) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """training_id -> split -> [(step, loss)]."""
    found: dict[int, dict[str, list[tuple[int, float]]]] = {}
    with duckdb.connect(str(store), read_only=True) as con:
        for training_id, split, step, loss in con.execute(
            "SELECT training_id, split, step, loss FROM training_curves ORDER BY training_id, split, step"
        ).fetchall():
            found.setdefault(training_id, {}).setdefault(split, []).append((step, loss))
    return found


def training_runs(store: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(store), read_only=True) as con:
        cursor = con.execute("SELECT * FROM training_runs ORDER BY training_id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def assert_same_curve(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [step for step, _ in got] == [step for step, _ in expected]
    for (step, loss), (_, want) in zip(got, expected):
        assert loss == pytest.approx(want, rel=TOLERANCE), f"step {step}: {loss} != {want}"


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_two_processes_train_like_one_with_the_same_global_batch(
    tiny_model_dir: Path, rows_file: Path, tmp_path: Path
) -> None:
    # One process: batch 1 with 2 accumulation steps, and batch 2.
    single = tmp_path / "single.duckdb"
    harness_train(single, rows_file, tiny_model_dir, tmp_path / "accumulated", "batch_size=1", "gradient_accumulation_steps=2")
    harness_train(single, rows_file, tiny_model_dir, tmp_path / "doubled", "batch_size=2")

    # Two processes of batch 1, into a store of their own.
    launched = tmp_path / "launched.duckdb"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "harness", "--store", str(launched), "train", str(rows_file),
        "--model", str(tiny_model_dir), "--output", str(tmp_path / "launched"),
        *[part for arg in [*ARGS, "batch_size=1"] for part in ("-t", arg)],
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    accumulated, doubled = curves(single)[1], curves(single)[2]
    (only,) = training_runs(launched)  # the main process alone recorded it
    two = curves(launched)[only["training_id"]]
    assert len(two["train"]) == 4 and len(two["validation"]) == 2
    assert_same_curve(two["train"], accumulated["train"])
    assert_same_curve(two["validation"], accumulated["validation"])
    assert_same_curve(two["train"], doubled["train"])
    # What was recorded is the whole run's, not one process's share.
    one = training_runs(single)[0]
    assert only["status"] == "completed" and only["steps"] == 4
    assert (only["tokens_trained"], only["response_tokens"]) == (one["tokens_trained"], one["response_tokens"])
    assert only["manifest_hash"] == one["manifest_hash"]
    assert only["base_checkpoint_hash"] == one["base_checkpoint_hash"]
    details = json.loads(only["details"])
    assert (details["processes"], details["parallelism"], details["global_batch_rows"]) == (2, "MULTI_CPU", 2)
    assert json.loads(one["details"])["global_batch_rows"] == 2
    with duckdb.connect(str(launched), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM datasets").fetchone() == (1,)
    assert "error" not in done.stderr.lower()

    # The saved adapter: the weights the single process reached, and it loads on the base.
    out = Path(json.loads(only["output_checkpoint"])["adapter"])
    assert out == tmp_path / "launched" and not list(out.glob("checkpoint-*"))
    got = load_file(out / "adapter_model.safetensors")
    want = load_file(tmp_path / "accumulated" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-6) for k in got)
    assert content_hash(out) == only["output_checkpoint_hash"]
    backend = HFBackend(ModelSpec(str(tiny_model_dir), str(out)), HFOptions(batch_size=2))
    try:
        texts = backend.generate(
            ["### Instruction:\nDefine the word.\n\n### Input:\napple\n\n### Response:\n"],
            GenerationConfig(max_new_tokens=4),
        )
    finally:
        backend.close()
    assert texts and texts[0].text


# ---------------------------------------------------------------------------
# Without a launch: which rows each process takes, and the global batch
# ---------------------------------------------------------------------------


def _step_rows(sampler: Any, dataset: Any, batch: int, processes: int, seed: int) -> list[set[int]]:
    """The rows of each optimizer step (of one accumulation step each) when `processes`
    processes take batches of `batch` rows, as accelerate deals them out."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    shards = [
        list(
            prepare_data_loader(
                DataLoader(dataset, batch_size=batch, sampler=sampler),
                num_processes=processes,
                process_index=rank,
                put_on_device=False,
                use_seedable_sampler=True,
                data_seed=seed,
            ).batch_sampler
        )
        for rank in range(processes)
    ]
    return [set().union(*(shard[step] for shard in shards)) for step in range(len(shards[0]))]


@pytest.mark.parametrize("batching", ["packed", "length_grouped", "padded"])
def test_each_step_takes_the_same_rows_on_one_process_or_two(
    batching: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of batch 2 take, step by step, the rows one process of batch 4 takes.
    Under transformers' own length grouping (batches of one process, the global random
    state) this fails for length_grouped."""
    examples = [TrainingExample(r["instruction"], r["input"], r["output"]) for r in ROWS]
    examples += [TrainingExample("Say it.", f"w{i}", "x " * (i % 9 + 1)) for i in range(24)]

    def trainer(batch: int) -> Any:
        args = LoraArgs(batching=batching, batch_size=batch, max_length=64, validation_fraction=0, seed=3)
        spec = ModelSpec(str(tiny_model_dir))
        return prepare(LoraTrainer(), spec, examples, [], tmp_path / str(batch), args, PromptConfig()).trainer

    one = trainer(4)
    dataset = one.train_dataset
    expected = _step_rows(one._get_train_sampler(), dataset, 4, 1, seed=3)
    two = trainer(2)
    monkeypatch.setattr(type(two.accelerator), "num_processes", property(lambda self: 2))
    got = _step_rows(two._get_train_sampler(), dataset, 2, 2, seed=3)
    assert len(got) == len(expected) > 2
    full_steps = len(dataset) // 4
    assert got[:full_steps] == expected[:full_steps]
    # A short last step: every process still takes a full batch, topped up from the start.
    assert expected[-1] <= got[-1]
    assert len(set().union(*expected)) == len(dataset)  # one epoch, every row once


def test_global_batch_sets_the_accumulation_steps() -> None:
    lora = LoraTrainer()
    assert _trainer_args(lora, {"batch_size": 4}, 32, processes=2).gradient_accumulation_steps == 4
    assert _trainer_args(lora, {"batch_size": 4}, 32, processes=8).gradient_accumulation_steps == 1
    assert _trainer_args(lora, {}, None, processes=2).gradient_accumulation_steps == 1
    with pytest.raises(ConfigError, match="not a multiple of batch_size"):
        _trainer_args(lora, {"batch_size": 3}, 32, processes=2)
    with pytest.raises(ConfigError, match="not both"):
        _trainer_args(lora, {"gradient_accumulation_steps": 2}, 32, processes=1)


def test_an_fsdp_config_is_refused_on_cpu_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    if _accelerator_available():
        pytest.skip("FSDP runs on this machine's accelerator")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP"):
        check_launch()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    check_launch()
