"""The transformers / TRL / peft side of the engine: context managers that quiet or bound the
libraries, and the classes built on their types (imported on first use, never at import
time: the plugin manager imports every built-in trainer module whenever it starts)."""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from harness.components.contracts import Progress
from harness.errors import TrainingError
from harness.train.encoding import IGNORE_INDEX

_REAL_TOKENS = "harness_real_tokens"
"""Batch key with the count of non-padding tokens of a packed batch (removed before the model)."""

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
                or getattr(self.args, "loss_type", "nll") != "nll"
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
            dataset: Any = self.train_dataset if train_dataset is None else train_dataset
            seed = self.args.data_seed
            assert seed is not None  # SFTConfig is built with data_seed=args.seed
            global_batch = (
                self.args.train_batch_size
                * self.args.gradient_accumulation_steps
                * self.accelerator.num_processes
            )
            return SeededLengthGroupedSampler(
                global_batch, [len(ids) for ids in dataset["input_ids"]], seed
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
