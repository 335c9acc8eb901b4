"""The `hf` backend on a tiny random Llama: batching, stopping, sampling, scoring, safety."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError, NotFoundError
from harness.plugins.backends import hf
from harness.plugins.backends.hf import (
    SharedPrefill,
    bytes_per_row,
    devices,
    fit_batch_size,
    generation,
    prefill,
)
from harness.plugins.backends.hf.continuous import _cache_argument
from harness.score.evaluate import evaluate, load_backend
from harness.suite.load import load_suite
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
    from harness.suite.prompts import PromptConfig
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


# -- shared prefill ---------------------------------------------------------------

# Prompts that share a long instruction (and so a token prefix), and draws of one prompt.
SHARED = [
    "### Instruction:\nDefine the word in one sentence.\n\n### Input:\n" + word + "\n\n### Response:\n"
    for word in ("cat", "ephemeral", "run", "gregarious", "a")
]
DRAWS = [SHARED[0]] * 3 + [SHARED[1]] * 4 + SHARED[2:]


@pytest.mark.parametrize("prompts", [SHARED, DRAWS], ids=["common-prefix", "draws"])
@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_new_tokens=10),
        GenerationConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50),
    ],
    ids=["greedy", "sampled"],
)
def test_shared_prefill_gives_the_same_outputs(tiny_model_dir, plugins, prompts, config) -> None:
    seeds = list(range(7, 7 + len(prompts)))
    plain = backend(tiny_model_dir, plugins, batch_size=4, share_prefill=False)
    shared = backend(tiny_model_dir, plugins, batch_size=4)
    expected = plain.generate(prompts, config, seeds=seeds)
    got = shared.generate(prompts, config, seeds=seeds)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in expected]
    assert [c.prompt_tokens for c in got] == [c.prompt_tokens for c in expected]
    assert plain.stats["prefill_positions_saved"] == 0
    assert shared.stats["prefill_positions_saved"] > 0
    assert shared.stats["prefill_positions"] < plain.stats["prefill_positions"]
    if not config.greedy and prompts is DRAWS:
        # The draws of one prompt differ from each other: each row keeps its own seed.
        assert len({c.text for c in got[:3]}) > 1


@pytest.mark.parametrize("prompts", [SHARED, DRAWS], ids=["common-prefix", "draws"])
def test_shared_prefill_gives_the_logits_of_an_ordinary_batch(tiny_model_dir, plugins, prompts) -> None:
    # The random tiny model's text is too flat to show small errors; its logits are not.
    b = backend(tiny_model_dir, plugins)
    batch = b.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    pad = b.tokenizer.pad_token_id
    plan = SharedPrefill.plan(batch)
    assert plan is not None and plan.prefix > 0 and plan.saved > 0
    with torch.inference_mode():
        ids, mask = prefill.layout(batch, 0, pad)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        expected = b.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        ids, mask = prefill.layout(batch, plan.prefix, pad)
        cache = plan.prefill(b.model, ids, mask)
        assert cache.get_seq_length() == plan.width - 1
        last = (mask.sum(-1, keepdim=True) - 1)  # the position of each row's last token
        got = b.model(
            input_ids=ids[:, -1:], attention_mask=mask, position_ids=last, **{_cache_argument(b.model): cache}
        ).logits[:, -1]
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_draws_of_one_prompt_prefill_it_once(tiny_model_dir, plugins) -> None:
    b = backend(tiny_model_dir, plugins, batch_size=8)
    config = GenerationConfig(max_new_tokens=4, temperature=1.0)
    b.generate([SHARED[1]] * 8, config, seeds=list(range(8)))
    width = len(b.tokenizer(SHARED[1], add_special_tokens=False)["input_ids"])
    # One pass over the prompt but its last token, then the last token of each row.
    assert b.stats["prefill_positions"] == (width - 1) + 8
    assert b.stats["prefill_positions_saved"] == 8 * width - ((width - 1) + 8)


def test_greedy_copies_of_a_prompt_are_decoded_once(tiny_model_dir, plugins) -> None:
    b = backend(tiny_model_dir, plugins, batch_size=8)
    seen: list[int] = []
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0]]
    got = b.generate(prompts, GenerationConfig(max_new_tokens=6), progress=seen.append)
    assert sum(seen) == 4  # progress counts every prompt, copies included
    assert got[0] == got[2] == got[3] and got[1].prompt_tokens != got[0].prompt_tokens
    assert b.stats["tokens"] == 12  # two distinct prompts of 6 tokens each


def test_a_shared_prefill_plan() -> None:
    batch = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [1, 2, 3, 4, 5], [1, 2, 7]]
    plan = SharedPrefill.plan(batch)
    assert plan is not None
    assert plan.prefix == 2  # at most the shortest row but one
    assert plan.distinct == (0, 1, 3) and plan.rows == (0, 1, 0, 2)
    assert plan.width == 5
    # prefix once, the rest (columns 2..3) of each distinct prompt, each row's last token
    assert plan.prefilled == 2 + 3 * 2 + 4
    assert plan.saved == 4 * 5 - plan.prefilled
    assert SharedPrefill.plan([[1, 2], [3, 4]]) is None  # nothing in common
    assert SharedPrefill.plan([[1, 2, 3]]) is None  # one row: nothing to share


def test_layout_keeps_the_shared_prefix_in_the_first_columns() -> None:
    ids, mask = prefill.layout([[5, 6, 7, 8], [5, 6, 9]], prefix=2, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 6, 0, 9]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]
    ids, mask = prefill.layout([[5, 6, 7, 8], [5, 6, 9]], prefix=0, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8], [0, 5, 6, 9]]  # plain left padding


# -- continuous batching ----------------------------------------------------------------


def _early_stops(b, prompts: list[str], steps: list[int]) -> list[int]:
    """Token ids that end prompt i's greedy output at step steps[i] when taken for EOS:
    the random tiny model never says its real EOS, so rows would all run to the limit."""
    ids = []
    for prompt, step in zip(prompts, steps):
        encoded = b.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = b.model.generate(**encoded, max_new_tokens=step, do_sample=False, pad_token_id=0)
        ids.append(int(out[0, -1]))
    return ids


CONTINUOUS = PROMPTS + SHARED  # "Hello" is one token: a row with nothing to prefill


@pytest.mark.parametrize(
    "config",
    [GenerationConfig(max_new_tokens=14), GenerationConfig(max_new_tokens=14, temperature=1.0, top_k=50)],
    ids=["greedy", "sampled"],
)
def test_rows_that_finish_leave_the_batch_and_outputs_stay_the_same(
    tiny_model_dir, plugins, monkeypatch, config
) -> None:
    one = backend(tiny_model_dir, plugins, batch_size=1, continuous=False)
    stops = _early_stops(one, CONTINUOUS[2:3], [1])  # "Hello" -> "Found": a row that ends at once
    monkeypatch.setattr(generation, "eos_token_ids", lambda tokenizer, model: [tokenizer.eos_token_id, *stops])
    seeds = list(range(3, 3 + len(CONTINUOUS)))
    alone = one.generate(CONTINUOUS, config, seeds=seeds)
    static = backend(tiny_model_dir, plugins, batch_size=3, continuous=False)
    continuous = backend(tiny_model_dir, plugins, batch_size=3)
    for b in (static, continuous):
        got = b.generate(CONTINUOUS, config, seeds=seeds)
        assert [(c.text, c.finish_reason, c.completion_tokens) for c in got] == [
            (c.text, c.finish_reason, c.completion_tokens) for c in alone
        ]
    assert {c.finish_reason for c in alone} == {"eos", "length"}
    # A static batch keeps decoding its finished rows; a continuous one never does.
    assert static.stats["finished_row_steps"] > 0 and static.stats["finished_share"] > 0
    assert continuous.stats["finished_row_steps"] == 0 and continuous.stats["finished_share"] == 0
    decoded = sum(c.completion_tokens for c in alone)
    assert continuous.stats["row_steps"] == decoded < static.stats["row_steps"]
    # Freed rows were refilled: fewer steps than one prompt at a time, and no more rows at once.
    assert continuous.stats["decode_steps"] < decoded
    assert continuous.stats["row_steps"] <= 3 * continuous.stats["decode_steps"]


def test_continuous_batch_with_stop_strings_and_shared_prefill(tiny_model_dir, plugins) -> None:
    # The tiny model answers "Hello" with "FoundFound..." and the first prompt ends in " vm".
    stopped = GenerationConfig(max_new_tokens=16, stop=("FoundFound", " vm"))
    prompts = PROMPTS + SHARED
    alone = backend(tiny_model_dir, plugins, batch_size=1, continuous=False).generate(prompts, stopped)
    b = backend(tiny_model_dir, plugins, batch_size=2)
    got = b.generate(prompts, stopped)
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in got] == [
        (c.text, c.finish_reason, c.completion_tokens) for c in alone
    ]
    assert got[2].finish_reason == "stop" and got[2].completion_tokens == 2  # left after 2 steps
    assert b.stats["finished_row_steps"] == 0
    assert b.stats["prefill_positions_saved"] > 0  # admissions share their common prefix
    assert all(c.latency_s > 0 for c in got)  # each row's share of the passes it was in


# -- padding, batch sizes, out of memory ------------------------------------------------


def test_padding_share_is_kept_and_logged(tiny_model_dir, plugins, caplog) -> None:
    b = backend(tiny_model_dir, plugins, batch_size=4, share_prefill=False)
    lengths = [len(b.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    with caplog.at_level(logging.INFO, logger=hf.__name__):
        b.generate(PROMPTS, GenerationConfig(max_new_tokens=2))
    expected = (4 * max(lengths) - sum(lengths)) / (4 * max(lengths))
    assert b.stats["padding_share"] == pytest.approx(expected)
    assert b.stats["prompt_tokens"] == sum(lengths)
    assert f"padding {100 * expected:.1f}%" in caplog.text


def _fail_above(b, limit: int, calls: list[int]) -> None:
    """Make batches (static) or admissions (continuous) of more than `limit` rows run out
    of GPU memory."""
    real_batch, real_prefill = b._generate_batch, b._prefill_rows

    def fail(rows: int) -> None:
        calls.append(rows)
        if rows > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    def generate_batch(batch, config, seeds):
        fail(len(batch))
        return real_batch(batch, config, seeds)

    def prefill_rows(prompts, call):
        fail(len(prompts))
        return real_prefill(prompts, call)

    b._generate_batch, b._prefill_rows = generate_batch, prefill_rows


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "static"])
def test_out_of_memory_halves_the_batch_and_keeps_it_halved(tiny_model_dir, plugins, caplog, continuous) -> None:
    b = backend(tiny_model_dir, plugins, batch_size=8, continuous=continuous)
    calls: list[int] = []
    _fail_above(b, 2, calls)
    prompts = PROMPTS + SHARED
    expected = backend(tiny_model_dir, plugins, batch_size=1).generate(prompts, GenerationConfig(max_new_tokens=5))
    with caplog.at_level(logging.WARNING, logger=hf.__name__):
        got = b.generate(prompts, GenerationConfig(max_new_tokens=5))
    assert [c.text for c in got] == [c.text for c in expected]
    assert calls[:3] == [8, 4, 2] and set(calls[3:]) <= {1, 2}
    assert b.batch_size == 2 and "batch size halved to 2" in caplog.text
    calls.clear()
    b.generate(PROMPTS, GenerationConfig(max_new_tokens=2))
    assert calls == [2, 2]  # the size that worked is remembered
    b = backend(tiny_model_dir, plugins, batch_size=2, continuous=continuous)
    _fail_above(b, 0, [])
    with pytest.raises(torch.cuda.OutOfMemoryError):  # even one row does not fit: say so
        b.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=2))


def test_auto_batch_on_gpu_starts_from_free_memory_and_remembers_what_fit(
    tiny_model_dir, plugins, monkeypatch
) -> None:
    b = backend(tiny_model_dir, plugins)
    free = {"bytes": 0}
    b._batch_memory = lambda: (free["bytes"], 0.8, 1024)  # as on a GPU, without one
    config = GenerationConfig(max_new_tokens=6)
    longest = max(len(b.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)
    row = bytes_per_row(b.model.config, longest + 6, b.dtype)
    free["bytes"] = int(row * 3.9 / 0.8)  # room for 3.9 rows
    calls: list[int] = []
    _fail_above(b, 1, calls)
    b.generate(PROMPTS, config)
    assert calls[:2] == [2, 1]  # 3.9 rows -> 2 (a power of two), out of memory -> 1
    assert b._fits_tokens == longest + 6
    free["bytes"] = row * 1000
    calls.clear()
    b.generate(PROMPTS, config)
    assert set(calls) == {1}  # more free memory later, but 2 rows of this length did not fit


def test_auto_batch_on_cpu_takes_a_quarter_of_the_free_ram_up_to_its_cap(
    tiny_model_dir, plugins, monkeypatch
) -> None:
    """On CPU running out of memory kills the process instead of raising, so the size is
    set from the available RAM before the batch exists; small batches waste the CPU, so
    it is as large as that allows, up to CPU_MAX_BATCH."""
    b = backend(tiny_model_dir, plugins)
    assert b.batch_size is None and b._batch_memory()[1:] == (hf.CPU_MEMORY_SHARE, hf.CPU_MAX_BATCH)
    config = GenerationConfig(max_new_tokens=4)
    prompts = PROMPTS + SHARED
    longest = max(len(b.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    row = bytes_per_row(b.model.config, longest + 4, b.dtype)
    monkeypatch.setattr(devices, "available_ram", lambda: int(row * 12 / hf.CPU_MEMORY_SHARE))  # 12 rows
    calls: list[int] = []
    _fail_above(b, 1000, calls)
    expected = backend(tiny_model_dir, plugins, batch_size=1).generate(prompts, config)
    assert [c.text for c in b.generate(prompts, config)] == [c.text for c in expected]
    assert b.batch_size == 8 and calls[0] == 8  # 12 rows fit: the power of two below
    monkeypatch.setattr(devices, "available_ram", lambda: 10**15)
    b.generate(prompts, config)
    assert b.batch_size == hf.CPU_MAX_BATCH


def test_batch_size_estimates() -> None:
    assert fit_batch_size(1000, 100) == 8  # 0.8 * 1000 / 100 = 8 rows
    assert fit_batch_size(1000, 101) == 4  # 7.9 rows -> the power of two below
    assert fit_batch_size(10, 100) == 1
    assert fit_batch_size(10**15, 1) == 1024
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1000,
    )
    fp32, bf16 = bytes_per_row(config, 100, torch.float32), bytes_per_row(config, 100, torch.bfloat16)
    kv_cache = 2 * 2 * 2 * 16 * 100 * 4  # keys and values, layers, KV heads, head dim, tokens, bytes
    assert fp32 > kv_cache and bf16 < fp32
    assert bytes_per_row(config, 200, torch.float32) > 2 * kv_cache


# -- reduced precision -----------------------------------------------------------------


@pytest.mark.parametrize("options", [{"dtype": "bfloat16"}, {"quantize": "int8"}], ids=["bfloat16", "int8"])
def test_reduced_precision_is_recorded_and_kept_apart(tiny_model_dir, plugins, harness_store, options) -> None:
    full = backend(tiny_model_dir, plugins)
    low = backend(tiny_model_dir, plugins, **options)
    assert full.output_hash == full.checkpoint_hash  # float32 keys stay what they were
    assert low.output_hash != low.checkpoint_hash == full.checkpoint_hash
    described = low.describe()
    assert (described["dtype"], described["quantize"]) == (
        options.get("dtype", "float32"), options.get("quantize", "none"))
    assert len(low.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=4))) == 2
    suite = load_suite(Path(__file__).parent / "data" / "echo_suite")
    first = evaluate(suite, ModelSpec(str(tiny_model_dir)), harness_store, plugins)
    second = evaluate(suite, ModelSpec(str(tiny_model_dir), options=options), harness_store, plugins)
    # Not served from the float32 cache, and a run of its own.
    assert second.generated == first.generated > 0 and second.cached == 0
    assert second.run_id != first.run_id


def test_int8_needs_cpu_and_float32(tiny_model_dir, plugins) -> None:
    with pytest.raises(ConfigError, match="quantize=int8 runs on CPU in float32"):
        backend(tiny_model_dir, plugins, quantize="int8", dtype="bfloat16")
