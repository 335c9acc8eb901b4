"""Training rows as model inputs: the instruction template, with the loss on the response only."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError, TrainingError
from harness.suite.prompts import PromptConfig, render_prompt
from harness.types import Sample, TrainingExample

IGNORE_INDEX = -100
"""The label that excludes a position from the loss (PyTorch's cross-entropy default)."""

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
