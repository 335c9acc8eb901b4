"""Every hook the harness calls, in one place.

A plugin is a module (or object) with functions decorated by `harness.hookimpl` whose
names match the specs below. Implement only the hooks you need; arguments may be
omitted from the right (pluggy passes only the ones your function names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from harness.components.registry import Registry

PROJECT = "harness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------
# Start-up: components arrive through the registry
# ---------------------------------------------------------------------------


@hookspec
def harness_register_metrics(registry: Registry) -> None:
    """Register metrics with `registry.add_metric(...)`."""


@hookspec
def harness_register_detectors(registry: Registry) -> None:
    """Register issue detectors with `registry.add_detector(...)`."""


@hookspec
def harness_register_backends(registry: Registry) -> None:
    """Register model backend classes with `registry.add_backend(...)`."""


@hookspec
def harness_register_featurizers(registry: Registry) -> None:
    """Register featurizers (failing samples -> vectors) with `registry.add_featurizer(...)`."""


@hookspec
def harness_register_clusterers(registry: Registry) -> None:
    """Register clusterers (vectors -> groups) with `registry.add_clusterer(...)`."""


@hookspec
def harness_register_data_sources(registry: Registry) -> None:
    """Register sources of targeted training data with `registry.add_data_source(...)`."""


@hookspec
def harness_register_trainers(registry: Registry) -> None:
    """Register trainers with `registry.add_trainer(...)`."""


@hookspec
def harness_register_reports(registry: Registry) -> None:
    """Register report views with `registry.add_report(...)`."""


# ---------------------------------------------------------------------------
# Evaluation: observe a run (for notifications, external trackers, ...)
# ---------------------------------------------------------------------------


@hookspec
def harness_eval_started(run_id: int, run: dict[str, Any]) -> None:
    """An evaluation run started (or resumed); `run` is its stored header."""


@hookspec
def harness_eval_finished(run_id: int, summary: dict[str, Any]) -> None:
    """An evaluation run finished; `summary` holds its status, corpus scores and issue counts."""


# ---------------------------------------------------------------------------
# The loop: observe iterations
# ---------------------------------------------------------------------------


@hookspec
def harness_iteration_finished(loop_id: int, iteration: dict[str, Any]) -> None:
    """A loop iteration ended; `iteration` holds its runs, data, checkpoint and decision."""
