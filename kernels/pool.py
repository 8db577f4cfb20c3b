"""The paged FP8 entity pool: users' behaviour entities as fp8 vectors in fixed-size pages,
one block table per user, appended incrementally as events arrive (like a KV cache).

A row costs ``dim`` bytes plus a 4-byte fp32 scale: at dim 64 that is 68 bytes against 256
in fp32, about a quarter. ``score`` runs attention of a few query vectors per user (candidate
tags, or the user's current interest) over all of that user's entities, many users at once:
the Triton kernel on CUDA, a batched PyTorch path elsewhere (chosen once, at start-up).
The pipeline reaches the pool through ``kernels.scorer.Scorer``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from intentstream.kernels.reference import FP8, FP8_MAX

Backend = Literal["triton", "torch"]
BackendChoice = Literal["auto", "triton", "torch"]


def pick_backend(device: torch.device, choice: BackendChoice = "auto") -> Backend:
    """``auto``: Triton on CUDA, PyTorch otherwise. ``triton`` on a CPU device runs only
    under TRITON_INTERPRET (the tests)."""
    if choice != "auto":
        return choice
    return "triton" if device.type == "cuda" else "torch"


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row fp8 quantisation: (fp8 rows, fp32 scales)."""
    scale = (x.abs().amax(dim=-1).float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def paged_attention_torch(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    k_scales: torch.Tensor,
    v_scales: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    sm_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batched PyTorch path of ``paged_fp8_attention`` (same contract as
    ``kernels.reference.paged_attention_reference``, without its per-user loop)."""
    users, _, d = q.shape
    page = k_pages.shape[1]
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d)
    tables = block_tables.long()
    k = (k_pages[tables].float() * k_scales[tables].unsqueeze(-1)).reshape(users, -1, d)
    if v_pages is k_pages and v_scales is k_scales:
        v = k  # the entity pool attends over its entities with themselves as values
    else:
        v = (v_pages[tables].float() * v_scales[tables].unsqueeze(-1)).reshape(users, -1, d)
    scores = torch.bmm(q.float(), k.transpose(1, 2)) * sm_scale  # [users, n_q, slots]
    live = torch.arange(tables.shape[1] * page, device=q.device)[None, :] < seq_lens[:, None]
    scores = scores.masked_fill(~live[:, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.unsqueeze(-1).clamp(min=-1e30)).nan_to_num(0.0)
    return torch.bmm(probs, v), lse


@dataclass
class Scores:
    pooled: torch.Tensor  # [users, n_q, dim]: attention-weighted mean of the user's entities
    relevance: torch.Tensor  # [users, n_q]: log-sum-exp of the scores (-inf: no entities)


class EntityPool:
    """Pages of fp8 entity vectors with per-row scales; a block table per user."""

    def __init__(
        self,
        dim: int = 64,
        page_size: int = 32,
        pages: int = 256,
        device: str | torch.device = "cpu",
        backend: Backend | None = None,
    ) -> None:
        self.dim, self.page_size = dim, page_size
        self.device = torch.device(device)
        self.backend = backend or pick_backend(self.device)
        self.pages = torch.zeros((pages, page_size, dim), dtype=FP8, device=self.device)
        self.scales = torch.zeros((pages, page_size), dtype=torch.float32, device=self.device)
        self._free = list(range(pages - 1, -1, -1))
        self.tables: dict[str, list[int]] = {}
        self.lengths: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.tables)

    def memory_bytes(self) -> int:
        """Bytes the pages in use hold (fp8 rows and their scales)."""
        used = sum(len(t) for t in self.tables.values())
        return used * self.page_size * (self.dim + 4)

    def _grow(self) -> None:
        """Half as many pages again. Into one new zeroed tensor (a page's unused slots must
        hold finite values, and the PyTorch path multiplies them by zero): the old pages and
        the new tensor are all that is held at once (2.5x the old size, not 4x as with cat)."""
        old = self.pages.shape[0]
        size = old + max(old // 2, 1)
        pages = torch.zeros((size, *self.pages.shape[1:]), dtype=self.pages.dtype, device=self.device)
        pages[:old] = self.pages
        scales = torch.zeros((size, self.page_size), dtype=self.scales.dtype, device=self.device)
        scales[:old] = self.scales
        self.pages, self.scales = pages, scales
        self._free.extend(range(size - 1, old - 1, -1))

    def append(self, user: str, vectors: torch.Tensor) -> None:
        """Quantise ``vectors`` [n, dim] and add them after the user's last entity."""
        self.append_many([user] * len(vectors), vectors)

    def append_many(self, users: Sequence[str], vectors: torch.Tensor) -> None:
        """Row i of ``vectors`` [n, dim] is a new entity of ``users[i]``, in order: many
        users' appends quantised and written at once (a stream batch's new entities)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(users) != len(vectors):
            raise ValueError(f"expected [{len(users)}, {self.dim}] vectors, got {list(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise ValueError("entity vectors must be finite (found NaN or infinity)")
        if not len(users):
            return
        rows, scales = quantize_rows(vectors.to(self.device))
        page = self.page_size
        flat: list[int] = []  # row i goes to slot flat[i] of the pages seen as one long row list
        for user, run in itertools.groupby(users):
            table = self.tables.setdefault(user, [])
            length = self.lengths.get(user, 0)
            n = sum(1 for _ in run)
            for position in range(length, length + n):
                if position % page == 0:
                    if not self._free:
                        self._grow()
                    table.append(self._free.pop())
                flat.append(table[-1] * page + position % page)
            self.lengths[user] = length + n
        index = torch.tensor(flat, device=self.device)
        self.pages.view(-1, self.dim)[index] = rows
        self.scales.view(-1)[index] = scales

    def trim(self, user: str, keep: int) -> None:
        """Forget the user's oldest whole pages while at least ``keep`` entities remain
        (a sliding window over a long history; the newest entities always stay)."""
        table = self.tables.get(user)
        if not table:
            return
        while len(table) > 1 and self.lengths[user] - self.page_size >= keep:
            self._free.append(table.pop(0))
            self.lengths[user] -= self.page_size

    def release(self, user: str) -> None:
        """Give a user's pages back (e.g. when their partition moves to another worker)."""
        self._free.extend(reversed(self.tables.pop(user, [])))
        self.lengths.pop(user, None)

    def entities(self, user: str) -> torch.Tensor:
        """A user's entity vectors, dequantised [n, dim] (for tests and inspection)."""
        n = self.lengths.get(user, 0)
        pages = torch.tensor(self.tables.get(user, []), dtype=torch.long, device=self.device)
        rows = self.pages[pages].float() * self.scales[pages].unsqueeze(-1)
        return rows.reshape(-1, self.dim)[:n]

    def score(self, users: Sequence[str], queries: torch.Tensor, sm_scale: float | None = None) -> Scores:
        """Attention of ``queries`` [len(users), n_q, dim] over each user's entities
        (scores scaled by ``sm_scale``, 1/sqrt(dim) by default)."""
        if queries.shape[0] != len(users) or queries.shape[2] != self.dim:
            raise ValueError(f"expected [{len(users)}, n_q, {self.dim}] queries, got {list(queries.shape)}")
        rows = [self.tables.get(u, []) for u in users]
        width = max(map(len, rows), default=0) or 1
        padded = [r + [0] * (width - len(r)) for r in rows]
        tables = torch.tensor(padded, dtype=torch.int32).reshape(len(users), width).to(self.device)
        lens = torch.tensor([self.lengths.get(u, 0) for u in users], dtype=torch.int32, device=self.device)
        queries = queries.to(self.device)
        if self.backend == "triton":
            from intentstream.kernels.fp8_attention import paged_fp8_attention

            pooled, lse = paged_fp8_attention(
                queries, self.pages, self.pages, self.scales, self.scales, tables, lens, sm_scale
            )
        else:
            pooled, lse = paged_attention_torch(
                queries, self.pages, self.pages, self.scales, self.scales, tables, lens, sm_scale
            )
        return Scores(pooled, lse)
