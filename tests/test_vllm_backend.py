"""The `vllm` backend: a clear line where vLLM is missing; on a GPU, the hf backend's outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.components.plugin_manager import load_plugins
from harness.score.evaluate import load_backend
from harness.types import GenerationConfig, ModelSpec

ECHO = Path(__file__).parent / "data" / "echo_suite"
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_the_backend_is_registered_without_importing_vllm() -> None:
    registry = load_plugins(autoload=False).registry
    assert registry.backend("vllm", where="--backend").name == "vllm"


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here: the missing-package message cannot be shown")
def test_eval_without_vllm_is_one_line_and_exit_2(tiny_model_dir, tmp_path) -> None:
    store = tmp_path / "store.duckdb"
    out = CliRunner().invoke(main, ["--store", str(store), "eval", str(ECHO), "--backend", "vllm",
                                    "--model", str(tiny_model_dir), "--no-report"])
    assert out.exit_code == 2, out.output
    assert "pip install 'harness-loop[vllm]'" in out.output and "Traceback" not in out.output


@pytest.mark.slow
@pytest.mark.skipif(not (HAS_VLLM and _gpu()), reason="needs vllm and a CUDA GPU (pip install 'harness-loop[vllm]')")
def test_vllm_greedy_outputs_match_the_hf_backend(tiny_model_dir) -> None:
    registry = load_plugins(autoload=False).registry
    prompts = ["### Instruction:\nRepeat.\n\n### Input:\nhello\n\n### Response:\n", "Hello", "Count: 1, 2,"]
    config = GenerationConfig(max_new_tokens=8)
    hf = load_backend(ModelSpec(str(tiny_model_dir), options={"device": "cuda", "dtype": "float32"}), registry)
    vllm = load_backend(ModelSpec(str(tiny_model_dir), backend="vllm", options={"dtype": "float32"}), registry)
    expected, got = hf.generate(prompts, config), vllm.generate(prompts, config)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in expected]
    nll = vllm.loglikelihood(prompts[:1], [" hello"])[0]
    assert nll[0] == pytest.approx(hf.loglikelihood(prompts[:1], [" hello"])[0][0], rel=1e-3)
