"""Fine-tuning shared by the built-in trainers: TRL's SFTTrainer on the instruction template.

Every trainer (`lora`, `ia3`, `full`) runs the same engine, `InstructionTuner.train`:

- Each example becomes `render_prompt(...)` (for the default format exactly
  `instruction_prompt(instruction, input)`, the text evaluation prompts with) followed by
  the response and the tokenizer's EOS token. Prompt and response are tokenized
  separately, without special tokens, as the `hf` backend tokenizes prompts, so training
  sees the very tokens generation starts from. Labels are -100 on the prompt and on
  padding: the loss is on the response (and its EOS) only.
- Batches are packed (default), length-grouped or plainly padded. Packing puts whole
  examples into rows of up to `max_length` tokens (TRL's best-fit-decreasing
  `pack_dataset`; an example is never split). Position ids restart at 0 for every
  example and the batch carries no attention mask, so transformers builds a
  block-diagonal causal mask per row from the restarts: no example attends to another,
  and no label is predicted from the example before it. Rows stay separate rather than
  being flattened into one padding-free sequence (TRL's own packing): on CPU attention
  with a dense mask costs the square of the row length, and one row of 8 x 128 tokens
  measured 1.3-1.6x slower than 8 rows of 128.
- A validation split (given, or carved from train with the fixed seed) is evaluated
  every `eval_steps`; early stopping ends training after `early_stopping_patience`
  evaluations without improvement, and the best checkpoint is restored at the end.
- Checkpoints (weights, optimizer, scheduler, RNG, counters) are written every
  `save_steps`; `resume=True` continues from the latest complete one and reaches the
  weights an uninterrupted run reaches.
- A non-finite loss, validation loss or weight stops training with `TrainingError`
  before anything broken is written: no checkpoint of non-finite weights, no final model.
- Launched as several processes (`torchrun`, `accelerate launch`), each process trains on
  its own micro-batches (DDP, or FSDP through an accelerate config) and the optimizer step
  covers the global batch: batch_size x gradient_accumulation_steps x processes rows. The
  batches of one step are those a single process with that global batch would take, in
  every batching mode (see `GuardedSFTTrainer._get_train_sampler`), and the loss is the
  mean over the labelled tokens of the whole global batch, so N processes with batch B
  follow one process with batch N x B (or with N accumulation steps) up to the order of
  floating-point sums. Token counts and the non-finite guard are summed over processes, so
  every process reports and stops alike; only the main process writes the final model,
  and every process returns the main process's outcome.

transformers, TRL and peft are imported on first use, never at import time: the plugin
manager imports every built-in trainer module whenever it starts.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness import checkpoints
from harness.components import Progress, Trainer
from harness.errors import ConfigError, TrainingError
from harness.prompts import PromptConfig, render_prompt
from harness.types import ModelSpec, Sample, TrainingExample

IGNORE_INDEX = -100
"""The label that excludes a position from the loss (PyTorch's cross-entropy default)."""

_REAL_TOKENS = "harness_real_tokens"
"""Batch key with the count of non-padding tokens of a packed batch (removed before the model)."""

_MARKERS = ("adapter_config.json", "config.json")
"""Files whose presence makes a directory a finished checkpoint; written last."""

_CHECKPOINT_PREFIX = "checkpoint-"

_EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
"""Config fields that make a model a mixture of experts (not every expert runs every step)."""


# ---------------------------------------------------------------------------
# Which process this is
# ---------------------------------------------------------------------------


def _env_int(names: Sequence[str], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value:
            return int(value)
    return default


def process_count() -> int:
    """Processes in this training launch, from the launcher's environment (torchrun and
    `accelerate launch` set WORLD_SIZE; MPI launchers their own variables); 1 otherwise."""
    return _env_int(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"), 1)


def process_rank() -> int:
    """This process's global rank in the launch (0 when not launched as several processes)."""
    return _env_int(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"), 0)


def is_main_process() -> bool:
    """Whether this process records results: the only one, or rank 0 of a launch. Known
    from the environment, so it can be asked before any process group exists."""
    return process_rank() == 0


def _accelerator_available() -> bool:
    import torch

    probe = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, ROCm, XPU, MPS, ...
    return bool(probe.is_available()) if probe is not None else torch.cuda.is_available()


def cpu_processes() -> bool:
    """Whether this is a launch of several processes on a machine without an accelerator.
    accelerate must then be told to use CPU processes (gloo): otherwise it counts one
    process per launch and each would train the whole run alone."""
    return process_count() > 1 and not _accelerator_available()


def check_launch() -> None:
    """Refuse a launch that would not train as configured. accelerate (1.x) applies an
    FSDP configuration only to processes on accelerator devices: CPU processes would
    quietly train with DDP instead, each holding the whole model."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not _accelerator_available():
        raise ConfigError(
            "the accelerate config asks for FSDP, but this machine has no GPU and accelerate shards "
            "models only across GPUs (on CPU processes it would train with DDP, unsharded); launch "
            "with docs/accelerate/ddp_cpu.yaml or torchrun here, and with the FSDP config on GPUs"
        )


DDP_TIMEOUT_S = 1800
"""How long a process waits for the others at a collective (transformers' ddp_timeout)."""


def distributed_state() -> Any:
    """accelerate's state of this launch, its process group initialised from the launcher's
    environment (the trainer later finds the group and uses it); a plain single process
    otherwise."""
    from datetime import timedelta

    from accelerate import PartialState

    return PartialState(cpu=cpu_processes(), timeout=timedelta(seconds=DDP_TIMEOUT_S))


# ---------------------------------------------------------------------------
# What a training run returns
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """Everything the store records about one training run."""

    trainer: str
    args: Mapping[str, Any]
    """The trainer's arguments, validated and with defaults filled in (JSON-able)."""
    checkpoint: ModelSpec
    """What to evaluate next: base + adapter (path=base, adapter=output dir) or a full model."""
    checkpoint_hash: str
    """`harness.checkpoints.content_hash` of the saved output directory."""
    loss_curve: tuple[tuple[int, float, float], ...]
    """(step, training loss, learning rate) for every optimizer step."""
    validation_curve: tuple[tuple[int, float], ...]
    """(step, validation loss) for every evaluation."""
    tokens_trained: int
    """Non-padding tokens fed to the model over all steps (prompt and response)."""
    response_tokens: int
    """Tokens that carried the loss (response tokens and EOS)."""
    padding_share: float
    """Padding positions / all positions of the training batches (packed: only the ends of
    rows shorter than the longest row of their batch)."""
    wall_time_s: float
    """Seconds this call took, from loading to the saved checkpoint."""
    train_time_s: float
    """Seconds spent in optimizer steps (forward, backward, update), summed over resumes."""
    tokens_per_second: float
    """tokens_trained / train_time_s."""
    steps: int
    epochs: float
    best_step: int | None
    """The step whose validation loss was lowest (None without validation)."""
    stopped_early: bool
    resumed: bool
    train_examples: int
    validation_examples: int
    truncated_examples: int
    """Examples cut at max_length (their response lost its end)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Method specifics: adapted modules, parameter counts, the base checkpoint, ..."""

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict of every field (the checkpoint spec as a dict)."""
        record = {name: getattr(self, name) for name in self.__dataclass_fields__}
        spec = self.checkpoint
        record["checkpoint"] = {
            "path": spec.path,
            "adapter": spec.adapter,
            "backend": spec.backend,
            "options": dict(spec.options),
        }
        record["args"] = dict(self.args)
        record["details"] = dict(self.details)
        record["loss_curve"] = [list(point) for point in self.loss_curve]
        record["validation_curve"] = [list(point) for point in self.validation_curve]
        return record


# ---------------------------------------------------------------------------
# Arguments shared by every trainer
# ---------------------------------------------------------------------------


class TrainingArgs(BaseModel):
    """Arguments every built-in trainer takes. Defaults suit small models on a CPU."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal[
        "linear", "cosine", "constant_with_warmup", "inverse_sqrt", "polynomial"
    ] = Field("cosine", description="Decay after warm-up.")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of the steps spent warming the learning rate up from 0."
    )
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay (not on biases and norms)."
    )
    batch_size: int = Field(
        4, ge=1, description="Rows per micro-batch; a packed row holds several examples."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step."
    )
    max_length: int = Field(
        256, ge=8, description="Tokens per example (longer ones are cut) and per packed row."
    )
    batching: Literal["packed", "length_grouped", "padded"] = Field(
        "packed",
        description="packed: whole examples share rows with per-example attention, little "
        "padding; length_grouped: batches of similar length, padded; padded: random batches.",
    )
    validation_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of train held out (with the seed) when no validation set is given; "
        "0 turns validation and early stopping off.",
    )
    save_steps: int = Field(25, ge=1, description="Write a resumable checkpoint every N steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Compute the validation loss every N steps (default: save_steps)."
    )
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after N evaluations without improvement; None never stops early."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="How much the validation loss must fall to count as improving."
    )
    load_best_at_end: bool = Field(
        True, description="Finish with the weights of the lowest validation loss."
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 turns it off.")
    seed: int = Field(0, description="Seeds initialisation, data order, dropout and the split.")
    resume: bool = Field(
        False, description="Continue from the latest checkpoint in the output directory."
    )
    keep_checkpoints: bool = Field(
        False, description="Keep the intermediate checkpoints after a successful run."
    )
    save_total_limit: int = Field(2, ge=1, description="Intermediate checkpoints kept on disk.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, about 20% slower."
    )
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPUs and recent CPUs).")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads during this run (default: torch's own choice)."
    )

    @model_validator(mode="after")
    def _steps_agree(self) -> TrainingArgs:
        every = self.eval_steps or self.save_steps
        if self.load_best_at_end and self.save_steps % every:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({every}) so that "
                "the best checkpoint exists to restore; change one, or set load_best_at_end: false"
            )
        return self


