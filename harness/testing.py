"""Pytest fixtures and builders for plugin authors (and the harness's own tests).

Installed as a pytest plugin (entry point `pytest11`), so these fixtures are available
in any project that has the harness installed:

    def test_my_detector(harness_plugins, make_item):
        plugins = harness_plugins(my_plugin_module)
        detector = plugins.registry.detector("my_detector")
        issues = detector.detect([make_item("some output")], detector.Args())
        assert not list(issues[0])

Fixtures:
    harness_plugins  make a fresh plugin manager with your plugin registered
    mock_backend     a backend class ("mock") that answers from a function, no model
    make_sample      build a Sample with sensible defaults
    make_item        build an Item (sample + generation) from an output string
    harness_store    a writable store in a temporary directory
    tiny_model_dir   a 2-layer Llama with the SmolLM2 tokenizer (random weights), cached
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from harness.components.contracts import Backend, Progress
from harness.components.hookspecs import hookimpl
from harness.types import Completion, FinishReason, Generation, GenerationConfig, Item, ModelSpec, Sample

TINY_MODEL_VERSION = "1"


def sample(
    id: str = "s1",
    *,
    instruction: str = "Answer the question.",
    input: str = "",
    reference: str | Sequence[str] = "",
    tags: Sequence[str] = (),
    group: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Sample:
    """A Sample with defaults for everything but what the test cares about."""
    references = (reference,) if isinstance(reference, str) else tuple(reference)
    return Sample(
        id=id,
        instruction=instruction,
        input=input,
        references=references,
        tags=tuple(tags),
        group=group,
        metadata=metadata or {},
    )


def item(
    output: str,
    *,
    reference: str | Sequence[str] = "",
    input: str = "",
    id: str = "s1",
    instruction: str = "Answer the question.",
    finish_reason: str = "eos",
    completion_tokens: int | None = None,
    draws: Sequence[str] = (),
    group: str | None = None,
    tags: Sequence[str] = (),
    reference_nll: float | None = None,
    reference_tokens: int | None = None,
) -> Item:
    """An Item whose draw-0 output is `output` (and extra draws from `draws`)."""
    s = sample(id, instruction=instruction, input=input, reference=reference, tags=tags, group=group)
    tokens = completion_tokens if completion_tokens is not None else len(output.split())
    gen = Generation(
        sample_id=id,
        text=output,
        completion_tokens=tokens,
        finish_reason=finish_reason,  # type: ignore[arg-type]
    )
    extra = tuple(
        Generation(sample_id=id, text=text, draw=i + 1, completion_tokens=len(text.split()))
        for i, text in enumerate(draws)
    )
    return Item(s, gen, extra, reference_nll, reference_tokens)


class MockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1, description="Accepted and ignored: a speed-only option, for tests.")


def echo_input(prompt: str) -> str:
    """The text under `### Input:` of an instruction prompt (else the prompt's last line)."""
    if "### Input:\n" in prompt:
        return prompt.split("### Input:\n", 1)[1].split("\n\n### Response:", 1)[0].strip()
    lines = [line for line in prompt.strip().splitlines() if line.strip() and not line.startswith("###")]
    return lines[-1] if lines else ""


class MockBackend(Backend):
    """A backend without a model: answers come from `MockBackend.responder(prompt)`
    (by default: echo the prompt's input).

    Set `MockBackend.responder` (a class attribute) in a test to control outputs. Every
    call is counted in `MockBackend.calls` so tests can check what was generated."""

    name = "mock"
    description = "answers from a Python function; for tests"
    Options = MockOptions
    speed_only_options = frozenset({"batch_size"})
    responder: Callable[[str], str] = staticmethod(echo_input)
    calls: list[str] = []

    @property
    def checkpoint_hash(self) -> str:
        return hashlib.sha256(f"mock:{self.spec.path}:{self.spec.adapter}".encode()).hexdigest()

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        *,
        seeds: Sequence[int] | None = None,
        progress: Progress | None = None,
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            type(self).calls.append(prompt)
            text = type(self).responder(prompt)
            for stop in config.stop:
                if stop in text:
                    text = text[: text.index(stop)]
            words = text.split()
            finish: FinishReason = "length" if len(words) > config.max_new_tokens else "eos"
            if finish == "length":
                text = " ".join(words[: config.max_new_tokens])
            out.append(Completion(text, len(prompt.split()), len(text.split()), finish))
        if progress:
            progress(len(prompts))
        return out

    def loglikelihood(
        self, contexts: Sequence[str], continuations: Sequence[str], *, progress: Progress | None = None
    ) -> list[tuple[float, int]]:
        # A deterministic stand-in: longer continuations are less likely.
        return [(0.5 * len(c.split()), max(len(c.split()), 1)) for c in continuations]


class _MockBackendPlugin:
    @staticmethod
    @hookimpl
    def harness_register_backends(registry: Any) -> None:
        registry.add_backend(MockBackend)


mock_backend_plugin = _MockBackendPlugin()
"""Register this (e.g. `load_plugins(extra=[(mock_backend_plugin, "mock")])`) to get `--backend mock`."""


def build_tiny_model(target: Path) -> Path:
    """A randomly initialised 2-layer Llama with the SmolLM2 tokenizer, saved to `target`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from harness.generate.checkpoints import gguf_path

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / "harness-tiny.json").write_text(json.dumps({"version": TINY_MODEL_VERSION}))
    return target


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def make_sample() -> Callable[..., Sample]:
    return sample


@pytest.fixture
def make_item() -> Callable[..., Item]:
    return item


@pytest.fixture
def harness_plugins() -> Callable[..., Any]:
    """`harness_plugins(*modules_or_objects, autoload=False)` -> a fresh `Plugins`."""
    from harness.components.plugin_manager import load_plugins

    def make(*plugins: ModuleType | object, autoload: bool = False, with_mock: bool = True) -> Any:
        extra = [(p, getattr(p, "__name__", type(p).__name__)) for p in plugins]
        if with_mock:
            extra.append((mock_backend_plugin, "harness.testing.mock"))
        return load_plugins(autoload=autoload, extra=extra)

    return make


@pytest.fixture
def mock_backend() -> Iterator[type[MockBackend]]:
    """The mock backend class, reset before and after the test."""
    MockBackend.calls = []
    original = MockBackend.responder
    yield MockBackend
    MockBackend.responder = original
    MockBackend.calls = []


@pytest.fixture
def harness_store(tmp_path: Path) -> Iterator[Any]:
    from harness.store import Store

    store = Store.writer(tmp_path / "store.duckdb")
    yield store
    store.close()


@pytest.fixture(scope="session")
def tiny_model_dir(request: pytest.FixtureRequest) -> Path:
    """Built once and kept in pytest's cache directory between sessions (in the temporary
    directory when the cache is off, `-p no:cacheprovider`)."""
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("harness-tiny-model")) if cache is not None else Path(tempfile.gettempdir()) / "harness-tiny-model"
    target = root / f"v{TINY_MODEL_VERSION}"
    marker = target / "harness-tiny.json"
    if not marker.is_file():
        build_tiny_model(target)
    return target


def mock_spec(path: str = "mock-model", adapter: str | None = None) -> ModelSpec:
    return ModelSpec(path=path, adapter=adapter, backend="mock")
