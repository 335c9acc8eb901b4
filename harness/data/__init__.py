"""Stage 5, data: training rows gathered for the clusters of failures, cleaned and versioned.

- `datasets`: versioned, content-addressed training datasets (their manifests), and
  building one for a run's clusters within a budget through the data-source plugins;
- `curation`: cleaning candidate rows before they join a dataset (validity, duplicates,
  decontamination against the eval suites, near-duplicates);
- `annotation`: human corrections, exported for annotation and read back as rows.
"""
