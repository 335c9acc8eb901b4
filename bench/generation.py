"""Generation throughput of the `hf` backend against a plain one-prompt-at-a-time
`model.generate` loop and lm-evaluation-harness's HF backend, in one run.

    python bench/generation.py                        # default model, 64 dictionary prompts
    python bench/generation.py --batch-sizes 8,32 --prompts 64 --max-new-tokens 48 --repeats 3
    python bench/generation.py --skip-lm-eval --skip-loop --draws 0

Every configuration decodes greedily with the same weights (float32, CPU), the same
prompts (the dictionary suite's instruction prompts), the same batch size and token
limit, stopping at EOS only:

- harness hf, batch b: `HFBackend.generate` (length-sorted batches, left padding, the
  KV cache, the shared prefill of what the prompts have in common);
- harness hf, no shared prefill: the same at one batch size with share_prefill=false,
  to show what sharing the prompt prefix saves;
- lm-eval HFLM, batch b: `lm_eval.models.huggingface.HFLM.generate_until` (lm-eval
  0.4.13, `pip install lm-eval==0.4.13`; optional, only this script needs it) on its
  own copy of the model loaded from the same directory;
- plain loop: one `model.generate` call per prompt, no batching, on the harness's model.

The configurations are measured in turns (each repeat runs all of them once), and each
figure is the median of the repeats with the median 1-minute load average beside it:
the machine is shared with other jobs. Generated tokens are counted up to and including
EOS, from the harness's own count, for every configuration whose text matches. The
script checks that all configurations produce the same text and prints each
difference it finds. Beside each batch size it prints the bound of bench/bound.py.

--draws k (default 4) also times sampled draws (temperature 0.8, one seed per draw):
k draws of each of the first 16 prompts, with and without the shared prefill, which
prefills each prompt once for all its draws; the outputs must be identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import Timing, describe, load_average, machine, timed, write_json  # noqa: E402


def dictionary_prompts(n: int) -> list[str]:
    from harness.prompts import instruction_prompt
    from harness.suite import load_suite

    suite = load_suite("dictionary")
    return [instruction_prompt(s.instruction, s.input) for s in suite.samples[:n]]


def plain_loop(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The baseline: one `generate` call per prompt, no batching."""
    import torch

    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return texts


def lm_eval_model(model_dir: str, batch_size: int) -> Any:
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model_dir, batch_size=batch_size, device="cpu", dtype="float32")


