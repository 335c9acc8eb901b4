"""Stage 2, generation: a model answers the suite's prompts, through the cache.

- `backends`: loading a model through its backend plugin, with its options validated;
- `checkpoints`: local checkpoints, their content hashes and the default model;
- `cache`: generation through the cache, keyed by checkpoint, prompt, decoding and draw,
  so that only missing generations are made;
- `executors`: where the missing generations are made: shards, and running them in
  this process;
- `ray`: running them on Ray actors (`RayExecutor`).

The eval stage that drives generation and then scores it (`harness.score.evaluate`)
lives with scoring: it needs both, and generation needs nothing of scoring.
"""
