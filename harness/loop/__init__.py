"""Stage 7, the loop: evaluate, cluster the failures, add targeted data, retrain, decide.

- `run`: the improvement loop, iteration after iteration, each step recorded as it
  finishes so that an interrupted loop resumes where it stopped, and the rule that
  decides whether an iteration's checkpoint is kept;
- `cost`: what a loop's work would cost on a paid fine-tuning service or a rented GPU.
"""
