"""Stage 5, data: training rows gathered for the clusters of failures, cleaned and versioned.

- `datasets`: building a dataset for a run's clusters, within a budget, through the
  data-source plugins;
- `manifests`: versioned, content-addressed datasets, their manifests, storing and
  loading them;
- `curation`: cleaning candidate rows before they join a dataset (validity, duplicates,
  decontamination against the eval suites, near-duplicates);
- `annotation`: human corrections, exported for annotation and read back as rows.
"""