# ---------------------------------------------------------------------------
# Data: the instruction template with the loss on the response only
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedExamples:
    """Token ids and labels of a set of examples (labels -100 on the prompt)."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int
    """Examples cut at max_length."""
    dropped: int
    """Examples left without a single response token by the cut (not trained on)."""


def prompt_renderer(tokenizer: Any, prompt: PromptConfig) -> Callable[[TrainingExample], str]:
    """The prompt text of an example, exactly as evaluation renders it for a sample."""
    chat: Callable[[list[dict[str, str]]], str] | None = None
    if getattr(tokenizer, "chat_template", None):

        def chat(messages: list[dict[str, str]]) -> str:
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )

    def render(example: TrainingExample) -> str:
        sample = Sample(id="", instruction=example.instruction, input=example.input)
        return render_prompt(sample, prompt, chat)

    return render


def encode_examples(
    tokenizer: Any,
    examples: Sequence[TrainingExample],
    render: Callable[[TrainingExample], str],
    max_length: int,
) -> EncodedExamples:
    """Prompt tokens (label -100) + response tokens + EOS (labelled), cut at max_length."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError(
            "the tokenizer has no EOS token: the model could not learn where a response ends"
        )
    if not examples:
        return EncodedExamples([], [], 0, 0)
    prompts = tokenizer([render(e) for e in examples], add_special_tokens=False)["input_ids"]
    responses = tokenizer([e.output for e in examples], add_special_tokens=False)["input_ids"]
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    truncated = dropped = 0
    for prompt_ids, response_ids in zip(prompts, responses, strict=True):
        target = [*response_ids, eos]
        ids = [*prompt_ids, *target]
        label = [IGNORE_INDEX] * len(prompt_ids) + target
        if len(ids) > max_length:
            truncated += 1
            ids, label = ids[:max_length], label[:max_length]
        if all(token == IGNORE_INDEX for token in label):
            dropped += 1
            continue
        input_ids.append(ids)
        labels.append(label)
    return EncodedExamples(input_ids, labels, truncated, dropped)


