"""The built-in trainers (`lora`, `ia3`, `full`) on a tiny random Llama.

Runs are a few optimizer steps long: what is checked is what the engine promises (the
loss on the response only, packing that keeps examples apart, exact resumption, the
non-finite guard, early stopping, loadable checkpoints), not that a model learns well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from trl import SFTTrainer

from harness.components.plugin_manager import load_plugins
from harness.components.registry import Registry
from harness.errors import ConfigError, TrainingError
from harness.generate.checkpoints import content_hash
from harness.plugins.backends.hf import HFBackend, HFOptions
from harness.plugins.trainers import full as full_module
from harness.plugins.trainers import ia3 as ia3_module
from harness.plugins.trainers import lora as lora_module
from harness.plugins.trainers._layers import find_projection_layers
from harness.plugins.trainers.full import FullArgs, FullTrainer
from harness.plugins.trainers.ia3 import IA3Args, IA3Trainer
from harness.plugins.trainers.lora import LoraArgs, LoraTrainer
from harness.suite.prompts import PromptConfig, instruction_prompt
from harness.train import (
    IGNORE_INDEX,
    InstructionTuner,
    TrainingOutcome,
    _plain_causal_lm,
    encode_examples,
    prepare,
    prompt_renderer,
    split_validation,
)
from harness.types import GenerationConfig, ModelSpec, TrainingExample

pytestmark = pytest.mark.slow

WORDS = ["apple", "river", "stone", "cloud", "bread", "lamp", "wheel", "glass", "horse", "paper"]
EXAMPLES = [
    TrainingExample("Define the word.", word, f"zebra stripes {word} zebra stripes")
    for word in WORDS * 2
]
VALIDATION = [
    TrainingExample("Define the word.", w, f"zebra stripes {w} zebra stripes") for w in WORDS[:4]
]
PROMPT = PromptConfig()
# Small, fast runs: a few steps of two 64-token rows, on one thread (tiny matrices gain
# nothing from more, and lose much when other processes share the cores).
QUICK: dict[str, Any] = {"batch_size": 2, "max_length": 64, "warmup_ratio": 0.0, "threads": 1}


def train(
    tuner: InstructionTuner,
    tiny: Path,
    out: Path,
    *,
    examples: list[TrainingExample] = EXAMPLES,
    validation: list[TrainingExample] | None = None,
    progress: Any = None,
    base: ModelSpec | None = None,
    **args: Any,
) -> TrainingOutcome:
    parsed = tuner.Args.model_validate({**QUICK, **args})
    return tuner.train(
        base or ModelSpec(str(tiny)),
        examples,
        validation if validation is not None else [],
        out,
        parsed,
        prompt=PROMPT,
        progress=progress,
    )


def generate(spec: ModelSpec, prompts: list[str]) -> list[str]:
    backend = HFBackend(spec, HFOptions(batch_size=4))
    try:
        return [c.text for c in backend.generate(prompts, GenerationConfig(max_new_tokens=6))]
    finally:
        backend.close()


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingOutcome:
    """One LoRA run shared by the tests that only read its result."""
    out = tmp_path_factory.mktemp("lora") / "adapter"
    return train(
        LoraTrainer(),
        tiny_model_dir,
        out,
        validation=VALIDATION,
        max_steps=6,
        save_steps=3,
        learning_rate=2e-2,
    )


# ---------------------------------------------------------------------------
# Registration and arguments
# ---------------------------------------------------------------------------


def test_trainers_register_through_the_plugin_manager() -> None:
    direct = Registry()
    for module in (lora_module, ia3_module, full_module):
        module.harness_register_trainers(direct)
    assert direct.names("trainer") == ["full", "ia3", "lora"]

    registry = load_plugins(autoload=False).registry
    assert {"lora", "ia3", "full"} <= set(registry.names("trainer"))
    lora, ia3, full = (registry.trainer(n) for n in ("lora", "ia3", "full"))
    assert isinstance(lora, LoraTrainer) and lora.Args is LoraArgs and lora.produces_adapter
    assert isinstance(ia3, IA3Trainer) and ia3.Args is IA3Args and ia3.produces_adapter
    assert isinstance(full, FullTrainer) and full.Args is FullArgs and not full.produces_adapter
    defaults = LoraArgs()
    assert (defaults.batching, defaults.rank, defaults.alpha, defaults.dropout) == (
        "packed",
        8,
        16.0,
        0.0,
    )
    assert FullArgs().learning_rate < LoraArgs().learning_rate < IA3Args().learning_rate


def test_arguments_are_validated_with_field_names() -> None:
    with pytest.raises(ValidationError, match="ranq"):
        LoraArgs.model_validate({"ranq": 4})
    with pytest.raises(ValidationError, match="multiple of eval_steps"):
        LoraArgs(save_steps=10, eval_steps=4)
    assert LoraArgs(save_steps=10, eval_steps=4, load_best_at_end=False).eval_steps == 4


# ---------------------------------------------------------------------------
# Data: the template, the labels, the split
# ---------------------------------------------------------------------------


def test_labels_cover_the_response_and_eos_only(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    render = prompt_renderer(tokenizer, PROMPT)
    example = TrainingExample("Define the word.", "apple", "A round fruit.")
    encoded = encode_examples(tokenizer, [example], render, max_length=256)
    ids, labels = encoded.input_ids[0], encoded.labels[0]
    prompt_ids = tokenizer(
        instruction_prompt("Define the word.", "apple"), add_special_tokens=False
    )["input_ids"]
    response_ids = tokenizer("A round fruit.", add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + response_ids + [tokenizer.eos_token_id]
    assert labels == [IGNORE_INDEX] * len(prompt_ids) + response_ids + [tokenizer.eos_token_id]

    # Cut at max_length: the prompt stays whole; a prompt that fills it leaves nothing to learn.
    short = encode_examples(tokenizer, [example], render, max_length=len(prompt_ids) + 1)
    assert (short.truncated, short.dropped) == (1, 0)
    assert short.labels[0][-1] == response_ids[0]
    gone = encode_examples(tokenizer, [example], render, max_length=len(prompt_ids))
    assert (gone.input_ids, gone.truncated, gone.dropped) == ([], 1, 1)


def test_padded_batches_label_neither_prompt_nor_padding(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [
        TrainingExample("Define the word.", w, f"A word{'!' * i}") for i, w in enumerate(WORDS)
    ]
    args = LoraArgs(batching="padded", batch_size=4, validation_fraction=0)
    prepared = prepare(
        LoraTrainer(), ModelSpec(str(tiny_model_dir)), examples, [], tmp_path, args, PROMPT
    )
    batch = next(iter(prepared.trainer.get_train_dataloader()))
    responses = {
        tuple(tokenizer(e.output, add_special_tokens=False)["input_ids"]) for e in examples
    }
    assert (batch["attention_mask"] == 0).any(), "rows of different lengths need padding"
    for ids, labels, mask in zip(
        batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
    ):
        assert (labels[mask == 0] == IGNORE_INDEX).all()
        labelled = labels[labels != IGNORE_INDEX].tolist()
        assert labelled[-1] == tokenizer.eos_token_id
        assert tuple(labelled[:-1]) in responses
        first = (labels != IGNORE_INDEX).nonzero()[0].item()
        assert tokenizer.decode(ids[:first]).endswith("### Response:\n")


def test_packed_rows_keep_examples_apart(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Packed and padded batches give the same validation loss: no example attends to another."""
    losses = {}
    for batching in ("packed", "padded"):
        args = LoraArgs(batching=batching, batch_size=8, max_length=64)
        prepared = prepare(
            LoraTrainer(),
            ModelSpec(str(tiny_model_dir)),
            EXAMPLES,
            VALIDATION,
            tmp_path / batching,
            args,
            PROMPT,
        )
        trainer = prepared.trainer
        losses[batching] = trainer.evaluate()["eval_loss"]
        # The loss that projects only labelled positions equals TRL's fused-head loss.
        assert _plain_causal_lm(trainer.model) is not None, "the tiny Llama takes the short path"
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        with torch.no_grad():
            ours = trainer.compute_loss(trainer.model, dict(batch))
            trl_loss = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch))
        assert ours.item() == pytest.approx(trl_loss.item(), rel=1e-5)
        if batching == "packed":
            batch = next(iter(prepared.trainer.get_train_dataloader()))
            rows, width = batch["input_ids"].shape
            assert "attention_mask" not in batch and rows > 1 and width <= 64
            starts = (batch["position_ids"] == 0) & (batch["labels"] != IGNORE_INDEX)
            assert not starts.any(), "no example's first token is predicted from the one before"
            real = int(batch["harness_real_tokens"])
            assert (batch["position_ids"] == 0).sum() > rows, "rows hold several examples"
            assert real <= rows * width
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5)


