"""Stage 7, the loop: evaluate, cluster the failures, add targeted data, retrain, decide.

- `config`: what defines a loop (and so its identity, for resuming) and what it returns;
- `run`: the improvement loop, iteration after iteration, each step recorded as it
  finishes so that an interrupted loop resumes where it stopped;
- `decide`: the rule that decides whether an iteration's checkpoint is kept, and the
  comparisons and planned power it is given;
- `cost`: what a loop's work would cost on a paid fine-tuning service or a rented GPU.
"""