def split_validation(
    train: Sequence[TrainingExample],
    validation: Sequence[TrainingExample],
    fraction: float,
    seed: int,
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """(train, validation): the given validation set, or a seeded share carved from train."""
    if validation or fraction == 0:
        return list(train), list(validation)
    held = max(1, round(len(train) * fraction))
    if len(train) - held < 1:
        raise TrainingError(
            f"{len(train)} training example(s) are too few to hold {held} out for validation; "
            "give a validation set, or set validation_fraction: 0"
        )
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:held])
    kept = [example for i, example in enumerate(train) if i not in held_out]
    return kept, [train[i] for i in sorted(held_out)]


# ---------------------------------------------------------------------------
# Which layers an adapter goes on
# ---------------------------------------------------------------------------

_ATTENTION_WORDS = ("attn", "attention")
_ROUTER_WORDS = ("router", "moe", "sparse")


@dataclass(frozen=True, slots=True)
class ProjectionLayers:
    """The linear projections inside the model's repeated blocks, by full module name."""

    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    mlp_output: tuple[str, ...]
    """MLP layers that read the wide hidden activation (down projections)."""
    others: tuple[str, ...]
    """Every other linear layer of the model (embedding heads, routers, ...)."""

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted((*self.attention, *self.mlp)))

    def patterns(self, *selections: Sequence[str]) -> list[list[str]]:
        """peft `target_modules` lists for each selection: short leaf names (q_proj, ...)
        when they pick out exactly the selected layers, otherwise full module names."""
        everything = (*self.attention, *self.mlp, *self.others)
        leaf_lists = [sorted({name.rsplit(".", 1)[-1] for name in sel}) for sel in selections]
        for selection, leaves in zip(selections, leaf_lists, strict=True):
            matched = {n for n in everything if n.rsplit(".", 1)[-1] in leaves}
            if matched != set(selection):
                return [sorted(sel) for sel in selections]
        return leaf_lists


def _is_router_name(leaf: str) -> bool:
    """A mixture-of-experts gate that picks experts (not an expert's gate_proj)."""
    return leaf == "gate" or leaf.endswith("_gate") or "router" in leaf