def test_validation_split_is_carved_with_the_seed() -> None:
    kept, held = split_validation(EXAMPLES, [], 0.25, seed=3)
    assert (len(kept), len(held)) == (15, 5)
    assert split_validation(EXAMPLES, [], 0.25, seed=3) == (kept, held)
    assert split_validation(EXAMPLES, [], 0.25, seed=4)[1] != held
    assert split_validation(EXAMPLES, VALIDATION, 0.25, seed=3) == (EXAMPLES, VALIDATION)
    assert split_validation(EXAMPLES, [], 0.0, seed=3) == (EXAMPLES, [])
    with pytest.raises(TrainingError, match="too few"):
        split_validation(EXAMPLES[:1], [], 0.1, seed=0)


# ---------------------------------------------------------------------------
# Which layers adapters go on
# ---------------------------------------------------------------------------


def test_projection_layers_are_found_by_inspecting_the_model(tiny_model_dir: Path) -> None:
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        OPTConfig,
        OPTForCausalLM,
    )

    llama = find_projection_layers(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert llama.patterns(llama.attention, llama.mlp, llama.mlp_output) == [
        ["k_proj", "o_proj", "q_proj", "v_proj"],
        ["down_proj", "gate_proj", "up_proj"],
        ["down_proj"],
    ]
    assert "lm_head" in llama.others

    # GPT-2: Conv1D layers, and c_proj in both attention and MLP, so the MLP output
    # projections can only be named in full.
    gpt2 = find_projection_layers(
        GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=32))
    )
    assert gpt2.patterns(gpt2.all) == [["c_attn", "c_fc", "c_proj"]]
    assert gpt2.patterns(gpt2.mlp_output) == [
        ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    ]

    # OPT: fc1/fc2 sit directly in the decoder layer, outside any MLP module.
    opt = OPTForCausalLM(
        OPTConfig(
            num_hidden_layers=1,
            hidden_size=16,
            ffn_dim=32,
            num_attention_heads=2,
            vocab_size=32,
            word_embed_proj_dim=16,
        )
    )
    found = find_projection_layers(opt)
    assert found.patterns(found.attention, found.mlp, found.mlp_output) == [
        ["k_proj", "out_proj", "q_proj", "v_proj"],
        ["fc1", "fc2"],
        ["fc2"],
    ]


