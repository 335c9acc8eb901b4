"""Every built-in detector registers through the plugin manager, validates its arguments
and returns well-formed issues on awkward inputs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.components.contracts import Detector, Needs
from harness.components.plugin_manager import BUILTIN_PLUGINS, load_plugins
from harness.errors import ConfigError
from harness.score.scoring import ResolvedDetector, check_issue, run_detector
from harness.suite.config import DetectorConfig
from harness.suite.files import validate_args
from harness.testing import item

EXPECTED = {
    "repetition": "harness.plugins.detectors.repetition",
    "length": "harness.plugins.detectors.length",
    "grounding": "harness.plugins.detectors.grounding",
    "self_consistency": "harness.plugins.detectors.self_consistency",
    "misspelling": "harness.plugins.detectors.misspelling",
    "inconsistency": "harness.plugins.detectors.inconsistency",
}


@pytest.fixture(scope="module")
def registry():
    return load_plugins(autoload=False).registry


def resolved(registry, name: str, **args) -> ResolvedDetector:
    reg = registry.get("detector", name)
    return ResolvedDetector(
        DetectorConfig(name=name, args=args),
        reg.component,
        reg.component.Args(**args),
        reg.plugin.name,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registers_under_its_name_from_its_module(registry, name: str) -> None:
    reg = registry.get("detector", name)
    assert reg.plugin.name == EXPECTED[name]
    assert reg.plugin.source == "builtin"
    assert EXPECTED[name] in BUILTIN_PLUGINS
    assert isinstance(reg.component, Detector)
    assert reg.component.name == name
    assert reg.description
    doc = type(reg.component).__doc__ or ""
    assert len(doc.split()) > 40, "the docstring says what it measures and its defaults"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_unknown_arguments_are_errors_that_name_the_field(registry, name: str) -> None:
    detector = registry.detector(name)
    with pytest.raises(
        ConfigError,
        match=r"suite.yaml: detectors\[0\]\.min_severty: unknown argument.*min_severity",
    ):
        validate_args(detector, {"min_severty": 0.3}, "suite.yaml: detectors[0]")
    with pytest.raises(ValidationError):
        detector.Args(min_severity=2.0)
    assert (
        detector.Args().model_dump() == detector.Args(**detector.Args().model_dump()).model_dump()
    )


def test_needs(registry) -> None:
    sc = registry.detector("self_consistency")
    assert sc.needs(sc.Args()) == Needs(draws=4, draw_temperature=0.8)
    assert sc.needs(sc.Args(draws=6, draw_temperature=1.0)) == Needs(draws=6, draw_temperature=1.0)
    inc = registry.detector("inconsistency")
    assert inc.needs(inc.Args()).draws == 0
    assert inc.needs(inc.Args(draws=3)).draws == 3
    for name in ("repetition", "length", "grounding", "misspelling"):
        detector = registry.detector(name)
        assert detector.needs(detector.Args()) == Needs()


AWKWARD = [
    ("empty", ""),
    ("whitespace", "   \n\t "),
    ("unicode", "Ефемерний — «короткочасний». 短暂的。 Émigré café naïve 👍👍👍 ½ ²"),
    ("punctuation", "?!... --- ### ***"),
    ("digits", "1 2 3 4 5 6 7 8 9 10 11 12"),
    ("long loop", "the cat sat. " * 400),
]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("case,output", AWKWARD, ids=[c for c, _ in AWKWARD])
def test_awkward_outputs_give_well_formed_issues(
    registry, name: str, case: str, output: str
) -> None:
    draws = ["A short answer.", output, "", "Ефемерний"]
    items = [
        item(output, id="no-ref", draws=draws, finish_reason="length"),
        item(
            output,
            id="ref",
            reference=["ephemeral", "lasting a very short time"],
            draws=draws,
            group="g",
        ),
        item("A different answer.", id="other", draws=draws, group="g"),
    ]
    issues, errors = run_detector(resolved(registry, name), items)
    assert errors == []
    for issue in issues:
        out = {i.sample.id: i.output for i in items}[issue.sample_id]
        assert check_issue(issue, out) is None
        assert issue.kind and issue.message.strip()
        assert 0.0 <= issue.severity <= 1.0
    # the data is small and JSON-able
    import json

    for issue in issues:
        assert len(json.dumps(dict(issue.data))) < 5000


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_empty_run(registry, name: str) -> None:
    detector = registry.detector(name)
    assert list(detector.detect([], detector.Args())) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_hook_registers_one_detector(name: str) -> None:
    import importlib

    from harness.components.registry import Registry

    module = importlib.import_module(EXPECTED[name])
    fresh = Registry()
    module.harness_register_detectors(fresh)
    assert fresh.names("detector") == [name]