def find_projection_layers(model: Any) -> ProjectionLayers:
    """Every linear projection of attention and MLP blocks, found by inspecting the model.

    A block is a member of an `nn.ModuleList` (the decoder layers). Inside a block, a
    linear layer (or GPT-2's `Conv1D`) under a module whose class or attribute name says
    attention is an attention projection; every other one is an MLP projection (this
    covers OPT-style blocks whose fc1/fc2 sit directly in the layer), except routers of
    mixture-of-experts blocks. The output embedding is never a target.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    blocks = {
        f"{name}.{child}"
        for name, module in modules.items()
        if isinstance(module, torch.nn.ModuleList)
        for child, _ in module.named_children()
    }
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    attention: list[str] = []
    mlp: list[tuple[str, int, int, str]] = []  # name, in, out, block
    others: list[str] = []
    for name, module in modules.items():
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is head:
            if module is head and name:
                others.append(name)
            continue
        block = max((b for b in blocks if name.startswith(b + ".")), key=len, default=None)
        if block is None:
            others.append(name)
            continue
        inner = name[len(block) + 1 :].split(".")
        ancestors = [
            (part.lower(), type(modules[".".join([block, *inner[: i + 1]])]).__name__.lower())
            for i, part in enumerate(inner[:-1])
        ]
        words = " ".join(f"{attr} {cls}" for attr, cls in ancestors)
        if any(word in words for word in _ATTENTION_WORDS):
            attention.append(name)
        elif any(word in words for word in _ROUTER_WORDS) and _is_router_name(inner[-1].lower()):
            others.append(name)
        else:
            fan_in, fan_out = (
                (module.weight.shape[0], module.weight.shape[1])
                if isinstance(module, Conv1D)
                else (module.in_features, module.out_features)
            )
            mlp.append((name, fan_in, fan_out, block))
    if not attention and not mlp:
        linear = [n for n, m in modules.items() if isinstance(m, (torch.nn.Linear, Conv1D))]
        raise ConfigError(
            f"found no attention or MLP projection in {type(model).__name__} "
            f"(linear layers: {', '.join(linear[:8]) or 'none'}); name the layers with target_modules"
        )
    widest: dict[str, int] = {}
    for _, fan_in, _, block in mlp:
        widest[block] = max(widest.get(block, 0), fan_in)
    mlp_output = [n for n, fan_in, fan_out, b in mlp if fan_in == widest[b] and fan_in > fan_out]
    return ProjectionLayers(
        attention=tuple(attention),
        mlp=tuple(n for n, *_ in mlp),
        mlp_output=tuple(mlp_output),
        others=tuple(others),
    )


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------


class InstructionTuner(Trainer):
    """A trainer that runs TRL's SFTTrainer on the instruction template.

    Subclasses say how to adapt the model: `peft_config` (an adapter method) or
    `model_overrides` (config values for full fine-tuning)."""

    Args: ClassVar[type[BaseModel]] = TrainingArgs
    produces_adapter: ClassVar[bool] = True
    continued_fields: ClassVar[tuple[str, ...]] = ()
    """peft config fields a continued adapter must share with the requested one."""

    def peft_config(self, model: Any, args: BaseModel) -> Any:
        """The peft config to wrap the model with (adapter methods)."""
        raise NotImplementedError(f"trainer {self.name!r} does not make an adapter")

    def model_overrides(self, config: Any, args: BaseModel) -> dict[str, Any]:
        """Config values to load the model with for training only (restored before saving)."""
        return {}

    def train(
        self,
        base: ModelSpec,
        train: Sequence[TrainingExample],
        validation: Sequence[TrainingExample],
        output_dir: Path,
        args: BaseModel,
        *,
        prompt: PromptConfig,
        progress: Progress | None = None,
    ) -> TrainingOutcome:
        if not isinstance(args, TrainingArgs):
            raise TypeError(
                f"trainer {self.name!r} needs {type(self).Args.__name__}, got {type(args).__name__}"
            )
        with _quiet_progress_bars(), _torch_threads(args.threads):
            return _run(self, base, train, validation, Path(output_dir), args, prompt, progress)


@dataclass
class Prepared:
    """A configured SFTTrainer and what went into it."""

    trainer: Any
    """The TRL SFTTrainer (a transformers Trainer), ready for `.train()`."""
    train_examples: int
    validation_examples: int
    truncated: int
    details: dict[str, Any]
    original_config: dict[str, Any]
    """Config values the tuner overrode for training, as the base model had them."""


def prepare(
    tuner: InstructionTuner,
    base: ModelSpec,
    train: Sequence[TrainingExample],
    validation: Sequence[TrainingExample],
    output_dir: Path,
    args: TrainingArgs,
    prompt: PromptConfig,
    progress: Progress | None = None,
) -> Prepared:
    """Tokenize, load and wrap the model, and build the SFTTrainer (without training)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed

    check_launch()
    hf = _hf()
    model_dir = checkpoints.resolve_model_dir(base.path)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir} is a peft adapter, not a model; train on its base model")
    trust = bool(base.options.get("trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    if not train:
        raise TrainingError("nothing to train on: the training set is empty")
    train_set, validation_set = split_validation(
        train, validation, args.validation_fraction, args.seed
    )
    render = prompt_renderer(tokenizer, prompt)
    encoded_train = encode_examples(tokenizer, train_set, render, args.max_length)
    encoded_validation = encode_examples(tokenizer, validation_set, render, args.max_length)
    if not encoded_train.input_ids:
        raise TrainingError(
            f"nothing to train on: all {len(train_set)} training examples have prompts of "
            f"max_length ({args.max_length}) tokens or more; raise max_length"
        )
    if validation_set and not encoded_validation.input_ids:
        raise TrainingError(
            f"all {len(validation_set)} validation examples have prompts of max_length "
            f"({args.max_length}) tokens or more; raise max_length"
        )

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust)
    overrides = tuner.model_overrides(config, args)
    original_config = {key: getattr(config, key) for key in overrides}
    set_seed(args.seed)  # adapter weights are initialised randomly
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=torch.float32,
        trust_remote_code=trust,
        use_safetensors=None if base.options.get("allow_pickle") else True,
        **overrides,
    )
    details: dict[str, Any] = {"base_model": str(model_dir)}
    if is_main_process():  # the outcome is the main process's: the others need not read every file
        model_hash = checkpoints.content_hash(model_dir)
        adapter_hash = (
            checkpoints.content_hash(checkpoints.resolve_adapter_dir(base.adapter))
            if base.adapter
            else None
        )
        details["base_model_hash"] = model_hash
        # what the hf backend reports for the starting checkpoint (base + adapter)
        details["base_hash"] = checkpoints.checkpoint_hash(model_hash, adapter_hash)
    if base.adapter:
        model = _with_existing_adapter(tuner, model, base.adapter, args, details)
    elif tuner.produces_adapter:
        from peft import get_peft_model

        peft_config = tuner.peft_config(model, args)
        with quiet_peft_version_skew():
            model = get_peft_model(model, peft_config)
        details["peft"] = _peft_summary(peft_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    details["trainable_parameters"] = trainable
    details["total_parameters"] = sum(p.numel() for p in model.parameters())
    details["dropped_examples"] = encoded_train.dropped + encoded_validation.dropped

    from datasets import Dataset

    train_data = Dataset.from_dict(
        {"input_ids": encoded_train.input_ids, "labels": encoded_train.labels}
    )
    validation_data = (
        Dataset.from_dict(
            {"input_ids": encoded_validation.input_ids, "labels": encoded_validation.labels}
        )
        if encoded_validation.input_ids
        else None
    )
    collator = None
    if args.batching == "packed":
        train_data = hf.pack_dataset(train_data, args.max_length, "bfd")
        if validation_data is not None:
            validation_data = hf.pack_dataset(validation_data, args.max_length, "bfd")
        collator = hf.PackedRowsCollator(tokenizer.pad_token_id)
    has_validation = validation_data is not None
    eval_steps = args.eval_steps or args.save_steps
    sft_config = hf.SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN must reach the guard, not be averaged away
        eval_strategy="steps" if has_validation else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        load_best_model_at_end=has_validation and args.load_best_at_end,
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience and counters
        seed=args.seed,
        data_seed=args.seed,
        report_to="none",
        disable_tqdm=True,
        bf16=args.bf16,
        activation_checkpointing=args.gradient_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=cpu_processes(),
        # Every trainable weight of a dense text model gets a gradient each step; skipping
        # DDP's search for unused ones saves a graph traversal per step.
        ddp_find_unused_parameters=_may_leave_weights_unused(config),
        ddp_timeout=DDP_TIMEOUT_S,
        log_level_replica="error",  # the main process warns once; the others would repeat it
        max_length=args.max_length,
        packing=False,  # packed above, into rows that keep their own attention masks
        train_sampling_strategy="group_by_length"
        if args.batching == "length_grouped"
        else "random",
    )
    callbacks: list[Any] = [hf.TrainingStats()]
    if progress is not None:
        callbacks.append(hf.ProgressReporter(progress))
    if has_validation and args.early_stopping_patience is not None:
        callbacks.append(
            hf.EarlyStoppingCallback(
                early_stopping_patience=args.early_stopping_patience,
                early_stopping_threshold=args.early_stopping_threshold,
            )
        )
    trainer = hf.GuardedSFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=train_data,
        eval_dataset=validation_data,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.remove_callback(hf.PrinterCallback)  # the harness reports progress itself
    processes = trainer.accelerator.num_processes
    details["processes"] = processes
    details["parallelism"] = trainer.accelerator.distributed_type.value
    details["global_batch_rows"] = args.batch_size * args.gradient_accumulation_steps * processes
    return Prepared(
        trainer=trainer,
        train_examples=len(encoded_train.input_ids),
        validation_examples=len(encoded_validation.input_ids),
        truncated=encoded_train.truncated + encoded_validation.truncated,
        details=details,
        original_config=original_config,
    )


