"""Built-in data sources: training examples aimed at a cluster of failures.

- `pool`: the nearest rows of a candidate pool (or a random draw, the baseline);
- `augment`: rule-based variants of pool rows near the cluster;
- `teacher`: new examples written by a stronger model;
- `annotate`: people's corrections of the failing samples.
"""
