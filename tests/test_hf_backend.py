"""The `hf` backend on a tiny random Llama: batching, stopping, sampling, scoring, safety."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from harness.errors import ConfigError, NotFoundError
from harness.evaluate import evaluate, load_backend
from harness.plugin_manager import load_plugins
from harness.suite import load_suite
from harness.types import GenerationConfig, ModelSpec

pytestmark = pytest.mark.slow

PROMPTS = [
    "### Instruction:\nDefine the word.\n\n### Input:\ncat\n\n### Response:\n",
    "### Instruction:\nWrite the number in words.\n\n### Input:\n4,317\n\n### Response:\n",
    "Hello",
    "### Instruction:\nA much longer instruction that pads the batch with more tokens than the others.\n\n### Response:\n",
]


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(autoload=False)


def backend(tiny: Path, plugins, **options):
    return load_backend(ModelSpec(str(tiny), options=options), plugins.registry)


def test_greedy_outputs_do_not_depend_on_batch_size(tiny_model_dir, plugins) -> None:
    config = GenerationConfig(max_new_tokens=12)
    single = backend(tiny_model_dir, plugins, batch_size=1).generate(PROMPTS, config)
    batched = backend(tiny_model_dir, plugins, batch_size=4).generate(PROMPTS, config)
    assert [c.text for c in single] == [c.text for c in batched]
    assert all(c.prompt_tokens > 0 for c in batched)
    # Random weights never say EOS within 12 tokens: every row hits the limit.
    assert {c.finish_reason for c in batched} == {"length"}
    assert {c.completion_tokens for c in batched} == {12}


def test_stop_strings_cut_the_output_and_say_so(tiny_model_dir, plugins) -> None:
    b = backend(tiny_model_dir, plugins, batch_size=4)
    free = b.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=24))[0]
    stop = free.text[len(free.text) // 2 : len(free.text) // 2 + 3]
    assert stop.strip(), "need a visible stop string from the free output"
    stopped = b.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=24, stop=(stop,)))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.completion_tokens < 24
    # The stop-string checker is built once per set of strings and reused.
    b.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=4, stop=(stop,)))
    assert len(b._stop_criteria) == 1


def test_finish_reasons_from_token_ids(tiny_model_dir, plugins) -> None:
    b = backend(tiny_model_dir, plugins)
    eos = b.tokenizer.eos_token_id
    hello = b.tokenizer("hello there", add_special_tokens=False)["input_ids"]
    config = GenerationConfig(max_new_tokens=len(hello) + 2, stop=("there",))
    assert b._finish(hello + [eos, eos], GenerationConfig(max_new_tokens=8), [eos]) == ("hello there", "eos", len(hello) + 1)
    assert b._finish(hello + [eos, eos], config, [eos]) == ("hello ", "stop", len(hello))
    assert b._finish(hello, GenerationConfig(max_new_tokens=len(hello)), [eos])[1:] == ("length", len(hello))


def test_sampling_is_seeded_per_sample_not_per_batch(tiny_model_dir, plugins) -> None:
    config = GenerationConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50)
    seeds = [11, 22, 33, 44]
    together = backend(tiny_model_dir, plugins, batch_size=4).generate(PROMPTS, config, seeds=seeds)
    reversed_order = backend(tiny_model_dir, plugins, batch_size=1).generate(
        PROMPTS[::-1], config, seeds=seeds[::-1]
    )[::-1]
    assert [c.text for c in together] == [c.text for c in reversed_order]
    other_seed = backend(tiny_model_dir, plugins).generate(PROMPTS, config, seeds=[1, 2, 3, 4])
    assert [c.text for c in other_seed] != [c.text for c in together]


def test_loglikelihood_equals_a_plain_forward_pass(tiny_model_dir, plugins) -> None:
    b = backend(tiny_model_dir, plugins, score_batch_size=2)
    contexts = [PROMPTS[0], PROMPTS[1], PROMPTS[3]]
    continuations = ["a small animal", "four thousand three hundred seventeen", "ok"]
    got = b.loglikelihood(contexts, continuations)
    tok = b.tokenizer
    for (nll, n), ctx, cont in zip(got, contexts, continuations):
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        cont_ids = tok(cont, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx_ids + cont_ids])
        with torch.no_grad():
            logprobs = b.model(input_ids=ids).logits[0].log_softmax(-1)
        expected = -sum(logprobs[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))
        assert n == len(cont_ids)
        assert nll == pytest.approx(expected, rel=1e-4)


def test_weights_load_only_when_needed(tiny_model_dir, plugins) -> None:
    b = backend(tiny_model_dir, plugins)
    assert b._model is None  # hashing and prompt formatting need no weights
    assert len(b.checkpoint_hash) == 64
    assert b.describe()["architecture"] == "LlamaForCausalLM"
    b.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=2))
    assert b._model is not None


def test_pickle_weights_are_refused_unless_allowed(tiny_model_dir, plugins, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    unsafe = tmp_path / "pickled"
    unsafe.mkdir()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.save(model.state_dict(), unsafe / "pytorch_model.bin")  # a pickle, as old checkpoints ship
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, unsafe / name)
    with pytest.raises(ConfigError, match="no .safetensors weights.*allow_pickle=true"):
        backend(unsafe, plugins)
    allowed = backend(unsafe, plugins, allow_pickle=True)
    assert allowed.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=2))[0].completion_tokens == 2


def test_bad_paths_and_options_are_clear_errors(tiny_model_dir, plugins, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        backend(tmp_path / "missing", plugins)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        backend(tmp_path / "empty", plugins)
    with pytest.raises(NotFoundError, match="adapter path"):
        load_backend(ModelSpec(str(tiny_model_dir), adapter=str(tmp_path / "nope")), plugins.registry)
    with pytest.raises(ConfigError, match="option 'batch_sise'.*batch_size"):
        backend(tiny_model_dir, plugins, batch_sise=4)


def test_chat_format_uses_the_tokenizers_template(tiny_model_dir, plugins, tmp_path: Path) -> None:
    from harness.prompts import PromptConfig
    from harness.testing import sample

    b = backend(tiny_model_dir, plugins)
    text = b.format_prompt(sample(instruction="Define.", input="cat"), PromptConfig(format="chat", system="Be brief."))
    assert "<|im_start|>system\nBe brief.<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    plain = b.format_prompt(sample(instruction="Define.", input="cat"), PromptConfig())
    assert plain == "### Instruction:\nDefine.\n\n### Input:\ncat\n\n### Response:\n"


def test_evaluate_through_the_hf_backend(tiny_model_dir, plugins, harness_store) -> None:
    suite = load_suite(Path(__file__).parent / "data" / "echo_suite")
    summary = evaluate(suite, ModelSpec(str(tiny_model_dir)), harness_store, plugins)
    assert summary.status == "completed" and summary.generated == 8
    again = evaluate(suite, ModelSpec(str(tiny_model_dir)), harness_store, plugins)
    assert again.generated == 0 and again.cached == 8
