"""The `teacher` data source: a stronger model writes new examples for a cluster.

For each failing sample (round-robin, `per_example` times each, until the budget), the
teacher is shown the task's instruction, the kind of input the task takes (the failing
sample's input, which it is told not to reuse) and the sample's tags, and asked for one
new example with its answer. It never sees the eval reference or the model's output:
whatever it writes is its own answer to its own question. Replies are parsed as a JSON
object ({"input": ..., "output": ...}) or as two lines ("Input: ..." / "Output: ..."),
whichever the reply holds; the rest are dropped and counted (`teacher_unparsable`), as
are examples that reuse an eval input (`teacher_eval_input`).

Any backend plugin can serve as the teacher (`backend`, `backend_options`); the model
is loaded through `DataRequest.make_backend` and closed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import (
    ConfigError,
    DataRequest,
    DataSource,
    Failure,
    GenerationConfig,
    ModelSpec,
    PromptConfig,
    Sample,
    TrainingExample,
    hookimpl,
)

REPLY_FORMATS = {
    "json": 'Reply with one JSON object and nothing else: {"input": "<the new input>", "output": "<its answer>"}',
    "lines": "Reply with exactly two lines and nothing else:\nInput: <the new input>\nOutput: <its answer>",
}

DEFAULT_TEMPLATE = """You write new training examples for a language model.

The task: {instruction}
The kind of input it takes, for example: {input}
{tags}
Write ONE new example of this task with a different input (not {input_quoted}), and the correct answer.
{reply_format}"""


class TeacherArgs(BaseModel):
    """Arguments of the `teacher` source, with their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "default"
    """Model path (or 'default') for the backend to load."""
    backend: str = "hf"
    backend_options: dict[str, Any] = Field(default_factory=dict)
    adapter: str | None = None
    per_example: int = Field(2, ge=1)
    """Examples asked for per failing sample (one prompt each, different seeds)."""
    max_new_tokens: int = Field(128, ge=8)
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    prompt_format: Literal["instruction", "chat"] = "instruction"
    """How the teacher's prompt is wrapped: the instruction template, or the teacher's chat template."""
    reply_format: Literal["json", "lines"] = "json"
    """What the prompt asks for; both formats are parsed either way."""
    template: str | None = None
    """A replacement prompt: a format string over {instruction}, {input}, {input_quoted},
    {tags} and {reply_format}."""


# "Input: ..." then "Output: ...", tolerating markdown bold around the labels.
_LINES = re.compile(
    r"^\s*\**input\**\s*:\s*\**\s*(?P<input>.*?)\s*\n+\s*\**output\**\s*:\s*\**\s*(?P<output>.+)",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)
_FENCE = re.compile(r"```(?:json)?")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1].strip()
    return text


def parse_reply(text: str) -> tuple[str, str] | None:
    """(input, output) from a teacher's reply, or None when it holds neither format."""
    cleaned = _FENCE.sub("", text)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", cleaned):
        try:
            value, _ = decoder.raw_decode(cleaned, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            input, output = value.get("input"), value.get("output")
            if (
                isinstance(input, (str, int, float))
                and isinstance(output, (str, int, float))
                and str(output).strip()
            ):
                return str(input).strip(), str(output).strip()
    lines = _LINES.search(cleaned)
    if lines:
        output = _unquote(lines.group("output").strip().splitlines()[0])
        if output:
            return _unquote(lines.group("input")), output
    return None


def teacher_prompt(failure: Failure, args: TeacherArgs) -> str:
    """The request for one new example: instruction and kind of input, never the
    reference or the model's output."""
    sample = failure.sample
    has_input = bool(sample.input.strip())
    instruction = sample.instruction if has_input else "Answer the question."
    example_input = sample.input if has_input else sample.instruction
    tags = f"Topics: {', '.join(sample.tags)}\n" if sample.tags else ""
    return (args.template or DEFAULT_TEMPLATE).format(
        instruction=instruction,
        input=example_input,
        input_quoted=json.dumps(example_input, ensure_ascii=False),
        tags=tags,
        reply_format=REPLY_FORMATS[args.reply_format],
    )


class TeacherSource(DataSource):
    """New examples in the style of the failing ones, written by a stronger model
    through any backend; the teacher never sees eval references or model outputs.
    Defaults: the default model on the hf backend, 2 examples per failing sample,
    temperature 0.8, JSON replies."""

    name = "teacher"
    description = "new examples written by a stronger model (any backend)"
    Args = TeacherArgs

    def gather(self, request: DataRequest, args: BaseModel) -> list[TrainingExample]:
        a: TeacherArgs = args  # type: ignore[assignment]
        if request.make_backend is None:
            raise ConfigError("the teacher source needs a way to load models (DataRequest.make_backend)")
        if a.template is not None:
            try:
                a.template.format(instruction="", input="", input_quoted="", tags="", reply_format="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"teacher template: {exc}; it may use {{instruction}}, {{input}}, "
                    "{input_quoted}, {tags} and {reply_format}"
                ) from None
        jobs = [(failure, round_) for round_ in range(a.per_example) for failure in request.failures][
            : request.budget
        ]
        if not jobs:
            return []
        spec = ModelSpec(path=a.model, adapter=a.adapter, backend=a.backend, options=dict(a.backend_options))
        config = GenerationConfig(
            max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, seed=request.seed
        )
        seeds = request.rng(salt=7).integers(0, 2**31 - 1, size=len(jobs)).tolist()
        backend = request.make_backend(spec)
        try:
            prompt_config = PromptConfig(format=a.prompt_format)
            prompts = [
                backend.format_prompt(
                    Sample(id=f"teacher-{i}", instruction=teacher_prompt(f, a)), prompt_config
                )
                for i, (f, _) in enumerate(jobs)
            ]
            with request.progress().task(
                f"teacher writing {len(prompts)} examples (cluster {request.cluster.id})", len(prompts)
            ) as advance:
                completions = backend.generate(prompts, config, seeds=seeds, progress=advance)
        finally:
            backend.close()
        out: list[TrainingExample] = []
        unparsable = reused = 0
        for (failure, round_), prompt, seed, completion in zip(jobs, prompts, seeds, completions):
            parsed = parse_reply(completion.text)
            if parsed is None:
                unparsable += 1
                continue
            new_input, output = parsed
            if failure.sample.input.strip():
                instruction, input = failure.sample.instruction, new_input
            else:
                instruction, input = new_input, ""
            if not (instruction.strip() or input.strip()) or request.is_excluded(instruction, input):
                reused += 1
                continue
            out.append(
                TrainingExample(
                    instruction=instruction,
                    input=input,
                    output=output,
                    source=self.name,
                    cluster=request.cluster.id,
                    provenance={
                        "teacher": a.model,
                        "backend": a.backend,
                        "seed_sample": failure.sample.id,
                        "round": round_,
                        "generation_seed": int(seed),
                        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                    },
                )
            )
        request.drop("teacher_unparsable", unparsable)
        request.drop("teacher_eval_input", reused)
        return out


@hookimpl
def harness_register_data_sources(registry: Any) -> None:
    registry.add_data_source(TeacherSource())