def _run(
    tuner: InstructionTuner,
    base: ModelSpec,
    train: Sequence[TrainingExample],
    validation: Sequence[TrainingExample],
    output_dir: Path,
    args: TrainingArgs,
    prompt: PromptConfig,
    progress: Progress | None,
) -> TrainingOutcome:
    started = time.perf_counter()
    output_dir = output_dir.expanduser().resolve()
    resume_from = check_output_dir(output_dir, resume=args.resume)
    output_dir.mkdir(parents=True, exist_ok=True)

    prepared = prepare(tuner, base, train, validation, output_dir, args, prompt, progress)
    trainer = prepared.trainer
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    accelerator = trainer.accelerator
    # Every process has finished (loading the best checkpoint included) before the main
    # process writes the final model and removes the checkpoints the others may still read.
    accelerator.wait_for_everyone()

    model = trainer.model
    # Settings made for training only (full fine-tuning's dropout) stay out of the checkpoint.
    for key, value in prepared.original_config.items():
        setattr(model.config, key, value)
    _require_finite_weights(model, trainer.state.global_step, "the final model", accelerator)
    state_dict = _gathered_state_dict(trainer)  # FSDP: every process gives its shards
    outcome: TrainingOutcome | None = None
    if accelerator.is_main_process:
        _save_final(
            model,
            trainer.processing_class,
            output_dir,
            adapter=tuner.produces_adapter,
            state_dict=state_dict,
        )
        if not args.keep_checkpoints:
            for old in output_dir.glob(f"{_CHECKPOINT_PREFIX}*"):
                shutil.rmtree(old, ignore_errors=True)
        outcome = _outcome(tuner, base, output_dir, args, prepared, resume_from, started)
    if accelerator.num_processes == 1:
        assert outcome is not None
        return outcome
    from accelerate.utils import broadcast_object_list

    # One outcome everywhere: the main process's, with the hash of the model it wrote.
    # This also holds the other processes until the final model is on disk.
    shared = broadcast_object_list([outcome], from_process=0)[0]
    assert isinstance(shared, TrainingOutcome)
    return shared


