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

The output directory (checkpoints, resuming, the final model) is `output_dir`'s, and
continuing an existing adapter `adapters`'.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from harness.components.contracts import Progress, Trainer
from harness.errors import ConfigError, TrainingError
from harness.generate import checkpoints
from harness.suite.prompts import PromptConfig
from harness.train.adapters import peft_summary, with_existing_adapter
from harness.train.args import TrainingArgs
from harness.train.encoding import encode_examples, prompt_renderer, split_validation
from harness.train.hf import (
    _hf,
    _quiet_progress_bars,
    _require_finite_weights,
    _torch_threads,
    quiet_peft_version_skew,
)
from harness.train.launch import DDP_TIMEOUT_S, check_launch, cpu_processes, is_main_process
from harness.train.output_dir import CHECKPOINT_PREFIX, check_output_dir, gathered_state_dict, save_final
from harness.types import ModelSpec, TrainingExample, TrainingOutcome

_EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
"""Config fields that make a model a mixture of experts (not every expert runs every step)."""


class InstructionTuner(Trainer):
    """A trainer that runs TRL's SFTTrainer on the instruction template.

    Subclasses say how to adapt the model: `peft_config` (an adapter method) or
    `model_overrides` (config values for full fine-tuning)."""

    Args: ClassVar[type[BaseModel]] = TrainingArgs
    produces_adapter: ClassVar[bool] = True
    continued_fields: ClassVar[tuple[str, ...]] = ()
    """peft config fields a continued adapter must share with the requested one."""
    requested_fields: ClassVar[tuple[str, ...]] = ()
    """peft config fields of the training alone (dropout), which a continued adapter takes
    from the request."""

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

    # The same checks as evaluation, before anything is loaded or recorded: one line each.
    allow_pickle = bool(base.options.get("allow_pickle"))
    checkpoints.check_model_dir(model_dir, allow_pickle=allow_pickle, trust_remote_code=trust)
    if base.adapter:
        checkpoints.check_adapter_dir(
            checkpoints.resolve_adapter_dir(base.adapter), model_dir, allow_pickle=allow_pickle
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
        model = with_existing_adapter(tuner, model, base.adapter, args, details)
    elif tuner.produces_adapter:
        from peft import get_peft_model

        peft_config = tuner.peft_config(model, args)
        with quiet_peft_version_skew():
            model = get_peft_model(model, peft_config)
        details["peft"] = peft_summary(peft_config)
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
    state_dict = gathered_state_dict(trainer)  # FSDP: every process gives its shards
    outcome: TrainingOutcome | None = None
    if accelerator.is_main_process:
        save_final(
            model,
            trainer.processing_class,
            output_dir,
            adapter=tuner.produces_adapter,
            state_dict=state_dict,
        )
        if not args.keep_checkpoints:
            for old in output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
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


def _may_leave_weights_unused(config: Any) -> bool:
    """Whether a step may leave trained weights without a gradient: experts no token was
    routed to, or the other towers of a multimodal model trained on text."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    counts = (getattr(text, name, None) for name in _EXPERT_COUNT_FIELDS)
    return text is not config or any(isinstance(n, int) and n > 1 for n in counts)


