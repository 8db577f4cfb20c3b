"""Entity embeddings for the compressed context: items and queries become small unit
vectors, computed once and cached by item id (queries by their text).

The embedding is a signed feature hash of the entity's words and category path (every
prefix of ``electronics.audio.headphone`` is a feature, so items of neighbouring categories
share features). It needs no model and costs a few microseconds, which the hot path of a
stream worker can afford at tens of thousands of events per second; two entities are similar
when they share category path, brand or words. Deterministic across processes and
restarts (blake2b, not Python's salted ``hash``), so a recovered context compares with new
events exactly as before the restart.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from hashlib import blake2b

import numpy as np
import numpy.typing as npt

DIMS = 64
Vector = npt.NDArray[np.float32]
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def features(text: str, category: str | None = None, brand: str | None = None) -> list[tuple[str, float]]:
    """The weighted features of one entity: category path prefixes weigh most, then brand,
    then the words of its text."""
    found: dict[str, float] = {}
    if category:
        parts = category.lower().split(".")
        for depth in range(1, len(parts) + 1):
            found["c:" + ".".join(parts[:depth])] = 1.0 + 0.5 * depth
    if brand:
        found["b:" + brand.lower()] = 1.5
    for word in _WORD.findall(text.lower())[:32]:
        if len(word) > 1:
            found.setdefault("w:" + word, 1.0)
    return list(found.items())


def embed(text: str, category: str | None = None, brand: str | None = None) -> Vector:
    """A unit vector (all zeros for an entity with no features)."""
    vector = np.zeros(DIMS, dtype=np.float32)
    for feature, weight in features(text, category, brand):
        digest = int.from_bytes(blake2b(feature.encode(), digest_size=8).digest(), "little")
        vector[digest % DIMS] += weight if digest >> 63 else -weight
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


class EntityCache:
    """Embeddings by entity key (item id, or ``q:`` + query text), least recently used
    evicted beyond ``capacity``."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._vectors: OrderedDict[str, Vector] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, text: str, category: str | None, brand: str | None) -> Vector:
        vector = self._vectors.get(key)
        if vector is not None:
            self.hits += 1
            self._vectors.move_to_end(key)
            return vector
        self.misses += 1
        vector = self._vectors[key] = embed(text, category, brand)
        if len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)
        return vector

    def __len__(self) -> int:
        return len(self._vectors)
