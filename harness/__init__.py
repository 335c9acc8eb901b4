"""The harness: evaluate -> cluster errors -> add targeted data -> retrain.

Plugin authors import only from here; every other module is private and may change.
Names are imported on first use, so `import harness` stays cheap. A test
(tests/test_public_api.py) fails when a built-in plugin or report view imports a
private module, or when a name listed here does not resolve.
"""

from __future__ import annotations

import importlib
import sys

# Not `import types`: the submodule harness.types becomes this module's attribute `types`.
from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> "module" (the same name there) or "module:attribute"
_EXPORTS: dict[str, str] = {
    # values that flow between stages
    "Sample": "harness.types",
    "Generation": "harness.types",
    "GenerationConfig": "harness.types",
    "Completion": "harness.types",
    "FinishReason": "harness.types",
    "Item": "harness.types",
    "Issue": "harness.types",
    "TrainingExample": "harness.types",
    "ModelSpec": "harness.types",
    "Failure": "harness.types",
    "Cluster": "harness.types",
    "UNCLUSTERED": "harness.types",
    "Progress": "harness.types",
    "TrainingOutcome": "harness.types",
    "ComponentError": "harness.types",
    "PromptConfig": "harness.suite.prompts",
    "instruction_prompt": "harness.suite.prompts",
    "render_prompt": "harness.suite.prompts",
    # writing plugins: the contracts, the hook marker, the registry
    "hookimpl": "harness.components.hookspecs",
    "Registry": "harness.components.registry",
    "Metric": "harness.components.contracts",
    "Detector": "harness.components.contracts",
    "Backend": "harness.components.contracts",
    "Featurizer": "harness.components.contracts",
    "Clusterer": "harness.components.contracts",
    "DataSource": "harness.components.contracts",
    "DataRequest": "harness.components.contracts",
    "Trainer": "harness.components.contracts",
    "ReportView": "harness.components.contracts",
    "Needs": "harness.components.contracts",
    "NoArgs": "harness.components.contracts",
    "detector": "harness.components.contracts",
    "metric": "harness.components.contracts",
    "mean_from_statistics": "harness.components.contracts",
    # what backends and featurizers share: local checkpoints, sentence embeddings
    "resolve_model_dir": "harness.generate.checkpoints",
    "resolve_adapter_dir": "harness.generate.checkpoints",
    "checkpoint_content_hash": "harness.generate.checkpoints:content_hash",
    "checkpoint_hash": "harness.generate.checkpoints",
    "check_model_dir": "harness.generate.checkpoints",
    "check_adapter_dir": "harness.generate.checkpoints",
    "Embedder": "harness.components.embedding",
    "default_embedder": "harness.components.embedding",
    # running
    "load_plugins": "harness.components.plugin_manager",
    "load_suite": "harness.suite.load",
    "Suite": "harness.suite.load",
    "read_jsonl": "harness.suite.files",
    "read_training_rows": "harness.suite.files",
    "TrainRowModel": "harness.suite.config",
    "input_key": "harness.suite.keys",
    "prompt_text": "harness.suite.keys",
    "normalize": "harness.suite.keys",
    "evaluate": "harness.score.evaluate",
    "EvalOptions": "harness.score.evaluate",
    "RunSummary": "harness.score.evaluate",
    "load_backend": "harness.generate.backends",
    "Store": "harness.store",
    "build_dataset": "harness.data.datasets",
    "Manifest": "harness.data.manifests",
    "load_manifest": "harness.data.manifests",
    "load_manifest_rows": "harness.data.manifests",
    # human annotation: corrections read back as training rows
    "Correction": "harness.data.annotation",
    "read_corrections": "harness.data.annotation",
    "corrections_to_examples": "harness.data.annotation",
    # reports: the query layer, its result types, comparisons, and the document model
    "Queries": "harness.store.queries",
    "RunInfo": "harness.store.results",
    "RunListing": "harness.store.results",
    "CorpusScore": "harness.store.results",
    "SampleDetail": "harness.store.results",
    "IssueSpan": "harness.store.results",
    "IssueExample": "harness.store.results",
    "DetectorSummary": "harness.store.results",
    "RunError": "harness.store.results",
    "Clustering": "harness.store.results",
    "ClusterSummary": "harness.store.results",
    "LoopInfo": "harness.store.results",
    "IterationInfo": "harness.store.results",
    "compare_runs": "harness.score.comparison",
    "compare_metric": "harness.score.comparison",
    "MetricComparison": "harness.score.comparison",
    "Flip": "harness.score.comparison",
    "ALPHA": "harness.score.comparison",
    "Document": "harness.document",
    "Section": "harness.document",
    "Table": "harness.document",
    "Column": "harness.document",
    "Text": "harness.document",
    "Highlight": "harness.document",
    "Badge": "harness.document",
    "KeyValues": "harness.document",
    "Paragraph": "harness.document",
    "Notice": "harness.document",
    "Record": "harness.document",
    "BarChart": "harness.document",
    "Spark": "harness.document",
    "Interval": "harness.document",
    "format_value": "harness.document",
    "histogram": "harness.document",
    "planned_mde": "harness.score.comparison",
    "describe_clustering": "harness.stats",
    # errors
    "HarnessError": "harness.errors",
    "ConfigError": "harness.errors",
    "PluginError": "harness.errors",
    "NotFoundError": "harness.errors",
    "UnknownComponentError": "harness.errors",
    "StoreLockedError": "harness.errors",
    "TrainingError": "harness.errors",
    # training: the engine the built-in trainers share
    "TrainingArgs": "harness.train",
    "InstructionTuner": "harness.train",
    "quiet_peft_version_skew": "harness.train",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


class _Harness(_ModuleType):
    """Keeps exported names stable: importing a submodule named like an exported name
    (`harness.evaluate` was one, before the stages had folders) would otherwise set the
    attribute to that module, so that `from harness import evaluate` gave the module or
    the function depending on what was imported before."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, _ModuleType) and name in _EXPORTS:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Harness


if TYPE_CHECKING:
    from harness.components.contracts import (
        Backend,
        Clusterer,
        DataRequest,
        DataSource,
        Detector,
        Featurizer,
        Metric,
        Needs,
        NoArgs,
        ReportView,
        Trainer,
        detector,
        mean_from_statistics,
        metric,
    )
    from harness.components.embedding import (
        Embedder,
        default_embedder,
    )
    from harness.components.hookspecs import (
        hookimpl,
    )
    from harness.components.plugin_manager import (
        load_plugins,
    )
    from harness.components.registry import (
        Registry,
    )
    from harness.data.annotation import (
        Correction,
        corrections_to_examples,
        read_corrections,
    )
    from harness.data.datasets import build_dataset
    from harness.data.manifests import (
        Manifest,
        load_manifest,
        load_manifest_rows,
    )
    from harness.document import (
        Badge,
        BarChart,
        Column,
        Document,
        Highlight,
        Interval,
        KeyValues,
        Notice,
        Paragraph,
        Record,
        Section,
        Spark,
        Table,
        Text,
        format_value,
        histogram,
    )
    from harness.errors import (
        ConfigError,
        HarnessError,
        NotFoundError,
        PluginError,
        StoreLockedError,
        TrainingError,
        UnknownComponentError,
    )
    from harness.generate.backends import (
        load_backend,
    )
    from harness.generate.checkpoints import (
        check_adapter_dir,
        check_model_dir,
        checkpoint_hash,
        resolve_adapter_dir,
        resolve_model_dir,
    )
    from harness.generate.checkpoints import (
        content_hash as checkpoint_content_hash,
    )
    from harness.score.comparison import (
        ALPHA,
        Flip,
        MetricComparison,
        compare_metric,
        compare_runs,
        planned_mde,
    )
    from harness.score.evaluate import (
        EvalOptions,
        RunSummary,
        evaluate,
    )
    from harness.stats import (
        describe_clustering,
    )
    from harness.store import (
        Store,
    )
    from harness.store.queries import Queries
    from harness.store.results import (
        Clustering,
        ClusterSummary,
        CorpusScore,
        DetectorSummary,
        IssueExample,
        IssueSpan,
        IterationInfo,
        LoopInfo,
        RunError,
        RunInfo,
        RunListing,
        SampleDetail,
    )
    from harness.suite.config import TrainRowModel
    from harness.suite.files import (
        read_jsonl,
        read_training_rows,
    )
    from harness.suite.keys import (
        input_key,
        normalize,
        prompt_text,
    )
    from harness.suite.load import (
        Suite,
        load_suite,
    )
    from harness.suite.prompts import (
        PromptConfig,
        instruction_prompt,
        render_prompt,
    )
    from harness.train import (
        InstructionTuner,
        TrainingArgs,
        quiet_peft_version_skew,
    )
    from harness.types import (
        UNCLUSTERED,
        Cluster,
        Completion,
        ComponentError,
        Failure,
        FinishReason,
        Generation,
        GenerationConfig,
        Issue,
        Item,
        ModelSpec,
        Progress,
        Sample,
        TrainingExample,
        TrainingOutcome,
    )
