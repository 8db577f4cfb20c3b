"""The one small interface the pipeline has to the FP8 entity pool and its kernels.

    entity vectors ─► Scorer.add ─► EntityPool (fp8 pages, a block table per user)
    query vectors  ─► Scorer.attend ─► paged FP8 attention ─► readouts, relevance

Its user is the arbiter's ranking (``agents.arbiter.relevance``: each candidate tag against
the user's evidence); it serves many users' sequences per launch, which is what a stream
worker would need to attend over its users' behaviour (the worker's drift test did, before
coverage of what was asked replaced it: ``stream.live``). The backend is chosen once, when
the scorer is made: the Triton kernel on CUDA, the batched PyTorch path otherwise, so the
pipeline runs the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from intentstream.kernels.pool import Backend, BackendChoice, EntityPool, pick_backend

Array = npt.NDArray[np.float32]

# Entity rows gathered per PyTorch launch (users x padded length): bounds the dequantised
# copy to about 64 MB at dim 64, whatever the number of users asked about.
_TORCH_ROWS_PER_LAUNCH = 256 * 1024


@dataclass(frozen=True, slots=True)
class Attention:
    readouts: Array  # [users, n_q, dim]: attention-weighted mean of each user's entities
    relevance: Array  # [users, n_q]: log-sum-exp of the scores; -inf for a user with none


class Scorer:
    """Users' entity vectors in an FP8 pool; attention of query vectors over them.

    ``sharpness`` is the softmax scale on unit-vector dot products (cosines): at 10, an
    entity 0.3 closer to the query weighs e^3, about 20 times more. ``window`` keeps each
    user's newest entities only (at least that many; whole pages are dropped).
    """

    def __init__(
        self,
        dim: int,
        *,
        sharpness: float = 10.0,
        window: int | None = None,
        backend: BackendChoice = "auto",
        page_size: int = 16,  # the least a user with any history costs: 16 x (dim + 4) bytes
        pages: int = 1024,
    ) -> None:
        if dim & (dim - 1) or dim < 16:
            raise ValueError(f"dim must be a power of two of at least 16 (the kernel's tiles), got {dim}")
        cuda = torch.cuda.is_available() and backend != "torch"
        device = torch.device("cuda" if cuda else "cpu")
        self.pool = EntityPool(dim, page_size, pages, device, pick_backend(device, backend))
        self.sharpness = sharpness
        self.window = window

    @property
    def backend(self) -> Backend:
        return self.pool.backend

    @property
    def dim(self) -> int:
        return self.pool.dim

    def describe(self) -> str:
        window = f"newest {self.window} entities per user" if self.window else "every entity"
        return f"{self.backend} on {self.pool.device.type}, dim {self.dim}, {window}"

    def knows(self, user: str) -> bool:
        """Whether the pool holds entities of ``user`` (not after a restart or a release)."""
        return self.pool.lengths.get(user, 0) > 0

    def add(self, users: Sequence[str], rows: Array) -> None:
        """Row i of ``rows`` is a new entity of ``users[i]``, in order of arrival."""
        self.pool.append_many(users, torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
        if self.window:
            longest = self.window + self.pool.page_size  # below it, trim has nothing to drop
            lengths = self.pool.lengths
            for user in {u for u in users if lengths[u] >= longest}:
                self.pool.trim(user, self.window)

    def release(self, users: Iterable[str]) -> None:
        for user in users:
            self.pool.release(user)

    def memory_bytes(self) -> int:
        return self.pool.memory_bytes()

    def attend(self, users: Sequence[str], queries: Array) -> Attention:
        """Attention of ``queries`` [len(users), n_q, dim] over each user's entities, many
        users per launch (users of similar history length together, to pad little)."""
        if queries.ndim != 3 or queries.shape[0] != len(users) or queries.shape[2] != self.dim:
            raise ValueError(f"expected [{len(users)}, n_q, {self.dim}] queries, got {list(queries.shape)}")
        n_q = queries.shape[1]
        readouts = np.zeros((len(users), n_q, self.dim), np.float32)
        relevance = np.full((len(users), n_q), -np.inf, np.float32)
        order = sorted(range(len(users)), key=lambda i: self.pool.lengths.get(users[i], 0))
        for chunk in self._launches(users, order):
            q = torch.from_numpy(np.ascontiguousarray(queries[chunk], dtype=np.float32))
            scores = self.pool.score([users[i] for i in chunk], q, sm_scale=self.sharpness)
            readouts[chunk] = scores.pooled.float().cpu().numpy()
            relevance[chunk] = scores.relevance.float().cpu().numpy()
        return Attention(readouts, relevance)

    def _launches(self, users: Sequence[str], order: list[int]) -> list[list[int]]:
        if self.backend == "triton":
            return [order] if order else []  # the kernel walks each user's own pages
        launches: list[list[int]] = []
        current: list[int] = []
        for i in order:  # ascending length: the last user of a launch is its widest
            width = -(-self.pool.lengths.get(users[i], 0) // self.pool.page_size) * self.pool.page_size
            if current and (len(current) + 1) * max(width, 1) > _TORCH_ROWS_PER_LAUNCH:
                launches.append(current)
                current = []
            current.append(i)
        if current:
            launches.append(current)
        return launches


def padded_dim(dim: int) -> int:
    """The smallest power of two that holds ``dim`` values (the kernel's tiles need one)."""
    return max(16, 1 << (dim - 1).bit_length())
