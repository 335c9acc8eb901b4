"""Generation throughput of the `hf` backend against a plain one-prompt-at-a-time
`model.generate` loop, lm-evaluation-harness's HF backend and transformers' own
continuous batching, in one run.

    python bench/generation.py                        # default model, 64 dictionary prompts
    python bench/generation.py --batch-sizes 8,32 --prompts 64 --max-new-tokens 48 --repeats 3
    python bench/generation.py --skip-lm-eval --skip-loop --skip-adapter --skip-transformers-cb --draws 0

Every configuration decodes greedily with the same weights (float32, CPU), the same
prompts (the dictionary suite's instruction prompts), the same batch size and token
limit, stopping at EOS only:

- harness hf, batch b: `HFBackend.generate` with continuous batching (a row leaves the
  batch the step it finishes and a waiting prompt takes its place), the KV cache, the
  shared prefill of what the prompts have in common;
- harness hf, batch b, static batches: the same with continuous=false: length-sorted
  fixed batches decoded until their longest row stops;
- harness hf, no shared prefill: at one batch size with share_prefill=false;
- harness hf, dtype / int8: reduced precision at one batch size (outputs compared with
  float32, not expected to be identical);
- lm-eval HFLM, batch b: `lm_eval.models.huggingface.HFLM.generate_until` (lm-eval
  0.4.13, the `bench` extra) on its own copy of the model loaded from the same directory;
- transformers generate_batch: transformers' continuous batching (`generate_batch`,
  its default ContinuousBatchingConfig) on the harness's model;
- plain loop: one `model.generate` call per prompt, no batching, on the harness's model;
- base + LoRA adapter: a quick adapter (bench/_adapter.py, trained once on suite
  samples that are not timed) whose answers are shorter than the base model's, with
  continuous and static batches: whether shorter answers evaluate faster.

The configurations are measured in turns (each repeat runs all of them once), and each
figure is the median of the repeats with the median 1-minute load average beside it:
the machine is shared with other jobs. Generated tokens are counted up to and including
EOS, from the harness's own count, for every configuration whose text matches. The
script checks that all float32 configurations of one model produce the same text and
prints each difference it finds. Beside each batch size it prints the bound of
bench/bound.py, and for the harness the share of decoded row-steps spent on rows that
had already finished and the time per prompt by answer length.

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
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import Timing, describe, load_average, machine, timed, write_json  # noqa: E402


def dictionary_prompts(n: int) -> list[str]:
    from harness.suite.load import load_suite
    from harness.suite.prompts import instruction_prompt

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


def transformers_cb_generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """transformers' continuous batching: `generate_batch` with its default config."""
    from transformers import GenerationConfig as HFGenerationConfig

    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    config = HFGenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)
    out = model.generate_batch(ids, generation_config=config, warmup=False)
    texts = []
    for result in out.values():  # in the order of the inputs
        tokens = list(result.generated_tokens)
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return texts


@dataclass
class Config:
    name: str
    batch_size: int | None
    run: Callable[[], list[str]]
    group: str = "base"
    """Configurations of one group (the same weights in float32) must give the same text."""
    backend: Any = None
    """The harness backend it runs on, to read its counters."""
    timing: Timing = field(default_factory=Timing)
    texts: list[str] = field(default_factory=list)
    completions: list[Any] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)


COUNTERS = ("row_steps", "finished_row_steps", "padded_tokens", "prompt_tokens", "decode_steps")
ANSWER_BINS = ((1, 8), (9, 16), (17, 32), (33, 10**9))