def _outcome(
    tuner: InstructionTuner,
    base: ModelSpec,
    output_dir: Path,
    args: TrainingArgs,
    prepared: Prepared,
    resume_from: Path | None,
    started: float,
) -> TrainingOutcome:
    trainer = prepared.trainer
    state = trainer.state
    stats = trainer.stats()
    if tuner.produces_adapter:
        spec = replace(base, adapter=str(output_dir))
    else:
        spec = ModelSpec(path=str(output_dir), backend=base.backend, options=dict(base.options))
    history = state.log_history
    return TrainingOutcome(
        trainer=tuner.name,
        args=args.model_dump(mode="json"),
        checkpoint=spec,
        checkpoint_hash=checkpoints.content_hash(output_dir),
        loss_curve=tuple(
            (int(e["step"]), float(e["loss"]), float(e["learning_rate"]))
            for e in history
            if "loss" in e
        ),
        validation_curve=tuple(
            (int(e["step"]), float(e["eval_loss"])) for e in history if "eval_loss" in e
        ),
        tokens_trained=stats.tokens,
        response_tokens=stats.response_tokens,
        padding_share=stats.padding_share,
        wall_time_s=time.perf_counter() - started,
        train_time_s=stats.seconds,
        tokens_per_second=stats.tokens / stats.seconds if stats.seconds else 0.0,
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        best_step=state.best_global_step,
        stopped_early=state.global_step < state.max_steps,
        resumed=resume_from is not None,
        train_examples=prepared.train_examples,
        validation_examples=prepared.validation_examples,
        truncated_examples=prepared.truncated,
        details=prepared.details,
    )


def check_output_dir(output_dir: Path, *, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start afresh), or an error when `output_dir`
    holds a finished model, or checkpoints that `resume` does not ask to continue."""
    finished = [m for m in _MARKERS if (output_dir / m).is_file()]
    if finished:
        raise ConfigError(
            f"{output_dir} already holds a trained checkpoint ({finished[0]}); train into a new directory"
        )
    resume_from = latest_checkpoint(output_dir)
    if resume_from is not None and not resume:
        raise ConfigError(
            f"{output_dir} holds checkpoints of an earlier run (latest: {resume_from.name}); "
            "pass resume: true to continue it, or train into an empty directory"
        )
    return resume_from


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer state was written, which happens last)."""
    found = []
    for path in Path(output_dir).glob(f"{_CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(_CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def _with_existing_adapter(
    tuner: InstructionTuner, model: Any, adapter: str, args: TrainingArgs, details: dict[str, Any]
) -> Any:
    """Continue training the base's adapter (adapter methods) or merge it (full fine-tuning)."""
    from peft import PeftModel

    adapter_dir = checkpoints.resolve_adapter_dir(adapter)
    details["continued_adapter"] = str(adapter_dir)
    if not tuner.produces_adapter:
        with quiet_peft_version_skew():
            return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    wanted = tuner.peft_config(model, args)  # from the plain model, before adapter layers wrap it
    with quiet_peft_version_skew():
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    existing = model.peft_config["default"]
    if existing.peft_type != wanted.peft_type:
        raise ConfigError(
            f"the adapter {adapter_dir} is {existing.peft_type.value}, not what trainer {tuner.name!r} "
            "trains; use the matching trainer, or train on the base model alone"
        )
    for name in tuner.continued_fields:
        have, want = getattr(existing, name), getattr(wanted, name)
        if isinstance(have, (set, list, tuple)):
            have, want = sorted(have), sorted(want or [])
        if have != want:
            raise ConfigError(
                f"the adapter {adapter_dir} has {name}={have!r} but the arguments ask for {want!r}; "
                f"continuing an adapter keeps its shape, so pass {name}={have!r}"
            )
    details["peft"] = _peft_summary(existing)
    return model


def _peft_summary(config: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"method": config.peft_type.value}
    for name in ("target_modules", "feedforward_modules"):
        value = getattr(config, name, None)
        if value is not None:
            summary[name] = sorted(value) if not isinstance(value, str) else value
    for name in ("r", "lora_alpha", "lora_dropout"):
        if hasattr(config, name):
            summary[name] = getattr(config, name)
    return summary


def _require_finite_weights(
    model: Any, step: int, what: str, accelerator: Any | None = None
) -> None:
    """Stop on a non-finite trainable weight. With several processes every one must call
    this: each checks the weights it holds (FSDP: its shards) and all stop together."""
    import torch

    broken = None
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        held = parameter.to_local() if hasattr(parameter, "to_local") else parameter  # DTensor
        if not torch.isfinite(held).all():
            broken = f"weight {name}"
            break
    if accelerator is not None and accelerator.num_processes > 1:
        flag = torch.tensor([broken is not None], dtype=torch.int64, device=accelerator.device)
        if int(accelerator.reduce(flag, reduction="sum").item()) and broken is None:
            broken = "a weight held by another process"
    if broken is not None:
        raise TrainingError(
            f"training stopped at step {step}: {broken} is not finite, so {what} was not "
            "saved; lower the learning rate"
        )


