"""Stage 3, scoring: metrics and detectors over the generations, and what the scores say.

- `evaluate`: the eval stage, one run end to end (load the suite and the model,
  generate through the cache, score, record in the store);
- `scoring`: metrics as sufficient statistics with bootstrap intervals, and detectors;
- `comparison`: paired comparisons of two runs (bootstrap, McNemar) and the smallest
  effect a split can show.

`evaluate` lives here rather than in `harness.generate`: it drives generation and then
scoring, so it sits above both; generation needs nothing of scoring. The statistics
themselves (`harness.stats`) stay at the top level: the store's queries and the loop
use them too, and they import nothing of the harness.
"""
