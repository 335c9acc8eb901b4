"""Data-parallel generation on a local Ray cluster: same store, same results as one process.

One Ray instance (started the way `harness eval --ray` starts it) serves the whole
module; each test makes its own executor, so its actors start and stop with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from harness.cli.main import main
from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError
from harness.generate.ray import PluginSetup, RayExecutor, ShardFile
from harness.score.evaluate import EvalOptions, evaluate
from harness.store import Store
from harness.suite.load import load_suite
from harness.testing import mock_backend_plugin, mock_spec
from harness.types import ModelSpec

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'harness-loop[ray]')")

ECHO = Path(__file__).parent / "data" / "echo_suite"

FLAKY_PLUGIN = '''
"""Echoes the input; fails on inputs that start with "boom" while a flag file exists."""
import os
from pathlib import Path

from harness import Backend, Completion, hookimpl
from harness.testing import echo_input

FLAG = Path({flag!r})


class FlakyEcho(Backend):
    name = "flaky_echo"

    @property
    def checkpoint_hash(self):
        return "flaky-echo-" + self.spec.path

    def generate(self, prompts, config, *, seeds=None, progress=None):
        out = []
        for prompt in prompts:
            text = echo_input(prompt)
            if text.startswith("boom") and FLAG.exists():
                raise ConnectionError(f"server went away (pid {{os.getpid()}})")
            out.append(Completion(text, len(prompt.split()), len(text.split()), "eos"))
        return out


@hookimpl
def harness_register_backends(registry):
    registry.add_backend(FlakyEcho)
'''


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    """A local Ray instance, started by the executor itself (2 CPUs here), shut down at the end."""
    assert not ray.is_initialized()
    starter = RayExecutor(PluginSetup())
    starter.start()
    assert ray.cluster_resources()["CPU"] == len(os.sched_getaffinity(0))
    yield
    starter.close()
    assert not ray.is_initialized()


class Shards:
    """Records each shard file as the coordinator receives it, and checks it is real."""

    def __init__(self) -> None:
        self.files: list[ShardFile] = []

    def __call__(self, shard: ShardFile) -> None:
        table = pq.read_table(shard.path)  # on disk, as Parquet, when the coordinator gets it
        assert table.num_rows == shard.rows
        self.files.append(shard)


def results(store: Store, run_id: int) -> dict[str, Any]:
    outputs = {
        (r["sample_id"], r["draw"]): (r["text"], r["finish_reason"], r["completion_tokens"])
        for r in store.query(
            "SELECT sample_id, draw, text, finish_reason, completion_tokens "
            "FROM run_generations JOIN generations USING (cache_key) WHERE run_id = ?",
            [run_id],
        )
    }
    scores = {
        (r["sample_id"], r["metric"]): r["value"]
        for r in store.query("SELECT sample_id, metric, value FROM sample_scores WHERE run_id = ?", [run_id])
    }
    corpus = {
        r["metric"]: (r["value"], r["ci_low"], r["ci_high"])
        for r in store.query("SELECT metric, value, ci_low, ci_high FROM corpus_scores WHERE run_id = ?", [run_id])
    }
    issues = sorted(
        (r["sample_id"], r["detector"], r["severity"])
        for r in store.query("SELECT sample_id, detector, severity FROM issues WHERE run_id = ?", [run_id])
    )
    return {"outputs": outputs, "scores": scores, "corpus": corpus, "issues": issues}


def assert_stored_once(store: Store, run_id: int, jobs: int) -> None:
    assert store.scalar("SELECT count(*) FROM run_generations WHERE run_id = ?", [run_id]) == jobs
    assert store.scalar("SELECT count(*) FROM generations") == jobs
    assert store.scalar("SELECT count(DISTINCT cache_key) FROM generations") == jobs


def assert_written_by_workers(shards: Shards, executor: RayExecutor, store: Store, jobs: int) -> None:
    """Every generation came in exactly one Parquet shard from an actor, since deleted."""
    worker_pids = {info.pid for info in executor.worker_infos}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert {shard.pid for shard in shards.files} <= worker_pids
    assert sum(shard.rows for shard in shards.files) == jobs
    assert len({shard.index for shard in shards.files}) == len(shards.files)
    assert not any(Path(shard.path).exists() for shard in shards.files)
    assert not store.path.with_name(store.path.name + ".shards").exists()


def write_suite(root: Path, extra: str = "", inputs: list[str] | None = None) -> Path:
    root.mkdir()
    if inputs is None:
        (root / "data.jsonl").write_text((ECHO / "data.jsonl").read_text())
    else:
        lines = [json.dumps({"id": f"s{i:02d}", "input": text, "reference": text}) for i, text in enumerate(inputs)]
        (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    (root / "suite.yaml").write_text((ECHO / "suite.yaml").read_text() + extra)
    return root


@pytest.mark.slow
def test_the_tiny_hf_model_on_ray_gives_what_one_process_gives(
    local_cluster: None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Perplexity needs reference log-likelihoods (scored on the coordinator); the detector
    # asks for sampled draws, whose per-sample seeds must reach the workers unchanged.
    suite = load_suite(
        write_suite(
            tmp_path / "suite",
            "  - perplexity\ndetectors:\n  - name: self_consistency\n    args: {draws: 2}\n",
        )
    )
    plugins = load_plugins(autoload=False)
    spec = ModelSpec(str(tiny_model_dir))
    options = {"chunk_size": 5}  # 24 jobs -> 5 shards, spread over 2 workers
    jobs = 8 * 3

    with Store.writer(tmp_path / "local.duckdb") as store:
        local = evaluate(suite, spec, store, plugins, EvalOptions(**options))
        expected = results(store, local.run_id)

    shards = Shards()
    with RayExecutor(plugins, workers=2, on_shard=shards) as executor, Store.writer(tmp_path / "ray.duckdb") as store:
        summary = evaluate(suite, spec, store, plugins, EvalOptions(**options, executor=executor))
        assert summary.status == "completed" and (summary.generated, summary.cached) == (jobs, 0)
        assert results(store, summary.run_id) == expected
        assert summary.corpus == local.corpus
        assert_stored_once(store, summary.run_id, jobs)
        assert len(shards.files) == 5
        assert_written_by_workers(shards, executor, store, jobs)
        assert {info.torch_threads for info in executor.worker_infos} == {1}
        assert {info.checkpoint_hash for info in executor.worker_infos} == {store.scalar("SELECT checkpoint_hash FROM runs")}

    again = Shards()
    with RayExecutor(plugins, workers=2, on_shard=again) as executor, Store.writer(tmp_path / "ray.duckdb") as store:
        second = evaluate(suite, spec, store, plugins, EvalOptions(**options, executor=executor, resume=False))
        assert (second.generated, second.cached) == (0, jobs)
        assert executor.worker_infos == [] and again.files == []  # the cache answered: no actor started
        assert results(store, second.run_id) == expected
        assert store.scalar("SELECT count(*) FROM generations") == jobs


def test_the_mock_backend_on_ray_gives_what_one_process_gives(
    local_cluster: None, tmp_path: Path, mock_backend: Any
) -> None:
    suite = load_suite(ECHO)
    plugins = load_plugins(autoload=False, extra=[(mock_backend_plugin, "harness.testing.mock")])
    with Store.writer(tmp_path / "local.duckdb") as store:
        local = evaluate(suite, mock_spec(), store, plugins, EvalOptions(chunk_size=3))
        expected = results(store, local.run_id)
    mock_backend.calls = []

    shards = Shards()
    with RayExecutor(plugins, workers=2, on_shard=shards) as executor, Store.writer(tmp_path / "ray.duckdb") as store:
        summary = evaluate(suite, mock_spec(), store, plugins, EvalOptions(chunk_size=3, executor=executor))
        assert (summary.generated, summary.cached) == (8, 0)
        assert mock_backend.calls == []  # the coordinator's backend generated nothing
        assert results(store, summary.run_id) == expected and summary.corpus == local.corpus
        assert_stored_once(store, summary.run_id, 8)
        assert sorted(shard.rows for shard in shards.files) == [2, 3, 3]
        assert_written_by_workers(shards, executor, store, 8)

        second = evaluate(suite, mock_spec(), store, plugins, EvalOptions(chunk_size=3, executor=executor, resume=False))
        assert (second.generated, second.cached) == (0, 8) and len(shards.files) == 3
        assert results(store, second.run_id) == expected


def test_shards_are_small_enough_for_every_worker() -> None:
    """One process takes whole commit chunks (the larger, the larger its batches); on Ray a
    chunk is cut so that every worker has a shard."""
    from harness.generate.executors import LocalExecutor

    executor = RayExecutor(PluginSetup(), workers=2)  # not started: the sizes need no cluster
    assert executor.shard_size(256, 200) == 100
    assert executor.shard_size(3, 8) == 3
    assert executor.shard_size(256, 1) == 1
    assert LocalExecutor().shard_size(256, 200) == 256


def test_a_failed_ray_run_keeps_finished_shards_and_resumes(local_cluster: None, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    plugin = tmp_path / "flaky_echo.py"
    plugin.write_text(FLAKY_PLUGIN.format(flag=str(flag)))
    inputs = [f"item {i} says hello" for i in range(11)] + ["boom, a longer input that sorts into the last shard"]
    suite = load_suite(write_suite(tmp_path / "suite", inputs=inputs))
    plugins = load_plugins([plugin], autoload=False)
    spec = ModelSpec("m", backend="flaky_echo")
    options = EvalOptions(chunk_size=2)  # 6 shards of 2

    shards = Shards()
    executor = RayExecutor(plugins, workers=2, on_shard=shards)
    # The workers must load the plugin from what the coordinator sent, not from disk.
    plugin.unlink()
    with executor, Store.writer(tmp_path / "ray.duckdb") as store:
        options.executor = executor
        with pytest.raises(ConnectionError, match="server went away") as failure:
            evaluate(suite, spec, store, plugins, options)
        assert any("raised on a Ray worker" in note for note in failure.value.__notes__)
        run = store.query("SELECT run_id, status, error FROM runs")[0]
        assert run["status"] == "failed" and "server went away" in run["error"]
        kept = {r["sample_id"] for r in store.query("SELECT sample_id FROM run_generations")}
        # Whole shards only (2 samples each), never the failing one; at least the two shards
        # committed before the last shard was even sent.
        assert "s11" not in kept and len(kept) % 2 == 0 and len(kept) >= 4
        assert store.scalar("SELECT count(*) FROM generations") == len(kept)
        assert executor.worker_infos == []  # workers of an abandoned run are stopped
        assert not store.path.with_name(store.path.name + ".shards").exists()

        flag.unlink()
        shards.files.clear()
        resumed = evaluate(suite, spec, store, plugins, options)
        assert resumed.resumed and resumed.run_id == run["run_id"]
        assert resumed.generated == 12 - len(kept) == sum(shard.rows for shard in shards.files)
        outcome = results(store, resumed.run_id)
        assert_stored_once(store, resumed.run_id, 12)

    with Store.writer(tmp_path / "local.duckdb") as store:
        local = evaluate(suite, spec, store, plugins, EvalOptions(chunk_size=2))
        assert results(store, local.run_id) == outcome


def cli(store: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--store", str(store), *args])


def test_harness_eval_ray_on_the_command_line(local_cluster: None, tmp_path: Path) -> None:
    plugin = tmp_path / "flaky_echo.py"
    plugin.write_text(FLAKY_PLUGIN.format(flag=str(tmp_path / "no-flag")))
    suite = write_suite(tmp_path / "suite")
    args = ["--plugin", str(plugin), "eval", str(suite), "--backend", "flaky_echo", "--model", "m", "--no-report"]

    on_ray = cli(tmp_path / "ray.duckdb", *args, "--ray", "--workers", "2", "--commit-every", "3")
    assert on_ray.exit_code == 0, on_ray.output
    assert "8 generated, 0 from cache" in on_ray.output
    local = cli(tmp_path / "local.duckdb", *args)
    assert local.exit_code == 0, local.output
    with Store.reader(tmp_path / "ray.duckdb") as ray_store, Store.reader(tmp_path / "local.duckdb") as local_store:
        assert results(ray_store, 1) == results(local_store, 1)
    assert ray.is_initialized()  # the CLI used the running instance and left it running

    too_many = cli(tmp_path / "other.duckdb", *args, "--ray", "--workers", "3")
    assert too_many.exit_code == 2
    assert "--workers 3 needs 1 CPU per worker" in too_many.output and "at most 2 workers" in too_many.output
    assert not (tmp_path / "other.duckdb").exists()  # refused before the store was touched

    no_ray = cli(tmp_path / "other.duckdb", *args, "--workers", "2", "--ray-address", "auto")
    assert no_ray.exit_code == 2
    assert "--ray-address and --workers only apply with --ray" in no_ray.output


def test_without_ray_installed_ray_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'harness-loop\[ray\]'"):
        RayExecutor(PluginSetup())
    out = cli(tmp_path / "store.duckdb", "eval", str(ECHO), "--ray")
    assert out.exit_code == 2 and "--ray needs Ray" in out.output and "the harness's ray extra" in out.output


def test_importing_the_harness_does_not_import_ray() -> None:
    code = (
        "import sys, harness, harness.cli.main, harness.score.evaluate, harness.generate.executors, harness.generate.ray, harness.generate.cache;"
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