def _gathered_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The full state dict of a sharded (FSDP) model, gathered from every process (each
    must call this); None when every process holds whole weights, which save as they are."""
    from accelerate.utils import DistributedType

    if trainer.accelerator.distributed_type != DistributedType.FSDP:
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def _save_final(
    model: Any,
    tokenizer: Any,
    output_dir: Path,
    *,
    adapter: bool,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write the model beside the checkpoints; the marker files arrive last, so an
    interrupted save never looks like a finished model."""
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=output_dir))
    try:
        if state_dict is None:
            model.save_pretrained(staging)
        else:
            model.save_pretrained(staging, state_dict=state_dict)
        if not adapter:
            tokenizer.save_pretrained(staging)
        _sort_module_lists(staging / "adapter_config.json")
        for path in sorted(staging.iterdir(), key=lambda p: p.name in _MARKERS):
            path.replace(output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sort_module_lists(adapter_config: Path) -> None:
    """Sort the module names peft writes from sets (target_modules, ...): a set's order
    changes with every process's string hashing, and with it the checkpoint's content
    hash, though the adapter is the same."""
    if not adapter_config.is_file():
        return
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    for key, value in config.items():
        if key.endswith("_modules") and isinstance(value, list):
            config[key] = sorted(value)
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")


def _may_leave_weights_unused(config: Any) -> bool:
    """Whether a step may leave trained weights without a gradient: experts no token was
    routed to, or the other towers of a multimodal model trained on text."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    counts = (getattr(text, name, None) for name in _EXPERT_COUNT_FIELDS)
    return text is not config or any(isinstance(n, int) and n > 1 for n in counts)


_LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def _plain_causal_lm(model: Any) -> Any | None:
    """The causal LM under a peft wrapper when its logits are just `lm_head(hidden)` (a plain
    linear layer, no soft-capping or scaling), else None."""
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = (
        causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
    )
    backbone = getattr(causal_lm, "base_model", None)
    if type(head) is not torch.nn.Linear or backbone is None or backbone is causal_lm:
        return None
    text_config = causal_lm.config.get_text_config()
    if any(getattr(text_config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return None
    return causal_lm


@contextmanager
def _forward_replaced(module: Any, forward: Callable[..., Any]) -> Iterator[None]:
    """Run `forward` as `module`'s forward inside the block, so that whatever wraps the
    module (DDP, FSDP's hooks) calls it as it calls the module. An instance-level forward
    already there (accelerate's autocast wrapper for mixed precision) returns afterwards."""
    before = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if before is None:
            del module.forward
        else:
            module.forward = before


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` CPU threads inside the block. Small models train faster on one
    thread when other processes share the cores (OpenMP workers wait on each other)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def quiet_peft_version_skew() -> Iterator[None]:
    """peft reads a transformers property that transformers 5 deprecated; the warning
    says nothing a user of the harness could act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        yield


@contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence the tqdm bars of datasets and transformers (the caller has its own progress)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_on = not datasets.are_progress_bars_disabled()
    transformers_on = hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if transformers_on:
            hf_logging.enable_progress_bar()


@functools.cache
def _hf() -> SimpleNamespace:
    """The transformers/TRL classes the engine uses and extends, built on first use."""
    import torch
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.trainer_callback import ExportableState, PrinterCallback
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
    from trl import SFTConfig, SFTTrainer, pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PackedRowsCollator:
        """Batches packed rows: right padding, position ids that restart at every example,
        and no attention mask, from which transformers builds a block-diagonal causal mask
        per row (padding comes after every real token, so no real token sees it)."""

        def __init__(self, pad_token_id: int) -> None:
            self.padder = DataCollatorForLanguageModeling(
                pad_token_id=pad_token_id, return_position_ids=True
            )

        def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
            batch = self.padder(rows)
            mask = batch.pop("attention_mask")
            # An example's first token is never predicted from the end of the one before it.
            batch["labels"][batch["position_ids"] == 0] = IGNORE_INDEX
            batch[_REAL_TOKENS] = mask.sum()
            return batch

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        """Length-grouped order drawn from `seed + epoch` alone (see `_get_train_sampler`)."""

        def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
            super().__init__(batch_size, lengths=lengths)
            self.seed = seed
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self) -> Iterator[int]:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    class TrainingStats(TrainerCallback, ExportableState):
        """Token counts and step time; saved with each checkpoint, so a resumed run
        reports what an uninterrupted one would."""

        def __init__(self) -> None:
            self.positions = 0
            self.tokens = 0
            self.response_tokens = 0
            self.seconds = 0.0
            self._step_started: float | None = None

        @property
        def padding_share(self) -> float:
            return (self.positions - self.tokens) / self.positions if self.positions else 0.0

        @staticmethod
        def measure(inputs: Mapping[str, Any]) -> list[int]:
            """[positions, real tokens, labelled tokens] of one micro-batch."""
            real = inputs.get(_REAL_TOKENS)
            if real is None:
                real = inputs["attention_mask"].sum()
            labelled = int((inputs["labels"] != IGNORE_INDEX).sum())
            return [inputs["input_ids"].numel(), int(real), labelled]

        def add(self, positions: int, tokens: int, response_tokens: int) -> None:
            self.positions += positions
            self.tokens += tokens
            self.response_tokens += response_tokens

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._step_started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._step_started is not None:
                self.seconds += time.perf_counter() - self._step_started
                self._step_started = None

        def state(self) -> dict[str, Any]:
            return {
                "args": {},
                "attributes": {
                    "positions": self.positions,
                    "tokens": self.tokens,
                    "response_tokens": self.response_tokens,
                    "seconds": self.seconds,
                },
            }

    class ProgressReporter(TrainerCallback):
        """Calls the harness progress function with the optimizer steps just done."""

        def __init__(self, progress: Progress) -> None:
            self.progress = progress
            self.reported = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # The total is known only now (epochs x batches): give it to a progress bar
            # that takes one, so that it shows "21/60" and an ETA rather than "21/?".
            set_total = getattr(self.progress, "set_total", None)
            if set_total is not None and state.max_steps and state.max_steps > 0:
                set_total(int(state.max_steps))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            done = state.global_step - self.reported  # after a resume: the restored steps too
            if done > 0:
                self.reported = state.global_step
                self.progress(done)

    class GuardedSFTTrainer(SFTTrainer):
        """SFTTrainer that counts tokens, stops on non-finite values and stays offline."""

        def stats(self) -> TrainingStats:
            # Restoring callback state from a checkpoint replaces the instance: look it up.
            return next(
                cb for cb in self.callback_handler.callbacks if isinstance(cb, TrainingStats)
            )

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            """The mean negative log-likelihood of the labelled tokens, projecting only their
            hidden states through the LM head. TRL's fused head projects every position when
            Triton is missing (CPUs), prompt and padding included, in tiles of 32,768 logits
            per position: a third or more of a CPU step. Heads that transform their logits
            (soft-capping, scaling), MoE auxiliary losses and other loss types keep TRL's path."""
            inner = self.accelerator.unwrap_model(model)
            causal_lm = _plain_causal_lm(inner)
            if (
                return_outputs
                or causal_lm is None
                or self.aux_loss_enabled
                or self.args.loss_type != "nll"
                or self.label_smoother is not None
            ):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"][:, 1:]  # position t predicts token t + 1
            keep = labels != IGNORE_INDEX

            def labelled_nll(**model_inputs: Any) -> torch.Tensor:
                with self.accelerator.autocast():
                    hidden = causal_lm.base_model(**model_inputs, use_cache=False).last_hidden_state
                    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
                return torch.nn.functional.cross_entropy(
                    logits.float(), labels[keep], reduction="sum"
                )

            # Called through `model`: a DDP wrapper averages gradients only over forwards
            # that went through it, and FSDP gathers its shards in its forward hooks.
            with _forward_replaced(inner, labelled_nll):
                total = model(**{k: v for k, v in inputs.items() if k != "labels"})
            count = keep.sum() if num_items_in_batch is None else num_items_in_batch
            loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does
            return loss

        def training_step(
            self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
        ) -> torch.Tensor:
            counts = self.stats().measure(inputs)
            loss = super().training_step(model, inputs, num_items_in_batch)
            finite = bool(torch.isfinite(loss).all())
            totals = [*counts, int(not finite)]
            if self.accelerator.num_processes > 1:
                # Sum over processes: each counts the global batch, and all stop together
                # when any one's loss is not finite (one stopping alone leaves the others
                # waiting for it at the next collective).
                local = torch.tensor(totals, dtype=torch.int64, device=self.accelerator.device)
                totals = [int(n) for n in self.accelerator.reduce(local, reduction="sum").tolist()]
            self.stats().add(*totals[:3])
            if totals[3]:
                what = f"{loss.item()} (not finite)" if not finite else "not finite in another process"
                raise TrainingError(
                    f"training stopped at step {self.state.global_step + 1}: the loss is "
                    f"{what}, so no trained model was written. Lower the learning rate "
                    f"(now {self.args.learning_rate:g}) or check the data"
                )
            return loss

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            """Length grouping over the global batch, seeded. transformers groups by the
            batch of one process, so the rows of a step would change with the number of
            processes; and it draws from the global random state, which differs between
            launches. The random order (SeedableRandomSampler, seeded with data_seed and
            the epoch) is the same for any number of processes already: accelerate deals
            the batches of size B out in turn, so N processes take the N x B rows one
            process with batch N x B takes."""
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            dataset = self.train_dataset if train_dataset is None else train_dataset
            global_batch = (
                self.args.train_batch_size
                * self.args.gradient_accumulation_steps
                * self.accelerator.num_processes
            )
            return SeededLengthGroupedSampler(
                global_batch, [len(ids) for ids in dataset["input_ids"]], self.args.data_seed
            )

        def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
            inputs = {k: v for k, v in inputs.items() if k != _REAL_TOKENS}  # not a model input
            return super()._prepare_inputs(inputs)

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            metrics = super().evaluate(*args, **kwargs)
            loss = metrics.get("eval_loss")
            if loss is not None and not math.isfinite(loss):
                raise TrainingError(
                    f"training stopped at step {self.state.global_step}: the validation loss is "
                    f"{loss} (not finite), so no trained model was written. Lower the learning rate"
                )
            return metrics

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            _require_finite_weights(
                self.model, self.state.global_step, "the checkpoint", self.accelerator
            )
            super()._save_checkpoint(model, trial)

        def create_model_card(self, *args: Any, **kwargs: Any) -> None:
            """No README model card: the store records how a checkpoint was made."""

        def _send_telemetry(self) -> None:
            """No usage pings: the harness runs offline."""

    return SimpleNamespace(
        pack_dataset=pack_dataset,
        PackedRowsCollator=PackedRowsCollator,
        SFTConfig=SFTConfig,
        EarlyStoppingCallback=EarlyStoppingCallback,
        PrinterCallback=PrinterCallback,
        TrainingStats=TrainingStats,
        ProgressReporter=ProgressReporter,
        GuardedSFTTrainer=GuardedSFTTrainer,
    )
