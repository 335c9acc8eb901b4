"""The plugin core: registration, discovery, errors that name the plugin, tracing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.components import hookspecs
from harness.components.contracts import Detector, Metric, detector
from harness.components.hookspecs import hookimpl
from harness.components.plugin_manager import BUILTIN_PLUGINS, load_plugins
from harness.components.registry import Registry
from harness.errors import PluginError, UnknownComponentError
from harness.types import Issue

TESTS = Path(__file__).parent


@detector("shouting")
def shouting(item, min_ratio: float = 0.5):
    """Outputs written mostly in capitals."""
    letters = [c for c in item.output if c.isalpha()]
    if letters and sum(c.isupper() for c in letters) / len(letters) >= min_ratio:
        return Issue(severity=1.0, message="mostly capitals")
    return None


class ShoutingPlugin:
    @staticmethod
    @hookimpl
    def harness_register_detectors(registry: Registry) -> None:
        registry.add_detector(shouting)


def test_builtins_register_through_the_public_hooks() -> None:
    plugins = load_plugins(autoload=False)
    names = {(e.kind, e.name) for e in plugins.registry.entries()}
    assert ("metric", "chrf") in names and ("backend", "hf") in names
    for entry in plugins.registry.entries():
        assert entry.plugin.name in BUILTIN_PLUGINS
        assert entry.plugin.source == "builtin"


def test_each_run_gets_a_fresh_plugin_manager() -> None:
    first = load_plugins(autoload=False, extra=[(ShoutingPlugin(), "shout")])
    second = load_plugins(autoload=False)
    assert "shouting" in first.registry.names("detector")
    assert "shouting" not in second.registry.names("detector")
    assert first.manager is not second.manager


def test_function_detector_args_come_from_its_signature() -> None:
    plugins = load_plugins(autoload=False, extra=[(ShoutingPlugin(), "shout")])
    det = plugins.registry.detector("shouting")
    assert isinstance(det, Detector)
    assert det.Args().min_ratio == 0.5
    assert det.description == "Outputs written mostly in capitals."
    with pytest.raises(Exception, match="min_ratio"):
        det.Args(min_ratio="lots")


def test_duplicate_names_are_errors_naming_both_plugins() -> None:
    class Again:
        @staticmethod
        @hookimpl
        def harness_register_detectors(registry: Registry) -> None:
            registry.add_detector(shouting)

    with pytest.raises(PluginError) as info:
        load_plugins(autoload=False, extra=[(ShoutingPlugin(), "first"), (Again(), "second")])
    message = str(info.value)
    assert "'second'" in message and "'first'" in message and "harness_register_detectors" in message


def test_wrong_component_type_is_an_error_naming_the_plugin() -> None:
    class Wrong:
        @staticmethod
        @hookimpl
        def harness_register_metrics(registry: Registry) -> None:
            registry.add_metric("not a metric")  # type: ignore[arg-type]

    with pytest.raises(PluginError, match=r"plugin 'wrong'.*harness_register_metrics.*Metric"):
        load_plugins(autoload=False, extra=[(Wrong(), "wrong")])


def test_a_hook_that_raises_names_plugin_and_hook() -> None:
    class Broken:
        @staticmethod
        @hookimpl
        def harness_register_trainers(registry: Registry) -> None:
            raise RuntimeError("boom")

    with pytest.raises(PluginError, match=r"plugin 'broken', hook harness_register_trainers: raised RuntimeError: boom"):
        load_plugins(autoload=False, extra=[(Broken(), "broken")])


def test_misspelt_hook_names_are_caught() -> None:
    class Typo:
        @staticmethod
        @hookimpl
        def harness_register_detector(registry: Registry) -> None:  # missing the s
            pass

    with pytest.raises(PluginError, match="Did you mean 'harness_register_detectors'"):
        load_plugins(autoload=False, extra=[(Typo(), "typo")])


def test_unknown_names_answer_did_you_mean() -> None:
    registry = load_plugins(autoload=False).registry
    with pytest.raises(UnknownComponentError) as info:
        registry.metric("chrff")
    assert "Did you mean 'chrf'?" in str(info.value)
    assert "bleu" in str(info.value)  # lists what exists


def test_plugin_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "my_metric.py"
    path.write_text(
        textwrap.dedent(
            """
            from harness import hookimpl, metric

            @metric("length_chars", higher_is_better=False)
            def length_chars(item):
                return len(item.output)

            @hookimpl
            def harness_register_metrics(registry):
                registry.add_metric(length_chars)
            """
        )
    )
    plugins = load_plugins([path], autoload=False)
    entry = plugins.registry.get("metric", "length_chars")
    assert entry.plugin.name == "my_metric"
    assert entry.plugin.source == f"file ({path})"
    assert entry.plugin.version.startswith("file-")
    assert isinstance(entry.component, Metric)


def test_plugin_file_that_raises_on_import_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad_plugin.py"
    path.write_text("import os\n\nraise ValueError('cannot start')\n")
    with pytest.raises(PluginError) as info:
        load_plugins([path], autoload=False)
    assert f"{path}:3" in str(info.value)
    assert "ValueError: cannot start" in str(info.value)
    assert info.value.plugin == "bad_plugin" and info.value.hook == "import"


def test_missing_plugin_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        load_plugins([tmp_path / "nope.py"], autoload=False)


def _fake_distribution(root: Path, module_body: str) -> None:
    """An installed distribution with a `harness` entry point, made by hand."""
    (root / "fake_harness_plugin.py").write_text(textwrap.dedent(module_body))
    dist = root / "fake_harness_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-harness-plugin\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[harness]\nfake = fake_harness_plugin\n")


def test_entry_point_plugins_load_and_autoload_can_be_turned_off(tmp_path: Path) -> None:
    _fake_distribution(
        tmp_path,
        """
        from harness import detector, hookimpl

        @detector("fake_detector")
        def fake_detector(item):
            return None

        @hookimpl
        def harness_register_detectors(registry):
            registry.add_detector(fake_detector)
        """,
    )
    script = textwrap.dedent(
        """
        import sys
        from harness.components.plugin_manager import load_plugins
        reg = load_plugins().registry
        entry = reg.get("detector", "fake_detector") if "fake_detector" in reg.names("detector") else None
        print(entry.plugin.name, entry.plugin.source, entry.plugin.version if entry else "", sep="|") if entry else print("absent")
        """
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    on = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "fake|entry point (fake-harness-plugin)|1.2.3"
    off = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "HARNESS_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert off.stdout.strip() == "absent"


def test_entry_point_that_fails_to_import_names_it(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "raise ImportError('missing dependency xyz')\n")
    script = "from harness.components.plugin_manager import load_plugins; load_plugins()"
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "plugin 'fake', hook import" in out.stderr and "missing dependency xyz" in out.stderr


def test_trace_prints_every_hook_call(capsys: pytest.CaptureFixture[str]) -> None:
    load_plugins(autoload=False, trace=True, extra=[(ShoutingPlugin(), "shout")])
    err = capsys.readouterr().err
    assert re.search(r"\[harness trace\] harness_register_detectors -> shout \(\d+\.\d ms\)", err)
    assert "harness_register_metrics -> harness.plugins.metrics" in err


def test_observer_failures_are_returned_not_raised() -> None:
    seen = []

    class Observer:
        @staticmethod
        @hookimpl
        def harness_eval_started(run_id: int, run: dict) -> None:
            seen.append(run_id)

    class Failing:
        @staticmethod
        @hookimpl
        def harness_eval_started(run_id: int) -> None:
            raise RuntimeError("tracker down")

    plugins = load_plugins(autoload=False, extra=[(Observer(), "obs"), (Failing(), "failing")])
    failures = plugins.notify("harness_eval_started", run_id=7, run={})
    assert seen == [7]
    assert [(f.plugin, f.hook) for f in failures] == [("failing", "harness_eval_started")]
    assert "tracker down" in failures[0].message


def test_every_hook_has_a_test() -> None:
    """A hook that no test mentions is a hook nobody checked."""
    specs = [name for name in dir(hookspecs) if name.startswith("harness_")]
    sources = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))
    untested = [name for name in specs if not re.search(rf"\b{name}\b", sources)]
    assert not untested, f"hooks without a test: {untested}"


class EveryKindPlugin:
    """A third-party plugin that registers one component of every kind."""

    @staticmethod
    @hookimpl
    def harness_register_backends(registry: Registry) -> None:
        from harness.testing import MockBackend

        class EchoBackend(MockBackend):
            name = "echo3"

        registry.add_backend(EchoBackend)

    @staticmethod
    @hookimpl
    def harness_register_featurizers(registry: Registry) -> None:
        import numpy as np

        from harness.components.contracts import Featurizer

        class Lengths(Featurizer):
            name = "lengths"

            def featurize(self, failures, args):
                return np.array([[len(f.generation.text)] for f in failures], dtype=float)

        registry.add_featurizer(Lengths())

    @staticmethod
    @hookimpl
    def harness_register_clusterers(registry: Registry) -> None:
        import numpy as np

        from harness.components.contracts import Clusterer

        class Halves(Clusterer):
            name = "halves"

            def cluster(self, features, args):
                return (features[:, 0] > np.median(features[:, 0])).astype(int)

        registry.add_clusterer(Halves())

    @staticmethod
    @hookimpl
    def harness_register_data_sources(registry: Registry) -> None:
        from harness.components.contracts import DataSource
        from harness.types import TrainingExample

        class Constant(DataSource):
            name = "constant"

            def gather(self, request, args):
                return [TrainingExample("Say hi.", "", "hi", source="constant")] * request.budget

        registry.add_data_source(Constant())

    @staticmethod
    @hookimpl
    def harness_register_trainers(registry: Registry) -> None:
        from harness.components.contracts import Trainer

        class NoOp(Trainer):
            name = "noop"

            def train(self, base, train, validation, output_dir, args, *, prompt, progress=None):
                raise RuntimeError("not for training")

        registry.add_trainer(NoOp())

    @staticmethod
    @hookimpl
    def harness_register_reports(registry: Registry) -> None:
        from harness.components.contracts import ReportView

        class Count(ReportView):
            name = "count"

            def build(self, queries, **params):
                return queries.runs()

        registry.add_report(Count())


def test_every_registration_hook_adds_a_third_party_component() -> None:
    """harness_register_backends, _featurizers, _clusterers, _data_sources, _trainers and
    _reports each accept a third-party component alongside the built-ins."""
    plugins = load_plugins(autoload=False, extra=[(EveryKindPlugin(), "every_kind")])
    registry = plugins.registry
    added = {
        ("backend", "echo3"), ("featurizer", "lengths"), ("clusterer", "halves"),
        ("data_source", "constant"), ("trainer", "noop"), ("report", "count"),
    }
    for kind, name in added:
        entry = registry.get(kind, name)
        assert entry.plugin.name == "every_kind" and entry.plugin.source == "direct"
    # Built-ins of each kind are still there beside them.
    for kind in ("backend", "featurizer", "clusterer", "data_source", "trainer", "report"):
        assert any(e.plugin.source == "builtin" for e in registry.entries(kind)), kind
