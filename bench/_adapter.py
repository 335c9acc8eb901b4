"""A quick LoRA adapter for the benchmarks: the default model taught, in a few dozen
steps, to answer the dictionary suite's prompts with a short definition and EOS, as the
loop's adapters do. Trained on suite samples the benchmark does not time, once, and kept
in a directory so later runs reuse it."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def quick_lora(model_dir: Path, out_dir: Path, rows: Sequence[tuple[str, str]], *, steps: int = 30,
               batch_size: int = 8, seed: int = 0) -> Path:
    """Train a rank-8 LoRA on (prompt, answer) rows into `out_dir` (skipped when it holds
    one already) and return it."""
    if (out_dir / "adapter_config.json").is_file():
        return out_dir
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    encoded = [_example(tokenizer, prompt, answer) for prompt, answer in rows]
    order = random.Random(seed).sample(range(len(encoded)), len(encoded))
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = [encoded[order[(step * batch_size + i) % len(order)]] for i in range(batch_size)]
        ids, labels, mask = _pad(batch, tokenizer.pad_token_id or 0)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 9:
            print(f"  quick LoRA step {step + 1}/{steps}: loss {loss.item():.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return out_dir


def _example(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return head + tail, [-100] * len(head) + tail


def _pad(batch: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (tokens, targets) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, : len(targets)] = torch.tensor(targets)
        mask[row, : len(tokens)] = 1
    return ids, labels, mask
