"""Prompt formats shared by evaluation and training.

The instruction template (`### Instruction:` / `### Input:` / `### Response:`) is the
default: training puts the loss on what follows `### Response:` and evaluation asks
the model to continue from there, so the two always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from harness.errors import ConfigError
from harness.types import Sample

RESPONSE_MARKER = "### Response:\n"


class PromptConfig(BaseModel):
    """How a sample becomes the text the model continues."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["instruction", "chat", "custom"] = "instruction"
    template: str | None = None
    """For format=custom: a Python format string over {instruction} and {input}."""
    system: str | None = None
    """For format=chat: an optional system message."""

    @model_validator(mode="after")
    def _template_matches_format(self) -> PromptConfig:
        if self.format == "custom" and not self.template:
            raise ValueError("format 'custom' needs a 'template' such as 'Q: {input}\\nA:'")
        if self.format != "custom" and self.template:
            raise ValueError(f"'template' is only used with format 'custom', not {self.format!r}")
        if self.template:
            try:
                self.template.format(instruction="", input="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"template may only use {{instruction}} and {{input}}: {exc}"
                ) from None
        return self


def instruction_prompt(instruction: str, input: str = "") -> str:
    """The instruction template, ending just before the response text."""
    parts = [f"### Instruction:\n{instruction.strip()}\n\n"]
    if input.strip():
        parts.append(f"### Input:\n{input.strip()}\n\n")
    parts.append(RESPONSE_MARKER)
    return "".join(parts)


ChatTemplate = Callable[[list[dict[str, str]]], str]


def render_prompt(
    sample: Sample, config: PromptConfig, chat_template: ChatTemplate | None = None
) -> str:
    """The prompt text for one sample, in the configured format."""
    if config.format == "instruction":
        return instruction_prompt(sample.instruction, sample.input)
    if config.format == "custom":
        assert config.template is not None
        return config.template.format(instruction=sample.instruction, input=sample.input)
    if chat_template is None:
        raise ConfigError(
            "prompt format 'chat' needs a tokenizer with a chat template, and this model has "
            "none; use format: instruction"
        )
    user = "\n\n".join(part.strip() for part in (sample.instruction, sample.input) if part.strip())
    messages = []
    if config.system:
        messages.append({"role": "system", "content": config.system})
    messages.append({"role": "user", "content": user})
    return chat_template(messages)
