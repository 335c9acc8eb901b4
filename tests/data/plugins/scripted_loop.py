"""A backend and a trainer for loop tests: checkpoint quality follows a script.

The trainer makes checkpoints named by its `plan` (one entry per iteration), except that
training rows whose output contains POISON make a "poisoned" checkpoint. The backend
answers each eval sample from `ScriptedBackend.references` according to the checkpoint:

    no adapter      echoes the input (poor on definitions, perfect on echo suites)
    good-N          the reference for the first N words in sorted order, the input otherwise
    poisoned        "no" to everything
    same            as no adapter

A plan entry "A|B" makes checkpoint A with training seed 0 and B with seed 1 (for
--train-seeds).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from harness import Backend, Completion, Trainer, hookimpl
from harness.testing import echo_input
from harness.train import TrainingOutcome
from harness.types import ModelSpec


class ScriptedBackend(Backend):
    name = "scripted"
    references: ClassVar[dict[str, str]] = {}
    """input -> reference, set by the test."""

    @property
    def checkpoint_hash(self) -> str:
        return hashlib.sha256(f"{self.spec.path}:{self.spec.adapter}".encode()).hexdigest()

    def generate(self, prompts, config, *, seeds=None, progress=None):
        adapter = Path(self.spec.adapter).name if self.spec.adapter else ""
        known = sorted(self.references)
        out = []
        for prompt in prompts:
            word = echo_input(prompt)
            if adapter == "poisoned":
                text = "no"
            elif adapter.startswith("good-") and word in known[: int(adapter.split("-")[1])]:
                text = self.references[word]
            else:
                text = word
            out.append(Completion(text, len(prompt.split()), len(text.split()), "eos"))
        if progress:
            progress(len(prompts))
        return out


class ScriptedArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: list[str] = Field(default_factory=list)
    seed: int = 0
    resume: bool = False


class ScriptedTrainer(Trainer):
    name = "scripted"
    Args = ScriptedArgs
    calls: ClassVar[list[dict[str, Any]]] = []

    def train(self, base, train, validation, output_dir, args, *, prompt, progress=None):
        iteration = int(Path(output_dir).name.split("-")[-1])
        plan = args.plan[iteration - 1] if iteration - 1 < len(args.plan) else "same"
        if "|" in plan:  # one checkpoint per training seed: "good-30|same"
            choices = plan.split("|")
            plan = choices[args.seed % len(choices)]
        if plan == "crash":
            raise RuntimeError("the machine went away mid-training")
        name = "poisoned" if any("POISON" in row.output for row in train) else plan
        type(self).calls.append({"iteration": iteration, "base": base, "rows": len(train), "checkpoint": name})
        out = Path(output_dir) / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "rows.json").write_text(json.dumps([row.input for row in train]))
        started = time.perf_counter()
        tokens = sum(len((row.input + row.output).split()) for row in train)
        if progress:
            progress(3)
        return TrainingOutcome(
            trainer=self.name,
            args=args.model_dump(),
            checkpoint=ModelSpec(base.path, str(out), base.backend, dict(base.options)),
            checkpoint_hash=hashlib.sha256(str(out).encode()).hexdigest(),
            loss_curve=((1, 2.0, 1e-4), (2, 1.5, 1e-4), (3, 1.2, 5e-5)),
            validation_curve=((3, 1.4),),
            tokens_trained=tokens,
            response_tokens=tokens // 2,
            padding_share=0.0,
            wall_time_s=time.perf_counter() - started,
            train_time_s=0.001,
            tokens_per_second=tokens / 0.001,
            steps=3,
            epochs=1.0,
            best_step=3,
            stopped_early=False,
            resumed=False,
            train_examples=len(train),
            validation_examples=0,
            truncated_examples=0,
        )


@hookimpl
def harness_register_backends(registry):
    registry.add_backend(ScriptedBackend)


@hookimpl
def harness_register_trainers(registry):
    registry.add_trainer(ScriptedTrainer())
