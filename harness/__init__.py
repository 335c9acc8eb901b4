"""The harness: evaluate -> cluster errors -> add targeted data -> retrain.

Plugin authors import only from here; every other module is private and may change.
Names are imported on first use, so `import harness` stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # values
    "Sample": "harness.types",
    "Generation": "harness.types",
    "GenerationConfig": "harness.types",
    "Completion": "harness.types",
    "Item": "harness.types",
    "Issue": "harness.types",
    "TrainingExample": "harness.types",
    "ModelSpec": "harness.types",
    "PromptConfig": "harness.prompts",
    "instruction_prompt": "harness.prompts",
    # writing plugins
    "hookimpl": "harness.hookspecs",
    "Registry": "harness.registry",
    "Metric": "harness.components",
    "Detector": "harness.components",
    "Backend": "harness.components",
    "Featurizer": "harness.components",
    "Clusterer": "harness.components",
    "DataSource": "harness.components",
    "Trainer": "harness.components",
    "ReportView": "harness.components",
    "Needs": "harness.components",
    "NoArgs": "harness.components",
    "detector": "harness.components",
    "metric": "harness.components",
    # running
    "load_plugins": "harness.plugin_manager",
    "load_suite": "harness.suite",
    "Suite": "harness.suite",
    "evaluate": "harness.evaluate",
    "EvalOptions": "harness.evaluate",
    "RunSummary": "harness.evaluate",
    "Store": "harness.store",
    "DataRequest": "harness.datasources",
    "build_dataset": "harness.datasets",
    # reports: the query layer and the document model views build
    "Queries": "harness.queries",
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
    # errors
    "HarnessError": "harness.errors",
    "ConfigError": "harness.errors",
    "PluginError": "harness.errors",
    "NotFoundError": "harness.errors",
    "UnknownComponentError": "harness.errors",
    "StoreLockedError": "harness.errors",
    "TrainingError": "harness.errors",
    # training: what a trainer returns, and the engine the built-in trainers share
    "TrainingOutcome": "harness.training",
    "TrainingArgs": "harness.training",
    "InstructionTuner": "harness.training",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


class _Harness(types.ModuleType):
    """Keeps exported names stable: importing the submodule `harness.evaluate` would
    otherwise set the attribute `evaluate` to that module, so that `from harness import
    evaluate` gave the module or the function depending on what was imported before.
    The submodule stays importable (`from harness.evaluate import EvalOptions`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _EXPORTS:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Harness


if TYPE_CHECKING:
    from harness.components import (
        Backend,
        Clusterer,
        DataSource,
        Detector,
        Featurizer,
        Metric,
        Needs,
        NoArgs,
        ReportView,
        Trainer,
        detector,
        metric,
    )
    from harness.datasets import build_dataset
    from harness.datasources import DataRequest
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
    from harness.evaluate import EvalOptions, RunSummary, evaluate
    from harness.hookspecs import hookimpl
    from harness.plugin_manager import load_plugins
    from harness.prompts import PromptConfig, instruction_prompt
    from harness.queries import Queries
    from harness.registry import Registry
    from harness.store import Store
    from harness.suite import Suite, load_suite
    from harness.training import InstructionTuner, TrainingArgs, TrainingOutcome
    from harness.types import (
        Completion,
        Generation,
        GenerationConfig,
        Issue,
        Item,
        ModelSpec,
        Sample,
        TrainingExample,
    )
