"""Generating with the hf backend, with and without a shared-prefix KV cache, prints no
library warnings: transformers 5 renamed `past_key_values` to `cache`, and the old name
warned twice per generation."""

from __future__ import annotations

import warnings

import pytest

from harness.components.plugin_manager import load_plugins
from harness.score.evaluate import load_backend
from harness.types import GenerationConfig, ModelSpec

pytestmark = pytest.mark.slow

PROMPTS = [
    "### Instruction:\nSay hi.\n\n### Response:\n",
    "### Instruction:\nSay hello there.\n\n### Response:\n",
]


def test_generation_emits_no_future_warning(tiny_model_dir) -> None:
    backend = load_backend(ModelSpec(str(tiny_model_dir)), load_plugins(autoload=False).registry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=4))
    assert len(out) == 2
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
