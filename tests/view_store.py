"""A small store for the viewer's tests: a two-iteration loop (its eval, guard and
training runs, clusters and datasets) and one run whose outputs hold markup."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.components.plugin_manager import load_plugins
from harness.loop.config import LoopConfig
from harness.loop.run import run_loop
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import MockBackend, mock_backend_plugin, mock_spec

PLUGIN = Path(__file__).parent / "data" / "plugins" / "scripted_loop.py"
WORDS = [f"term{i:02d}" for i in range(30)]
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


@dataclass
class ViewStore:
    path: Path
    plugins: object
    loop_id: int
    iteration_runs: list[int]
    """The eval run of each iteration (on the held-out split), in order."""
    mining_runs: list[int]
    """The run of each iteration on the mining split, whose failures were clustered."""
    hostile_run: int
    fixed_sample: str
    """A sample that fails at iteration 0 and passes at iteration 1."""


def reference(word: str) -> str:
    return f"A made-up concept named {word} that the base model cannot possibly know about."


def build(tmp_path: Path) -> ViewStore:
    suites = _suites(tmp_path)
    plugins = load_plugins([PLUGIN], autoload=False, extra=[(mock_backend_plugin, "mock")])
    module = sys.modules[plugins.registry.backend("scripted").__module__]
    module.ScriptedBackend.references = {w: reference(w) for w in WORDS}
    module.ScriptedTrainer.calls = []
    path = tmp_path / "view.duckdb"
    with Store.writer(path) as store:
        config = LoopConfig(
            suite=str(suites["target"]), model="base-model", backend="scripted", trainer="scripted",
            trainer_args={"plan": ["good-15", "good-30"]}, guard=str(suites["guard"]), budget=10,
            iterations=2, featurizer="tfidf", clusterer_args={"min_cluster_size": 2}, resamples=200,
            selection="random",  # no embedder to load: the viewer needs the records, not the selection
        )
        result = run_loop(config, store, plugins)
        original = MockBackend.responder
        MockBackend.responder = staticmethod(lambda prompt: HOSTILE + " again " + HOSTILE)
        try:
            hostile = evaluate(
                load_suite(suites["hostile"]), mock_spec(), store, plugins, EvalOptions(resamples=100)
            )
        finally:
            MockBackend.responder = original
    return ViewStore(
        path=path,
        plugins=plugins,
        loop_id=result.loop_id,
        iteration_runs=[r.eval_run_id for r in result.iterations],
        mining_runs=[r.mining_run_id for r in result.iterations],
        hostile_run=hostile.run_id,
        fixed_sample=sorted(WORDS)[0],
    )


def _suites(tmp_path: Path) -> dict[str, Path]:
    target = tmp_path / "terms"
    target.mkdir()
    # The loop mines dev and decides on test: the 30 words the viewer's tests look at are
    # the held-out split; the scripted backend knows only their references.
    with open(target / "test.jsonl", "w") as f:
        for i, w in enumerate(WORDS):
            f.write(json.dumps({"id": w, "input": w, "reference": reference(w), "tags": ["even" if i % 2 else "odd"]}) + "\n")
    with open(target / "dev.jsonl", "w") as f:
        for i in range(30):
            w = f"mined{i:02d}"
            f.write(json.dumps({"id": w, "input": w, "reference": reference(w), "tags": ["even" if i % 2 else "odd"]}) + "\n")
    with open(target / "pool.jsonl", "w") as f:
        for i in range(120):
            f.write(json.dumps({"id": f"p{i}", "instruction": "Define the word.", "input": f"pool{i:03d}",
                                "output": f"A different made-up concept called pool{i:03d}, number {i}."}) + "\n")
    (target / "suite.yaml").write_text(
        "name: terms\nversion: 1\nsplits:\n  dev: dev.jsonl\n  test: test.jsonl\npool: pool.jsonl\n"
        "instruction: Define the word.\n"
        "metrics:\n  - name: chrf\n    sample_threshold: 60\n"
    )
    guard = tmp_path / "guard"
    guard.mkdir()
    with open(guard / "eval.jsonl", "w") as f:
        for i in range(20):
            text = f"keep this sentence number {i} intact"
            f.write(json.dumps({"id": f"g{i}", "input": text, "reference": text}) + "\n")
    (guard / "suite.yaml").write_text(
        "name: guard\nversion: 1\ndata: eval.jsonl\ninstruction: Repeat the input.\nmetrics:\n  - chrf\n"
    )
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    with open(hostile / "eval.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"h{i}", "input": f"item {i}", "reference": f"answer {i}"}) + "\n")
    (hostile / "suite.yaml").write_text(
        "name: hostile\nversion: 1\ndata: eval.jsonl\ninstruction: Repeat the input.\n"
        "metrics:\n  - name: chrf\n    sample_threshold: 50\ndetectors:\n  - repetition\n"
    )
    return {"target": target, "guard": guard, "hostile": hostile}
