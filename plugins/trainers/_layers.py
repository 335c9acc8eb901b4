"""Which layers an adapter goes on: the linear projections of the attention and MLP
blocks, found from the architecture (names and shapes), so that `lora` and `ia3` need no
per-model table of module names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness import ConfigError

_ATTENTION_WORDS = ("attn", "attention")
_ROUTER_WORDS = ("router", "moe", "sparse")


@dataclass(frozen=True, slots=True)
class ProjectionLayers:
    """The linear projections inside the model's repeated blocks, by full module name."""

    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    mlp_output: tuple[str, ...]
    """MLP layers that read the wide hidden activation (down projections)."""
    others: tuple[str, ...]
    """Every other linear layer of the model (embedding heads, routers, ...)."""

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(sorted((*self.attention, *self.mlp)))

    def patterns(self, *selections: Sequence[str]) -> list[list[str]]:
        """peft `target_modules` lists for each selection: short leaf names (q_proj, ...)
        when they pick out exactly the selected layers, otherwise full module names."""
        everything = (*self.attention, *self.mlp, *self.others)
        leaf_lists = [sorted({name.rsplit(".", 1)[-1] for name in sel}) for sel in selections]
        for selection, leaves in zip(selections, leaf_lists, strict=True):
            matched = {n for n in everything if n.rsplit(".", 1)[-1] in leaves}
            if matched != set(selection):
                return [sorted(sel) for sel in selections]
        return leaf_lists


def _is_router_name(leaf: str) -> bool:
    """A mixture-of-experts gate that picks experts (not an expert's gate_proj)."""
    return leaf == "gate" or leaf.endswith("_gate") or "router" in leaf


def find_projection_layers(model: Any) -> ProjectionLayers:
    """Every linear projection of attention and MLP blocks, found by inspecting the model.

    A block is a member of an `nn.ModuleList` (the decoder layers). Inside a block, a
    linear layer (or GPT-2's `Conv1D`) under a module whose class or attribute name says
    attention is an attention projection; every other one is an MLP projection (this
    covers OPT-style blocks whose fc1/fc2 sit directly in the layer), except routers of
    mixture-of-experts blocks. The output embedding is never a target.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    blocks = {
        f"{name}.{child}"
        for name, module in modules.items()
        if isinstance(module, torch.nn.ModuleList)
        for child, _ in module.named_children()
    }
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    attention: list[str] = []
    mlp: list[tuple[str, int, int, str]] = []  # name, in, out, block
    others: list[str] = []
    for name, module in modules.items():
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is head:
            if module is head and name:
                others.append(name)
            continue
        block = max((b for b in blocks if name.startswith(b + ".")), key=len, default=None)
        if block is None:
            others.append(name)
            continue
        inner = name[len(block) + 1 :].split(".")
        ancestors = [
            (part.lower(), type(modules[".".join([block, *inner[: i + 1]])]).__name__.lower())
            for i, part in enumerate(inner[:-1])
        ]
        words = " ".join(f"{attr} {cls}" for attr, cls in ancestors)
        if any(word in words for word in _ATTENTION_WORDS):
            attention.append(name)
        elif any(word in words for word in _ROUTER_WORDS) and _is_router_name(inner[-1].lower()):
            others.append(name)
        else:
            fan_in, fan_out = (
                (module.weight.shape[0], module.weight.shape[1])
                if isinstance(module, Conv1D)
                else (module.in_features, module.out_features)
            )
            mlp.append((name, fan_in, fan_out, block))
    if not attention and not mlp:
        linear = [n for n, m in modules.items() if isinstance(m, (torch.nn.Linear, Conv1D))]
        raise ConfigError(
            f"found no attention or MLP projection in {type(model).__name__} "
            f"(linear layers: {', '.join(linear[:8]) or 'none'}); name the layers with target_modules"
        )
    widest: dict[str, int] = {}
    for _, fan_in, _, block in mlp:
        widest[block] = max(widest.get(block, 0), fan_in)
    mlp_output = [n for n, fan_in, fan_out, b in mlp if fan_in == widest[b] and fan_in > fan_out]
    return ProjectionLayers(
        attention=tuple(attention),
        mlp=tuple(n for n, *_ in mlp),
        mlp_output=tuple(mlp_output),
        others=tuple(others),
    )
