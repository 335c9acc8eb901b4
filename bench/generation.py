"""Generation throughput of the `hf` backend against a plain one-prompt-at-a-time loop.

    python bench/generation.py                       # default model, dictionary prompts
    python bench/generation.py --batch-sizes 8,32 --prompts 64 --max-new-tokens 48

Both sides decode greedily with the same model, prompts and token limit, stopping at
EOS only, so they must produce identical text; the script checks that and prints
generated tokens per second for each batch size and for the baseline.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def dictionary_prompts(n: int) -> list[str]:
    from harness.prompts import instruction_prompt
    from harness.suite import load_suite

    suite = load_suite("dictionary")
    return [instruction_prompt(s.instruction, s.input) for s in suite.samples[:n]]


def plain_loop(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    """The baseline: one `generate` call per prompt, no batching."""
    import torch

    texts, tokens = [], 0
    started = time.perf_counter()
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id) + 1]
        tokens += len(new)
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return texts, tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,8,16,32,64")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    import torch

    from harness.evaluate import load_backend
    from harness.plugin_manager import load_plugins
    from harness.types import GenerationConfig, ModelSpec

    prompts = dictionary_prompts(args.prompts)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    plugins = load_plugins(autoload=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{len(prompts)} dictionary prompts, greedy, max_new_tokens={args.max_new_tokens}, stop at EOS\n")

    rows = []
    reference_texts = None
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        backend = load_backend(ModelSpec(args.model, options={"batch_size": batch_size}), plugins.registry)
        backend.generate(prompts[:2], GenerationConfig(max_new_tokens=4))  # load and warm up
        started = time.perf_counter()
        completions = backend.generate(prompts, config)
        elapsed = time.perf_counter() - started
        tokens = sum(c.completion_tokens for c in completions)
        texts = [c.text for c in completions]
        same = reference_texts is None or texts == reference_texts
        reference_texts = reference_texts or texts
        rows.append((f"harness hf, batch {batch_size}", tokens, elapsed, same, backend.stats["padding_share"]))
        model, tokenizer = backend.model, backend.tokenizer

    if not args.skip_baseline:
        texts, tokens, elapsed = plain_loop(model, tokenizer, prompts, args.max_new_tokens)
        rows.append(("plain generate loop, 1 prompt at a time", tokens, elapsed, texts == reference_texts, 0.0))

    baseline = rows[-1][1] / rows[-1][2] if not args.skip_baseline else None
    print(f"{'configuration':42} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'vs loop':>8} {'padding':>8}  same text")
    for name, tokens, elapsed, same, padding in rows:
        rate = tokens / elapsed
        speedup = f"{rate / baseline:.1f}x" if baseline else "-"
        print(f"{name:42} {tokens:7d} {elapsed:8.1f} {rate:7.1f} {speedup:>8} {padding:8.1%}  {same}")


if __name__ == "__main__":
    main()
