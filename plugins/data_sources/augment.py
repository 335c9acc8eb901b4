"""The `augment` data source: rule-based variants of training rows near a cluster.

Classic data augmentation: the instruction is rephrased with a template, and the prompt
(the input, or the instruction when there is no input) gets one perturbation — casing,
whitespace, punctuation, a typo, or a format change (quoted, labelled, or moved into the
instruction). The target is the seed row's own output, unchanged.

Seeds are never eval items: variants of an eval item, with the eval reference as their
target, are eval contamination that decontamination rightly removes. The seeds are the
pool rows nearest the cluster (the same two-stage retrieval as the `pool` source, which
never returns an eval input), or rows of a training file; with `selection:
random_on_task` they are drawn at random among the rows of the suite's own task instead
(untargeted augmentation, the equal-budget control for augmentation). A variant whose prompt
normalises to an eval input (a typo can turn "acquirer" into "acquire") is discarded
here and counted as `augment_eval_input`. Variants of one seed share the seed's
`provenance.family`, so curation does not count them as near-duplicates of each other
(or of the seed, when it is already in the dataset); exact duplicates are still dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import DataRequest, DataSource, Suite, TrainingExample, hookimpl
from harness.plugins.data_sources._retrieval import (
    LexicalSettings,
    Neighbour,
    nearest_rows,
    random_rows,
    suite_task,
)
from harness.plugins.data_sources.pool import open_pool

Transform = Literal["case", "whitespace", "punctuation", "typo", "format"]

TEMPLATES: tuple[str, ...] = (
    "Please {lower}",
    "Task: {text}",
    "Instruction: {text}",
    "Here is a task for you. {text}",
    "Read the input and follow the instruction. {text}",
    "You are a careful assistant. {text}",
)
"""Paraphrases of an instruction; {text} is the instruction, {lower} the same with a
lower-case first letter."""


class AugmentArgs(BaseModel):
    """Arguments of the `augment` source, with their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    """Rows to draw seeds from (JSONL training rows); default: the suite's pool."""
    variants_per_seed: int = Field(2, ge=1, le=len(TEMPLATES))
    """Variants written per seed row, each with a different instruction template."""
    transforms: tuple[Transform, ...] = ("case", "whitespace", "punctuation", "typo", "format")
    """Perturbations to choose from (one per variant, where it applies)."""
    typo_min_length: int = Field(4, ge=2)
    """Typos only go into alphabetic words at least this long; digits are never touched."""
    candidate_factor: float = Field(10.0, ge=1.0)
    ranking: Literal["round_robin", "centroid"] = "round_robin"
    selection: Literal["targeted", "random_on_task"] = "targeted"
    """targeted: seeds are the rows nearest the cluster; random_on_task: seeds drawn at
    random among the rows of the suite's own task (untargeted augmentation)."""


def _lower_first(text: str) -> str:
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


def _case(text: str, rng: np.random.Generator, args: AugmentArgs) -> str | None:
    options = [
        v
        for v in dict.fromkeys((text.lower(), text.upper(), text.title(), text[:1].upper() + text[1:]))
        if v != text
    ]
    return options[int(rng.integers(len(options)))] if options else None


def _whitespace(text: str, rng: np.random.Generator, args: AugmentArgs) -> str | None:
    # Leading and trailing whitespace is stripped by the prompt template: only gaps count.
    gaps = [m.start() for m in re.finditer(r" ", text)]
    if not gaps:
        return None
    gap = gaps[int(rng.integers(len(gaps)))]
    return text[:gap] + ("  ", "\t", " \n")[int(rng.integers(3))] + text[gap + 1 :]


def _punctuation(text: str, rng: np.random.Generator, args: AugmentArgs) -> str | None:
    stripped = text.rstrip(".?!:;")
    if stripped != text and stripped:
        return stripped
    return text + (".", "?", ":")[int(rng.integers(3))]


def _typo(text: str, rng: np.random.Generator, args: AugmentArgs) -> str | None:
    words = [m for m in re.finditer(rf"[A-Za-z]{{{args.typo_min_length},}}", text)]
    if not words:
        return None
    word = words[int(rng.integers(len(words)))]
    w = word.group()
    i = int(rng.integers(1, len(w) - 1))  # interior letter: the word stays recognisable
    kind = int(rng.integers(3))
    if kind == 0:
        typo = w[:i] + w[i + 1] + w[i] + w[i + 2 :]  # i + 1 < len(w): i is interior
    elif kind == 1:
        typo = w[:i] + w[i + 1 :]
    else:
        typo = w[:i] + w[i] + w[i:]
    if typo == w:
        return None
    return text[: word.start()] + typo + text[word.end() :]