def per_length(completions: Sequence[Any], seconds: float) -> list[dict[str, Any]]:
    """Time per prompt by answer length: each prompt's share of the passes it was in
    (latency_s), scaled so that the shares add up to the measured wall time."""
    total = sum(c.latency_s for c in completions) or 1.0
    rows = []
    for low, high in ANSWER_BINS:
        chosen = [c for c in completions if low <= c.completion_tokens <= high]
        if chosen:
            rows.append({"tokens": f"{low}-{high}" if high < 10**9 else f"{low}+", "prompts": len(chosen),
                         "s_per_prompt": statistics.mean(c.latency_s for c in chosen) * seconds / total})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="4,8,16,32,64")
    parser.add_argument("--static-batch-sizes", default=None,
                        help="batch sizes of the static-batch runs (default: --batch-sizes)")
    parser.add_argument("--stop", default=None,
                        help="also stop at this string, as suites do (backslash escapes read: '\\n'); harness "
                        "configurations only, so it needs --skip-lm-eval --skip-loop --skip-transformers-cb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-share-batch", type=int, default=32, help="batch size of the run without shared prefill")
    parser.add_argument("--dtypes", default="bfloat16", help="reduced precisions to time at --no-share-batch ('' none)")
    parser.add_argument("--adapter", default=None,
                        help="LoRA adapter for the base vs adapter rows (default: train a quick one once)")
    parser.add_argument("--draws", type=int, default=4, help="sampled draws per prompt for the draw timing (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--skip-lm-eval", action="store_true")
    parser.add_argument("--skip-transformers-cb", action="store_true")
    parser.add_argument("--skip-adapter", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--allocator", choices=("kept", "glibc"), default="kept",
                        help="kept: freed memory stays in the heap, as the harness CLI sets it "
                        "(harness.allocator), for every configuration of the run, peers included; "
                        "glibc: the C library's defaults")
    args = parser.parse_args()
    if args.stop and not (args.skip_lm_eval and args.skip_loop and args.skip_transformers_cb):
        parser.error("--stop applies to the harness configurations only: add --skip-lm-eval --skip-loop "
                     "--skip-transformers-cb (the peers stop at EOS alone, so their texts would differ)")

    from harness.allocator import keep_freed_memory

    if args.allocator == "kept":
        keep_freed_memory()

    import torch
    from bound import decode_bound, measure_limits, model_figures, summary

    from harness.components.plugin_manager import load_plugins
    from harness.generate.checkpoints import resolve_model_dir
    from harness.score.evaluate import load_backend
    from harness.types import GenerationConfig, ModelSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)  # converts the default model once
    prompts = dictionary_prompts(args.prompts)
    stop = tuple([args.stop.encode().decode("unicode_escape")]) if args.stop else ()
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, stop=stop)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    static_sizes = [int(b) for b in (args.static_batch_sizes or args.batch_sizes).split(",") if b]
    plugins = load_plugins(autoload=False)

    def backend(options: dict[str, Any], adapter: str | None = None, share_weights: Any = None) -> Any:
        # A fixed size, which each configuration sets before it runs (auto would choose its own).
        options = {"batch_size": batch_sizes[0], **options}
        b = load_backend(ModelSpec(str(model_dir), adapter=adapter, options=options), plugins.registry)
        if share_weights is not None:
            b._model = share_weights.model  # the same weights in memory: only the decoding differs
        return b

    harness = backend({})
    static = backend({"continuous": False}, share_weights=harness)
    plain = backend({"share_prefill": False}, share_weights=harness)
    warm = GenerationConfig(max_new_tokens=2)
    harness.generate(prompts[:2], warm)

    def harness_run(b: Any, batch_size: int, cfg: Config | None = None) -> Callable[[], list[str]]:
        def run() -> list[str]:
            b.batch_size = batch_size
            completions = b.generate(prompts, config)
            holder[0].completions = completions
            return [c.text for c in completions]

        return run

    holder: list[Config] = []
    configs: list[Config] = []

    def add(name: str, batch_size: int | None, run: Callable[[], list[str]], group: str = "base",
            b: Any = None) -> None:
        configs.append(Config(name, batch_size, run, group, b))

    for bs in batch_sizes:
        add(f"harness hf, batch {bs}", bs, harness_run(harness, bs), b=harness)
    auto = backend({"batch_size": "auto"}, share_weights=harness)

    def auto_run() -> list[str]:
        completions = auto.generate(prompts, config)
        holder[0].completions, holder[0].batch_size = completions, auto.batch_size
        return [c.text for c in completions]

    add("harness hf, batch auto (the default)", None, auto_run, b=auto)
    for bs in static_sizes:
        add(f"harness hf, batch {bs}, static batches", bs, harness_run(static, bs), b=static)
    add(f"harness hf, batch {args.no_share_batch}, no shared prefill", args.no_share_batch,
        harness_run(plain, args.no_share_batch), b=plain)
    for dtype in [d for d in args.dtypes.split(",") if d]:
        options = {"quantize": "int8"} if dtype == "int8" else {"dtype": dtype}
        low = backend(options)
        add(f"harness hf, batch {args.no_share_batch}, {dtype}", args.no_share_batch,
            harness_run(low, args.no_share_batch), group=dtype, b=low)
    if not args.skip_lm_eval:
        lm = lm_eval_model(str(model_dir), batch_sizes[0])
        lm_eval_generate(lm, prompts[:2], 2, 2)  # warm up
        for bs in batch_sizes:
            add(f"lm-eval HFLM, batch {bs}", bs, lambda bs=bs: lm_eval_generate(lm, prompts, args.max_new_tokens, bs))
    if not args.skip_transformers_cb:
        add("transformers generate_batch", None,
            lambda: transformers_cb_generate(harness.model, harness.tokenizer, prompts, args.max_new_tokens))
    if not args.skip_loop:
        add("plain generate loop, 1 prompt at a time", 1,
            lambda: plain_loop(harness.model, harness.tokenizer, prompts, args.max_new_tokens))
    if not args.skip_adapter:
        from _adapter import quick_lora

        from harness.suite.load import load_suite
        from harness.suite.prompts import instruction_prompt

        samples = load_suite("dictionary").samples[args.prompts:]
        adapter_dir = Path(args.adapter) if args.adapter else Path.home() / ".cache/harness/bench-lora-dictionary"
        quick_lora(model_dir, adapter_dir,
                   [(instruction_prompt(s.instruction, s.input), s.references[0]) for s in samples])
        tuned = backend({}, adapter=str(adapter_dir))
        tuned_static = backend({"continuous": False}, adapter=str(adapter_dir), share_weights=tuned)
        tuned.generate(prompts[:2], warm)
        best = max(batch_sizes)
        add(f"base + LoRA adapter, batch {best}", best, harness_run(tuned, best), group="adapter", b=tuned)
        add(f"base + LoRA adapter, batch {best}, static batches", best, harness_run(tuned_static, best),
            group="adapter", b=tuned_static)

    info = machine()
    print(describe(info))
    print(f"allocator: {args.allocator}")
    print(f"{len(prompts)} dictionary prompts, greedy, max_new_tokens={args.max_new_tokens}, "
          f"stop at EOS{f' or {stop[0]!r}' if stop else ''}, "
          f"{args.repeats} repeats in turns, median reported\n", flush=True)
    for repeat in range(args.repeats):
        for cfg in configs:
            holder[:] = [cfg]
            before = dict(cfg.backend.stats) if cfg.backend else {}
            texts, seconds = timed(cfg.run)
            cfg.timing.add(seconds)
            cfg.texts = texts
            if cfg.backend:
                cfg.counters = {k: cfg.backend.stats[k] - before[k] for k in COUNTERS}
            print(f"  repeat {repeat + 1}: {cfg.name:46} {seconds:7.2f} s  load {cfg.timing.loads[-1]:.2f}",
                  flush=True)
    report(args, configs, prompts, harness, model_dir, info, decode_bound, measure_limits, model_figures, summary)


