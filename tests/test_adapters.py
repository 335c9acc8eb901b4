"""Several adapters on one base: `harness eval SUITE --model base --adapter a --adapter b`."""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb
import pytest
import torch
from click.testing import CliRunner

from harness.cli import main
from harness.components.plugin_manager import load_plugins
from harness.score.evaluate import evaluate_adapters, load_backend
from harness.suite.load import load_suite
from harness.types import GenerationConfig, ModelSpec

evaluate_module = importlib.import_module("harness.score.evaluate")  # the package exports a function of that name

pytestmark = pytest.mark.slow

ECHO = Path(__file__).parent / "data" / "echo_suite"
PROMPTS = ["### Instruction:\nRepeat.\n\n### Input:\nhello\n\n### Response:\n", "Hello"]


def tiny_adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (not zero) weights, so that its outputs differ from the base's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness import quiet_peft_version_skew

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with quiet_peft_version_skew():  # peft reads a property transformers 5 deprecated
        get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [tiny_adapter(tiny_model_dir, root / name, seed) for seed, name in enumerate(("a", "b"))]


def test_switching_adapters_gives_what_each_adapter_gives_alone(tiny_model_dir, adapters) -> None:
    registry = load_plugins(autoload=False).registry
    config = GenerationConfig(max_new_tokens=8)
    alone = [
        [c.text for c in load_backend(ModelSpec(str(tiny_model_dir), adapter=str(a)), registry).generate(PROMPTS, config)]
        for a in adapters
    ]
    assert alone[0] != alone[1]
    b = load_backend(ModelSpec(str(tiny_model_dir), adapter=str(adapters[0])), registry)
    first = [c.text for c in b.generate(PROMPTS, config)]
    hash_a = b.checkpoint_hash
    b.switch_adapter(str(adapters[1]))
    second = [c.text for c in b.generate(PROMPTS, config)]
    assert b.checkpoint_hash != hash_a and b.spec.adapter == str(adapters[1])
    b.switch_adapter(str(adapters[0]))  # back again: peft kept it, nothing is loaded twice
    again = [c.text for c in b.generate(PROMPTS, config)]
    assert [first, second] == alone and again == first
    assert len(b.model.peft_config) == 2 and b.checkpoint_hash == hash_a


def test_one_run_per_adapter_on_a_base_loaded_once(
    tiny_model_dir, adapters, harness_store, monkeypatch
) -> None:
    plugins = load_plugins(autoload=False)
    loads: list[ModelSpec] = []
    real = evaluate_module.load_backend
    monkeypatch.setattr(evaluate_module, "load_backend", lambda spec, registry: loads.append(spec) or real(spec, registry))
    suite = load_suite(ECHO)
    summaries = evaluate_adapters(
        suite, ModelSpec(str(tiny_model_dir)), [str(a) for a in adapters], harness_store, plugins
    )
    assert len(loads) == 1
    assert [s.status for s in summaries] == ["completed", "completed"]
    assert summaries[0].run_id != summaries[1].run_id
    assert [s.generated for s in summaries] == [len(suite.samples)] * 2  # two checkpoints, no shared cache


def test_cli_evaluates_each_adapter_and_checks_them_all_first(tiny_model_dir, adapters, tmp_path) -> None:
    store = tmp_path / "store.duckdb"
    args = ["--store", str(store), "eval", str(ECHO), "--model", str(tiny_model_dir), "--no-report",
            "--max-new-tokens", "4"]
    bad = CliRunner().invoke(main, [*args, "--adapter", str(adapters[0]), "--adapter", str(tmp_path / "missing")])
    assert bad.exit_code == 2, bad.output
    assert "missing" in bad.output and "Traceback" not in bad.output
    assert not store.exists() or duckdb.connect(str(store)).execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    out = CliRunner().invoke(main, [*args, "--adapter", str(adapters[0]), "--adapter", str(adapters[1])])
    assert out.exit_code == 0, out.output
    assert f"({adapters[0]})" in out.output and f"({adapters[1]})" in out.output
    con = duckdb.connect(str(store), read_only=True)
    hashes = [row[0] for row in con.execute("SELECT adapter_hash FROM runs ORDER BY run_id").fetchall()]
    assert len(hashes) == 2 and len(set(hashes)) == 2 and None not in hashes