# ---------------------------------------------------------------------------
# LoRA: train, save, reload through the hf backend
# ---------------------------------------------------------------------------


def test_lora_adapter_trains_saves_and_changes_greedy_outputs(
    lora_run: TrainingOutcome, tiny_model_dir: Path
) -> None:
    out = Path(lora_run.checkpoint.adapter or "")
    assert lora_run.checkpoint == ModelSpec(path=str(tiny_model_dir), adapter=str(out))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("checkpoint-*")), "intermediate checkpoints are removed after success"
    assert lora_run.checkpoint_hash == content_hash(out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 16.0, 0.0)

    assert lora_run.trainer == "lora" and lora_run.args["learning_rate"] == 2e-2
    assert [step for step, _, _ in lora_run.loss_curve] == list(range(1, lora_run.steps + 1))
    assert [step for step, _ in lora_run.validation_curve] == [3, 6]
    assert lora_run.best_step == min(lora_run.validation_curve, key=lambda p: p[1])[0]
    assert lora_run.loss_curve[-1][1] < lora_run.loss_curve[0][1]
    assert lora_run.tokens_trained > lora_run.response_tokens > 0
    assert 0.0 <= lora_run.padding_share < 0.05  # packed rows: only the ends of shorter rows
    assert lora_run.tokens_per_second > 0 and lora_run.wall_time_s >= lora_run.train_time_s > 0
    assert (lora_run.train_examples, lora_run.validation_examples) == (20, 4)
    assert not lora_run.resumed and not lora_run.stopped_early
    assert json.dumps(lora_run.to_record())

    prompts = [instruction_prompt("Define the word.", w) for w in WORDS[:4]]
    base = generate(ModelSpec(str(tiny_model_dir)), prompts)
    tuned = generate(lora_run.checkpoint, prompts)
    assert tuned != base
    assert all("stripes" in text for text in tuned), tuned  # a word the random base never says