NOISE: dict[str, Callable[[str, np.random.Generator, AugmentArgs], str | None]] = {
    "case": _case,
    "whitespace": _whitespace,
    "punctuation": _punctuation,
    "typo": _typo,
}


def _format(instruction: str, input: str, rng: np.random.Generator) -> tuple[str, str, str]:
    if not input.strip():
        return f"{instruction}\n\nAnswer:", input, "format:answer_cue"
    kind = int(rng.integers(3))
    if kind == 0:
        return instruction, f'"{input}"', "format:quoted"
    if kind == 1:
        return instruction, f"Input: {input}", "format:labelled"
    return f"{instruction}\n\n{input}", "", "format:inline"


def _apply(
    name: str, instruction: str, input: str, rng: np.random.Generator, args: AugmentArgs
) -> tuple[str, str, str] | None:
    """(instruction, input, what was done) after one transform, or None where it does not apply."""
    if name == "format":
        return _format(instruction, input, rng)
    on_input = bool(input.strip())
    changed = NOISE[name](input if on_input else instruction, rng, args)
    if changed is None:
        return None
    return (instruction, changed, name) if on_input else (changed, input, name)


def make_variants(
    row: TrainingExample, count: int, rng: np.random.Generator, args: AugmentArgs
) -> list[tuple[str, str, dict[str, Any]]]:
    """Up to `count` (instruction, input, how) variants of `row`, each with its own
    template and, where possible, its own transform and prompt."""
    order = [args.transforms[i] for i in rng.permutation(len(args.transforms)).tolist()]
    seen = {(row.instruction, row.input)}
    used: set[str] = set()
    variants = []
    for template_index in rng.permutation(len(TEMPLATES))[:count].tolist():
        instruction, input, applied = row.instruction, row.input, "none"
        # Transforms this seed has not used yet come first, so its variants differ.
        for name in [t for t in order if t not in used] + [t for t in order if t in used]:
            result = _apply(name, row.instruction, row.input, rng, args)
            if result is not None and result[:2] not in seen:
                instruction, input, applied = result
                seen.add(result[:2])
                used.add(name)
                break
        template = TEMPLATES[template_index]
        instruction = template.format(text=instruction, lower=_lower_first(instruction))
        variants.append((instruction, input, {"template": template_index, "transform": applied}))
    return variants


class AugmentSource(DataSource):
    """Rule-based variants (instruction templates; casing, whitespace, punctuation, typo
    or format changes of the prompt) of the pool rows nearest the cluster, with the
    rows' own outputs as targets: never variants of eval items. Defaults: 2 variants per
    seed, every transform."""

    name = "augment"
    description = "template and noise variants of the pool rows nearest the cluster"
    Args = AugmentArgs

    def preflight(self, suite: Suite, args: BaseModel) -> None:
        a: AugmentArgs = args  # type: ignore[assignment]
        open_pool(suite, a.path)

    def gather(self, request: DataRequest, args: BaseModel) -> list[TrainingExample]:
        a: AugmentArgs = args  # type: ignore[assignment]
        pool = open_pool(request.suite, a.path)
        n_seeds = math.ceil(request.budget / a.variants_per_seed)
        if a.selection == "random_on_task":
            among = pool.on_task(suite_task(request.suite))
            seeds = [Neighbour(i, 0.0, "") for i in random_rows(request, pool, n_seeds, among=among)]
        else:
            task = suite_task(request.suite)
            seeds = nearest_rows(
                request,
                pool,
                n_seeds,
                candidate_factor=a.candidate_factor,
                ranking=a.ranking,
                lexical=LexicalSettings(include_instruction=pool.mixes_tasks(task)),
            )
        out: list[TrainingExample] = []
        excluded = 0
        for rank, seed in enumerate(seeds):
            row = pool.rows[seed.index]
            rng = request.rng(salt=rank + 1)
            for instruction, input, how in make_variants(row, a.variants_per_seed, rng, a):
                if request.is_excluded(instruction, input):
                    excluded += 1
                    continue
                out.append(
                    TrainingExample(
                        instruction=instruction,
                        input=input,
                        output=row.output,
                        source=self.name,
                        cluster=request.cluster.id,
                        provenance={
                            **pool.provenance(seed.index),
                            **how,
                            **(
                                {"selection": "random_on_task"}
                                if a.selection == "random_on_task"
                                else {"seed_similarity": round(seed.similarity, 4), "nearest_sample": seed.member}
                            ),
                            "family": pool.family(seed.index),
                        },
                    )
                )
                if len(out) >= request.budget:
                    request.drop("augment_eval_input", excluded)
                    return out
        request.drop("augment_eval_input", excluded)
        return out


@hookimpl
def harness_register_data_sources(registry: Any) -> None:
    registry.add_data_source(AugmentSource())