def lm_eval_generate(lm: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """lm-eval's own batched greedy generation: `generate_until` over `Instance`s."""
    from lm_eval.api.instance import Instance

    lm.batch_size_per_gpu = batch_size
    gen_kwargs = {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False}
    requests = [
        Instance(request_type="generate_until", doc={}, arguments=(prompt, dict(gen_kwargs)), idx=i)
        for i, prompt in enumerate(prompts)
    ]
    return list(lm.generate_until(requests, disable_tqdm=True))


@dataclass
class Config:
    name: str
    batch_size: int | None
    run: Callable[[], list[str]]
    timing: Timing = field(default_factory=Timing)
    texts: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="4,8,16,32,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-share-batch", type=int, default=32, help="batch size of the run without shared prefill")
    parser.add_argument("--draws", type=int, default=4, help="sampled draws per prompt for the draw timing (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import torch
    from bound import decode_bound, measure_limits, model_figures, summary

    from harness.checkpoints import resolve_model_dir
    from harness.evaluate import load_backend
    from harness.plugin_manager import load_plugins
    from harness.types import GenerationConfig, ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)  # converts the default model once
    prompts = dictionary_prompts(args.prompts)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    plugins = load_plugins(autoload=False)
    harness = load_backend(ModelSpec(str(model_dir)), plugins.registry)
    plain = load_backend(ModelSpec(str(model_dir), options={"share_prefill": False}), plugins.registry)
    plain._model = harness.model  # the same weights in memory: only the prefill differs
    warm = GenerationConfig(max_new_tokens=2)
    harness.generate(prompts[:2], warm)

    def harness_run(backend: Any, batch_size: int) -> Callable[[], list[str]]:
        def run() -> list[str]:
            backend.batch_size = batch_size
            completions = backend.generate(prompts, config)
            last_call[backend] = completions
            return [c.text for c in completions]

        return run

    last_call: dict[Any, Any] = {}
    configs = [Config(f"harness hf, batch {b}", b, harness_run(harness, b)) for b in batch_sizes]
    configs.append(
        Config(f"harness hf, batch {args.no_share_batch}, no shared prefill", args.no_share_batch,
               harness_run(plain, args.no_share_batch))
    )
    if not args.skip_lm_eval:
        lm = lm_eval_model(str(model_dir), batch_sizes[0])
        lm_eval_generate(lm, prompts[:2], 2, 2)  # warm up
        for b in batch_sizes:
            configs.append(
                Config(f"lm-eval HFLM, batch {b}", b,
                       lambda b=b: lm_eval_generate(lm, prompts, args.max_new_tokens, b))
            )
    if not args.skip_loop:
        configs.append(
            Config("plain generate loop, 1 prompt at a time", 1,
                   lambda: plain_loop(harness.model, harness.tokenizer, prompts, args.max_new_tokens))
        )

    info = machine()
    print(describe(info))
    print(f"{len(prompts)} dictionary prompts, greedy, max_new_tokens={args.max_new_tokens}, stop at EOS, "
          f"{args.repeats} repeats in turns, median reported\n", flush=True)
    reference_tokens: list[int] = []
    for repeat in range(args.repeats):
        for cfg in configs:
            texts, seconds = timed(cfg.run)
            cfg.timing.add(seconds)
            cfg.texts = texts
            if cfg is configs[0] and not reference_tokens:
                reference_tokens = [c.completion_tokens for c in last_call[harness]]
            print(f"  repeat {repeat + 1}: {cfg.name:46} {seconds:7.2f} s  load {cfg.timing.loads[-1]:.2f}",
                  flush=True)
        harness_stats = dict(harness.stats)

    # Tokens: the harness's count (to EOS inclusive) for every prompt whose text matches.
    reference = configs[0].texts
    tokenizer = harness.tokenizer

    def tokens_of(texts: list[str]) -> int:
        total = 0
        for text, ref_text, ref_tokens in zip(texts, reference, reference_tokens, strict=True):
            if text == ref_text:
                total += ref_tokens
            else:  # a different output: count its own tokens (+ EOS when it stopped early)
                n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                total += n + (n < args.max_new_tokens)
        return total

    loop = next((c for c in configs if c.name.startswith("plain")), None)
    loop_rate = tokens_of(loop.texts) / loop.timing.median if loop else None
    limits = measure_limits()
    figures = model_figures(model_dir)
    context = round(
        statistics.mean(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        + statistics.mean(reference_tokens) / 2
    )
    print()
    for line in summary(figures, limits):
        print(line)
    print(f"bound: one decoding step at {context} positions per row (the mean prompt + half the mean output)\n")
    header = (f"{'configuration':46} {'tokens':>6} {'median s':>8} {'spread s':>11} {'tok/s':>7} {'vs loop':>7} "
              f"{'bound':>6} {'load':>5}  same text as batch {configs[0].batch_size}")
    print(header)
    print("-" * len(header))
    rows = []
    for cfg in configs:
        tokens = tokens_of(cfg.texts)
        rate = tokens / cfg.timing.median
        bound = decode_bound(figures, limits, cfg.batch_size or 1, context)["bound_tok_s"]
        differing = [i for i, (a, b) in enumerate(zip(cfg.texts, reference)) if a != b]
        vs_loop = f"{rate / loop_rate:.1f}x" if loop_rate else "-"
        print(f"{cfg.name:46} {tokens:6d} {cfg.timing.median:8.2f} {cfg.timing.spread():>11} {rate:7.1f} "
              f"{vs_loop:>7} {bound:6.0f} {cfg.timing.load:5.2f}  "
              f"{'yes' if not differing else f'no: {len(differing)} of {len(reference)} differ'}")
        rows.append({
            "name": cfg.name, "batch_size": cfg.batch_size, "tokens": tokens, "seconds": cfg.timing.seconds,
            "median_s": cfg.timing.median, "loads": cfg.timing.loads, "tok_s": rate, "bound_tok_s": bound,
            "vs_loop": rate / loop_rate if loop_rate else None, "differing": differing,
        })
    for cfg, row in zip(configs, rows):
        for i in row["differing"][:3]:
            print(f"\n{cfg.name}, prompt {i} ({prompts[i].split('### Input:')[-1].split()[0]!r}):\n"
                  f"  reference: {reference[i]!r}\n  this:      {cfg.texts[i]!r}")

    best = max((r for r in rows if r["name"].startswith("harness hf, batch") and "no shared" not in r["name"]),
               key=lambda r: r["tok_s"])
    lm_rows = [r for r in rows if r["name"].startswith("lm-eval")]
    lm_same = next((r for r in lm_rows if r["batch_size"] == best["batch_size"]), None)
    lm_best = max(lm_rows, key=lambda r: r["tok_s"]) if lm_rows else None
    print(f"\nharness padding share (last call) {harness_stats['padding_share']:.1%}; shared prefill spared "
          f"{harness_stats['prefill_positions_saved'] / max(harness_stats['prefill_positions'] + harness_stats['prefill_positions_saved'], 1):.0%} "
          f"of the prompt positions")
    print(f"best harness batch size {best['batch_size']}: {best['tok_s']:.1f} tok/s", end="")
    if best["vs_loop"]:
        print(f", {best['vs_loop']:.1f}x the plain loop", end="")
    if lm_same:
        print(f", {best['tok_s'] / lm_same['tok_s']:.2f}x lm-eval at the same batch size", end="")
    if lm_best:
        print(f", {best['tok_s'] / lm_best['tok_s']:.2f}x lm-eval at its best (batch {lm_best['batch_size']})", end="")
    identical = all(not r["differing"] for r in rows)
    print(f"; greedy outputs identical across all configurations: {'yes' if identical else 'no'}")

    draws = measure_draws(args, harness, plain, prompts, GenerationConfig) if args.draws else None
    write_json(args.json, {
        "machine": info, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "rows": rows, "best": best, "lm_eval_same_batch": lm_same, "lm_eval_best": lm_best,
        "identical": identical, "limits": limits, "context": context, "draws": draws,
        "padding_share": harness_stats["padding_share"],
    })


def measure_draws(args: argparse.Namespace, harness: Any, plain: Any, prompts: list[str], config_type: Any) -> dict:
    """Sampled draws of the same prompts with and without the shared prefill, in turns."""
    base = prompts[:16]
    draw_prompts = [p for p in base for _ in range(args.draws)]
    seeds = list(range(len(draw_prompts)))
    config = config_type(max_new_tokens=args.max_new_tokens, temperature=0.8)
    batch = 32
    timings = {"shared": Timing(), "not shared": Timing()}
    texts: dict[str, list[str]] = {}
    saved = positions = 0
    for _ in range(args.repeats):
        for name, backend in (("shared", harness), ("not shared", plain)):
            backend.batch_size = batch
            before = dict(backend.stats)
            completions, seconds = timed(lambda b=backend: b.generate(draw_prompts, config, seeds=seeds))
            timings[name].add(seconds)
            texts[name] = [c.text for c in completions]
            if name == "shared":
                saved = backend.stats["prefill_positions_saved"] - before["prefill_positions_saved"]
                positions = backend.stats["prefill_positions"] - before["prefill_positions"] + saved
    same = texts["shared"] == texts["not shared"]
    tokens = sum(len(harness.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts["shared"])
    print(f"\nsampled draws: {len(base)} prompts x {args.draws} draws at temperature 0.8, batch {batch}, "
          f"{args.repeats} repeats in turns (load {load_average():.2f})")
    for name, timing in timings.items():
        print(f"  {name:11} {timing.median:7.2f} s median ({timing.spread()} s), ~{tokens / timing.median:.1f} tok/s, "
              f"load {timing.load:.2f}")
    gain = timings["not shared"].median / timings["shared"].median
    print(f"  the shared prefill computed {positions - saved} of {positions} prompt positions "
          f"({saved / max(positions, 1):.0%} spared): {gain:.2f}x; outputs identical: {'yes' if same else 'no'}")
    return {
        "prompts": len(base), "draws": args.draws, "batch": batch,
        "shared_s": timings["shared"].seconds, "not_shared_s": timings["not shared"].seconds,
        "shared_loads": timings["shared"].loads, "not_shared_loads": timings["not shared"].loads,
        "speedup": gain, "identical": same, "positions": positions, "saved": saved,
    }


if __name__ == "__main__":
    main()
