"""Generation through the cache.

A generation is keyed by (checkpoint hash, prompt, decoding parameters, draw): asking
for it again, in this run or any later one, costs a lookup. What is missing is
generated in chunks, each committed as it finishes, so an interrupted run keeps its work.
An executor (`harness.generate.executors`) decides where chunks run: in this process, or on a
Ray cluster; keys and per-sample seeds are fixed here either way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass

from harness.components.contracts import Backend
from harness.generate.executors import Executor, LocalExecutor, Shard, ShardGroup
from harness.progress import NullReporter, Reporter
from harness.store import Store
from harness.store.generations import (
    cached_loglikelihoods,
    existing_keys,
    link_cached_generations,
    linked_draws,
    save_loglikelihoods,
    save_shard,
)
from harness.types import DEFAULT_CHUNK, GenerationConfig


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def generation_key(checkpoint_hash: str, prompt: str, config: GenerationConfig, draw: int) -> str:
    """The cache key. Greedy outputs do not depend on the seed, so it is left out for them."""
    params = config.model_dump(mode="json", exclude={"seed"} if config.greedy else None)
    return _digest({"checkpoint": checkpoint_hash, "prompt": prompt, "params": params, "draw": draw})


def loglikelihood_key(checkpoint_hash: str, context: str, continuation: str) -> str:
    return _digest({"checkpoint": checkpoint_hash, "context": context, "continuation": continuation})


def sample_seed(config: GenerationConfig, key: str) -> int:
    """A per-sample seed: sampling does not depend on batch composition or order."""
    return int(hashlib.sha256(f"{config.seed}:{key}".encode()).hexdigest()[:15], 16)


@dataclass(frozen=True, slots=True)
class GenerationJob:
    sample_id: str
    draw: int
    prompt: str
    config: GenerationConfig
    key: str


def make_jobs(
    checkpoint_hash: str,
    prompts: dict[str, str],
    config: GenerationConfig,
    draws: int = 0,
    draw_config: GenerationConfig | None = None,
) -> list[GenerationJob]:
    """Draw 0 of every sample with `config`, and draws 1..n with `draw_config`."""
    jobs = []
    for sample_id, prompt in prompts.items():
        jobs.append(GenerationJob(sample_id, 0, prompt, config, generation_key(checkpoint_hash, prompt, config, 0)))
        for draw in range(1, draws + 1):
            assert draw_config is not None
            key = generation_key(checkpoint_hash, prompt, draw_config, draw)
            jobs.append(GenerationJob(sample_id, draw, prompt, draw_config, key))
    return jobs


def generate_with_cache(
    store: Store,
    run_id: int,
    backend: Backend,
    jobs: Sequence[GenerationJob],
    *,
    reporter: Reporter | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    executor: Executor | None = None,
) -> tuple[int, int]:
    """Make sure every job has a stored generation linked to the run.

    Missing generations are made by `executor` (by default this process, with `backend`)
    in shards of `chunk_size` prompts, each committed as it comes back.
    Returns (generated now, taken from the cache)."""
    reporter = reporter or NullReporter()
    executor = executor or LocalExecutor()
    linked = linked_draws(store, run_id)
    pending = [job for job in jobs if (job.sample_id, job.draw) not in linked]
    cached_keys = existing_keys(store, "generations", [job.key for job in pending])
    from_cache = [job for job in pending if job.key in cached_keys]
    if from_cache:
        link_cached_generations(store, run_id, _linked(from_cache))
    missing = [job for job in pending if job.key not in cached_keys]
    # Similar lengths share chunks (and so batches): less padding.
    missing.sort(key=lambda job: (job.config.model_dump_json(), len(job.prompt)))
    if missing:
        size = executor.shard_size(chunk_size, len(missing))
        chunks = [missing[start : start + size] for start in range(0, len(missing), size)]
        shards = [_shard(index, chunk) for index, chunk in enumerate(chunks)]
        scratch = store.path.with_name(store.path.name + ".shards")
        with reporter.task("generating", total=len(missing)) as advance:
            finished = executor.run(backend, shards, scratch=scratch, progress=advance, log=reporter.log)
            # closing(): an error while committing must stop the executor's work at once.
            with closing(finished):
                for shard, table in finished:
                    chunk = chunks[shard.index]
                    keys = table.column("cache_key").to_pylist()
                    if keys != shard.keys:
                        raise RuntimeError(
                            f"shard {shard.index} came back with {len(keys)} generations that do not "
                            f"match the {len(chunk)} prompts sent"
                        )
                    save_shard(store, run_id, table, backend.checkpoint_hash, _linked(chunk))
    return len(missing), len(from_cache)


def _shard(index: int, chunk: Sequence[GenerationJob]) -> Shard:
    """A chunk as the executor sees it: prompts by decoding parameters, with cache keys
    and per-sample seeds fixed here, so that where it runs cannot change what comes out."""
    by_config: dict[str, list[GenerationJob]] = {}
    for job in chunk:
        by_config.setdefault(job.config.model_dump_json(), []).append(job)
    groups = []
    for group in by_config.values():
        config = group[0].config
        groups.append(
            ShardGroup(
                config=config,
                keys=tuple(job.key for job in group),
                prompts=tuple(job.prompt for job in group),
                seeds=tuple(sample_seed(config, job.key) for job in group),
            )
        )
    return Shard(index, tuple(groups))


def _linked(jobs: Sequence[GenerationJob]) -> list[tuple[str, int, str]]:
    return [(job.sample_id, job.draw, job.key) for job in jobs]


def loglikelihoods_with_cache(
    store: Store,
    backend: Backend,
    pairs: dict[str, tuple[str, str]],
    *,
    reporter: Reporter | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, tuple[float, int]]:
    """(NLL, tokens) of each continuation given its context, by sample id, through the cache."""
    reporter = reporter or NullReporter()
    keys = {
        sample_id: loglikelihood_key(backend.output_hash, ctx, cont)
        for sample_id, (ctx, cont) in pairs.items()
    }
    found = cached_loglikelihoods(store, list(keys.values()))
    missing = [sid for sid, key in keys.items() if key not in found]
    if missing:
        with reporter.task("scoring references", total=len(missing)) as advance:
            for start in range(0, len(missing), chunk_size):
                chunk = missing[start : start + chunk_size]
                results = backend.loglikelihood(
                    [pairs[sid][0] for sid in chunk], [pairs[sid][1] for sid in chunk], progress=advance
                )
                save_loglikelihoods(store, [keys[sid] for sid in chunk], backend.checkpoint_hash, results)
                for sid, result in zip(chunk, results):
                    found[keys[sid]] = result
    return {sid: found[key] for sid, key in keys.items()}
