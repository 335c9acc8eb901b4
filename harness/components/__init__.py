"""What the stages are built from: the plugin contracts and how plugins are found.

Every stage below works through components (backends, metrics, detectors, featurizers,
clusterers, data sources, trainers, report views) that plugins register; this package
is the bond between them, so it sits below the stages and above the values they pass.

- `contracts`: the abstract class of each component kind, and the `metric` and
  `detector` decorators;
- `hookspecs`: every hook the harness calls, and the `hookimpl` marker;
- `registry`: the typed registry the registration hooks fill;
- `plugin_manager`: finding, loading and calling plugins (one manager per run);
- `embedding`: the sentence embedder the contracts hand to featurizers and data
  sources (`DataRequest.get_embedder`).
"""