def report(args: argparse.Namespace, configs: list[Config], prompts: list[str], harness: Any, model_dir: Any,
           info: dict, decode_bound: Any, measure_limits: Any, model_figures: Any, summary: Any) -> None:
    from harness.types import GenerationConfig

    tokenizer = harness.tokenizer
    # Each group's reference: its first harness configuration, whose token counts are exact.
    # Reduced precisions are compared with float32 (the base group): not expected to match.
    references = {}
    for cfg in configs:
        if cfg.completions and cfg.group in ("base", "adapter") and cfg.group not in references:
            references[cfg.group] = cfg

    def tokens_of(cfg: Config) -> int:
        ref = references.get(cfg.group, references["base"])
        total = 0
        for text, ref_text, completion in zip(cfg.texts, ref.texts, ref.completions, strict=True):
            if text == ref_text:
                total += completion.completion_tokens
            else:  # a different output: count its own tokens (+ EOS when it stopped early)
                n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                total += n + (n < args.max_new_tokens)
        return total

    loop = next((c for c in configs if c.name.startswith("plain")), None)
    loop_rate = tokens_of(loop) / loop.timing.median if loop else None
    limits = measure_limits()
    figures = model_figures(model_dir)
    base_ref = references["base"]
    context = round(
        statistics.mean(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
        + statistics.mean(c.completion_tokens for c in base_ref.completions) / 2
    )
    print()
    for line in summary(figures, limits):
        print(line)
    print(f"bound: one decoding step at {context} positions per row (the mean prompt + half the mean output)\n")
    header = (f"{'configuration':50} {'tokens':>6} {'median s':>8} {'spread s':>11} {'tok/s':>7} {'vs loop':>7} "
              f"{'bound':>6} {'finished':>8} {'load':>5}  same text")
    print(header)
    print("-" * len(header))
    rows = []
    for cfg in configs:
        tokens = tokens_of(cfg)
        rate = tokens / cfg.timing.median
        bound = decode_bound(figures, limits, cfg.batch_size or 1, context)["bound_tok_s"]
        ref = references.get(cfg.group, base_ref)
        differing = [i for i, (a, b) in enumerate(zip(cfg.texts, ref.texts)) if a != b]
        vs_loop = f"{rate / loop_rate:.1f}x" if loop_rate else "-"
        finished = (cfg.counters["finished_row_steps"] / max(cfg.counters["row_steps"], 1)) if cfg.counters else None
        same = "yes" if not differing else f"no: {len(differing)} of {len(ref.texts)} differ"
        if cfg.group not in references:
            same = f"vs float32: {same}"
        elif cfg.group != "base":
            same = f"{same} (vs {ref.name})"
        print(f"{cfg.name:50} {tokens:6d} {cfg.timing.median:8.2f} {cfg.timing.spread():>11} {rate:7.1f} "
              f"{vs_loop:>7} {bound:6.0f} {f'{finished:.1%}' if finished is not None else '-':>8} "
              f"{cfg.timing.load:5.2f}  {same}")
        rows.append({
            "name": cfg.name, "group": cfg.group, "batch_size": cfg.batch_size, "tokens": tokens,
            "seconds": cfg.timing.seconds, "median_s": cfg.timing.median, "loads": cfg.timing.loads,
            "tok_s": rate, "bound_tok_s": bound, "vs_loop": rate / loop_rate if loop_rate else None,
            "differing": differing, "finished_share": finished, "counters": cfg.counters,
            "per_length": per_length(cfg.completions, cfg.timing.median) if cfg.completions else None,
            "s_per_prompt": cfg.timing.median / len(prompts),
        })
    for cfg, row in zip(configs, rows):
        ref = references.get(cfg.group, base_ref)
        for i in row["differing"][:3]:
            print(f"\n{cfg.name}, prompt {i} ({prompts[i].split('### Input:')[-1].split()[0]!r}):\n"
                  f"  {ref.name}: {ref.texts[i]!r}\n  this:      {cfg.texts[i]!r}")

    print("\ntime per prompt by answer length (each prompt's share of the passes it was in):")
    for cfg, row in zip(configs, rows):
        if row["per_length"] and (cfg.group == "adapter" or cfg.batch_size == max(r["batch_size"] or 0 for r in rows)):
            cells = ", ".join(f"{b['tokens']} tokens: {b['s_per_prompt']:.3f} s ({b['prompts']})" for b in row["per_length"])
            print(f"  {cfg.name:50} {cells}")
    for group in ("base", "adapter"):
        for kind in ("", ", static batches"):
            match = [r for r in rows if r["group"] == group and r["name"].endswith(f"batch {max(int(b) for b in args.batch_sizes.split(','))}{kind}")]
            if match:
                r = match[0]
                print(f"  {r['name']:50} {r['tokens']} tokens in {r['median_s']:.2f} s: {r['s_per_prompt']:.3f} s per prompt")

    harness_rows = [r for r in rows if r["group"] == "base" and r["name"].startswith("harness hf, batch")
                    and "no shared" not in r["name"]]
    best = max(harness_rows, key=lambda r: r["tok_s"])
    lm_rows = [r for r in rows if r["name"].startswith("lm-eval")]
    lm_same = next((r for r in lm_rows if r["batch_size"] == best["batch_size"]), None)
    lm_best = max(lm_rows, key=lambda r: r["tok_s"]) if lm_rows else None
    stats = harness.stats
    print(f"\nharness padding share (last call) {stats['padding_share']:.1%}; shared prefill spared "
          f"{stats['prefill_positions_saved'] / max(stats['prefill_positions'] + stats['prefill_positions_saved'], 1):.0%} "
          f"of the prompt positions")
    print(f"best harness configuration {best['name']}: {best['tok_s']:.1f} tok/s", end="")
    if best["vs_loop"]:
        print(f", {best['vs_loop']:.1f}x the plain loop", end="")
    if lm_same:
        print(f", {best['tok_s'] / lm_same['tok_s']:.2f}x lm-eval at the same batch size", end="")
    if lm_best:
        print(f", {best['tok_s'] / lm_best['tok_s']:.2f}x lm-eval at its best (batch {lm_best['batch_size']})", end="")
    identical = all(not r["differing"] for r in rows if r["group"] in references)
    print(f"; greedy float32 outputs identical within each model: {'yes' if identical else 'no'}")

    draws = measure_draws(args, harness, backend_without_sharing(harness), prompts, GenerationConfig) \
        if args.draws else None
    write_json(args.json, {
        "machine": info, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "rows": rows, "best": best, "lm_eval_same_batch": lm_same, "lm_eval_best": lm_best,
        "identical": identical, "limits": limits, "context": context, "draws": draws,
        "padding_share": stats["padding_share"],
    })


def backend_without_sharing(harness: Any) -> Any:
    from harness.components.plugin_manager import load_plugins
    from harness.score.evaluate import load_backend
    from harness.types import ModelSpec

    plain = load_backend(ModelSpec(str(harness.model_dir), options={"share_prefill": False}),
                         load_plugins(autoload=False).registry)
    plain._model = harness.model
    return plain


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
