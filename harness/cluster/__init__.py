"""Stage 4, clusters: a run's failing samples grouped into clusters a person would recognise.

- `clustering`: load a run's failures, featurize and cluster them through the plugins,
  label each cluster, store it, and match it against the previous iteration's clusters.
"""