def test_continuing_an_adapter_keeps_its_shape(
    lora_run: TrainingOutcome, tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="r=8"):
        train(
            LoraTrainer(),
            tiny_model_dir,
            tmp_path / "next",
            base=lora_run.checkpoint,
            rank=4,
            max_steps=1,
        )
    with pytest.raises(ConfigError, match="LORA"):
        train(IA3Trainer(), tiny_model_dir, tmp_path / "ia3", base=lora_run.checkpoint, max_steps=1)


def test_a_continued_adapter_trains_with_the_requested_dropout(
    lora_run: TrainingOutcome, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Dropout shapes the training, not the adapter: one trained without it continues with
    it (and adapters from before dropout's default became 0 continue without it)."""
    out = tmp_path / "next"
    continued = train(
        LoraTrainer(), tiny_model_dir, out, base=lora_run.checkpoint, dropout=0.1, max_steps=1
    )
    config = json.loads((Path(continued.checkpoint.adapter or "") / "adapter_config.json").read_text())
    assert config["lora_dropout"] == 0.1
    assert continued.details["peft"]["lora_dropout"] == 0.1


# ---------------------------------------------------------------------------
# Checkpoints, resumption, the guard, early stopping
# ---------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Also shows that the same data and seed give the same weights and content hash."""
    args = {"max_steps": 5, "save_steps": 2, "learning_rate": 1e-2}
    whole = train(LoraTrainer(), tiny_model_dir, tmp_path / "whole", **args)

    steps: list[int] = []

    def interrupt_after_step_3(done: int) -> None:
        steps.append(done)
        if sum(steps) == 3:  # after checkpoint-2, before checkpoint-4
            raise Interrupted

    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        train(LoraTrainer(), tiny_model_dir, cut, progress=interrupt_after_step_3, **args)
    assert sorted(p.name for p in cut.iterdir() if p.is_dir()) == ["checkpoint-2"]
    assert not (cut / "adapter_config.json").exists()
    with pytest.raises(ConfigError, match="resume"):
        train(LoraTrainer(), tiny_model_dir, cut, **args)

    resumed_steps: list[int] = []
    resumed = train(
        LoraTrainer(), tiny_model_dir, cut, resume=True, progress=resumed_steps.append, **args
    )
    assert resumed.resumed and sum(resumed_steps) == resumed.steps == whole.steps == 5
    expected = load_file(Path(whole.checkpoint.adapter or "") / "adapter_model.safetensors")
    got = load_file(cut / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert resumed.checkpoint_hash == whole.checkpoint_hash
    assert resumed.loss_curve == whole.loss_curve
    assert resumed.validation_curve == whole.validation_curve
    assert (resumed.tokens_trained, resumed.response_tokens) == (
        whole.tokens_trained,
        whole.response_tokens,
    )


def test_a_non_finite_loss_stops_without_a_final_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match="not finite"):
        train(
            LoraTrainer(),
            tiny_model_dir,
            out,
            max_steps=6,
            save_steps=1,
            learning_rate=1e30,
            validation_fraction=0,
        )
    assert (
        not (out / "adapter_config.json").exists()
        and not (out / "adapter_model.safetensors").exists()
    )
    for checkpoint in out.glob("checkpoint-*"):  # only the steps before the blow-up, all finite
        weights = load_file(checkpoint / "adapter_model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values())


def test_early_stopping_ends_at_patience_and_keeps_the_best_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Train towards one answer while validating on another: validation gets worse.
    drift = [TrainingExample("Say the word.", f"w{i}", "zebra zebra zebra") for i in range(16)]
    held = [TrainingExample("Say the word.", f"v{i}", f"apple {i} banana") for i in range(4)]
    out = tmp_path / "early"
    outcome = train(
        LoraTrainer(),
        tiny_model_dir,
        out,
        examples=drift,
        validation=held,
        max_steps=12,
        save_steps=1,
        learning_rate=5e-2,
        lr_scheduler="constant_with_warmup",
        early_stopping_patience=2,
        batching="padded",
        keep_checkpoints=True,
    )
    curve = dict(outcome.validation_curve)
    assert outcome.stopped_early and outcome.steps < 12
    assert outcome.best_step == min(curve, key=curve.__getitem__)
    assert outcome.steps == outcome.best_step + 2  # two evaluations without improvement
    assert outcome.padding_share > 0.0
    best = load_file(out / f"checkpoint-{outcome.best_step}" / "adapter_model.safetensors")
    final = load_file(out / "adapter_model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)


# ---------------------------------------------------------------------------
# Full fine-tuning and (IA)^3
# ---------------------------------------------------------------------------


def test_full_fine_tuning_saves_a_model_that_loads_as_a_base(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "full"
    outcome = train(
        FullTrainer(),
        tiny_model_dir,
        out,
        max_steps=3,
        save_steps=3,
        learning_rate=1e-3,
        dropout=0.1,
    )
    assert outcome.checkpoint == ModelSpec(path=str(out.resolve()))
    assert outcome.checkpoint_hash == content_hash(out)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    # Dropout applied for training only; the saved config keeps the model's own value.
    assert json.loads((out / "config.json").read_text())["attention_dropout"] == 0.0
    assert outcome.details["trainable_parameters"] == outcome.details["total_parameters"]
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert not torch.equal(
        before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]
    )
    assert generate(outcome.checkpoint, ["### Instruction:\nSay hi.\n\n### Response:\n"])


def test_full_dropout_needs_a_model_with_dropout_settings(tmp_path: Path) -> None:
    from transformers import PretrainedConfig

    with pytest.raises(ConfigError, match="no dropout setting"):
        FullTrainer().model_overrides(PretrainedConfig(), FullArgs(dropout=0.1))


def test_ia3_adapter_trains_and_loads_on_the_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ia3"
    outcome = train(IA3Trainer(), tiny_model_dir, out, max_steps=3, save_steps=3)
    assert outcome.checkpoint == ModelSpec(path=str(tiny_model_dir), adapter=str(out.resolve()))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and config["feedforward_modules"] == ["down_proj"]
    weights = load_file(out / "adapter_model.safetensors")
    assert any(not torch.equal(w, torch.ones_like(w)) for w in weights.values()), (
        "vectors start at 1"
    )
    assert outcome.details["trainable_parameters"] < 2000
    assert generate(outcome.checkpoint, ["### Instruction:\nSay hi.\n\n### Response:\n"])
