"""A checkpoint that cannot load is refused in one line naming the file, before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness.cli.main import main
from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError
from harness.generate.checkpoints import check_adapter_dir, check_model_dir
from harness.score.evaluate import evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.types import ModelSpec

pytestmark = pytest.mark.slow

ECHO_SUITE = Path(__file__).parent / "data" / "echo_suite"


def _copy_model(tiny: Path, target: Path) -> Path:
    shutil.copytree(tiny, target)
    return target


def _make_adapter(base: Path, target: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness import quiet_peft_version_skew

    model = AutoModelForCausalLM.from_pretrained(base)
    with quiet_peft_version_skew():  # peft reads a property transformers 5 deprecated
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
        peft_model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "lora")


@pytest.fixture(scope="module")
def narrow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different base: the same architecture, half as wide."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )
    target = tmp_path_factory.mktemp("narrow") / "model"
    LlamaForCausalLM(config).save_pretrained(target)
    return target


def test_a_good_checkpoint_and_adapter_pass(tiny_model_dir: Path, adapter: Path) -> None:
    check_model_dir(tiny_model_dir)
    check_adapter_dir(adapter, tiny_model_dir)


def test_truncated_and_garbage_weights_name_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "truncated")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=f"^{weights} is not a readable safetensors file.*truncated or corrupt"):
        check_model_dir(model)
    weights.write_bytes(b"not a tensor file at all" * 4)
    with pytest.raises(ConfigError, match="is not a readable safetensors file"):
        check_model_dir(model)


def test_a_model_that_needs_its_own_code_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "custom")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="my_custom_lm", auto_map={"AutoModelForCausalLM": "modeling.MyLM"})
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="config.json: model type 'my_custom_lm' needs the code.*trust_remote_code=true"):
        check_model_dir(model)
    (model / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        check_model_dir(model)


def test_adapters_follow_the_models_pickle_rule(tiny_model_dir: Path, adapter: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled-lora"
    pickled.mkdir()
    shutil.copy(adapter / "adapter_config.json", pickled / "adapter_config.json")
    torch.save({"x": torch.zeros(1)}, pickled / "adapter_model.bin")
    with pytest.raises(ConfigError, match="no .safetensors weights; pickle weights.*Convert the adapter.*allow_pickle=true"):
        check_adapter_dir(pickled, tiny_model_dir)
    check_adapter_dir(pickled, tiny_model_dir, allow_pickle=True)  # the user's explicit trust


def test_an_adapter_for_another_base_is_refused(narrow_model: Path, adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="adapter_model.safetensors was trained for another base model.*--model"):
        check_adapter_dir(adapter, narrow_model)
    broken = shutil.copytree(adapter, tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 12)
    with pytest.raises(ConfigError, match="adapter_model.safetensors is not a readable safetensors file"):
        check_adapter_dir(broken, narrow_model)


def test_weights_that_do_not_fit_their_config_are_refused(
    tiny_model_dir: Path, narrow_model: Path, tmp_path: Path
) -> None:
    """Headers readable, but the tensors are another model's: refused before loading,
    naming the file and the tensor (transformers would fail only inside the run)."""
    model = _copy_model(tiny_model_dir, tmp_path / "mixed")
    shutil.copy(narrow_model / "model.safetensors", model / "model.safetensors")
    with pytest.raises(ConfigError, match=r"model.safetensors: tensor '.*' has shape \[.*config.json makes it"):
        check_model_dir(model)
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store:
        store.scalar("SELECT 1")
        with pytest.raises(ConfigError, match="the weights and the config are of different models"):
            evaluate(load_suite(ECHO_SUITE), ModelSpec(str(model)), store, load_plugins(autoload=False))
        assert store.scalar("SELECT count(*) FROM runs") == 0


def test_a_bad_checkpoint_leaves_no_run_row(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "truncated")
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:-100])
    path = tmp_path / "s.duckdb"
    with Store.writer(path) as store:
        store.scalar("SELECT 1")
        with pytest.raises(ConfigError, match="not a readable safetensors file"):
            evaluate(load_suite(ECHO_SUITE), ModelSpec(str(model)), store, load_plugins(autoload=False))
        assert store.scalar("SELECT count(*) FROM runs") == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "x", "--backend", "nope"], "unknown backend 'nope'"),
        (["--model", "/no/such/model"], "does not exist"),
    ],
)
def test_a_refused_command_leaves_no_store(tmp_path: Path, args: list[str], message: str) -> None:
    store = tmp_path / "fresh" / "s.duckdb"
    result = CliRunner().invoke(
        main, ["--store", str(store), "--no-autoload", "eval", str(ECHO_SUITE), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not store.exists() and not store.parent.exists()


def test_the_cli_names_a_truncated_model_in_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "truncated")
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:-100])
    store = tmp_path / "s.duckdb"
    result = CliRunner().invoke(
        main, ["--store", str(store), "--no-autoload", "eval", str(ECHO_SUITE), "--model", str(model)]
    )
    assert result.exit_code == 2, result.output
    assert "model.safetensors is not a readable safetensors file" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not store.exists()
