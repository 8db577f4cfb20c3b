"""The paged FP8 entity pool: users' behaviour entities as fp8 vectors in fixed-size pages,
one block table per user, appended incrementally as events arrive (like a KV cache).

A row costs ``dim`` bytes plus a 4-byte fp32 scale: at dim 64 that is 68 bytes against 256
in fp32, about a quarter. ``score`` runs attention of a few query vectors per user (candidate
tags, or the user's current interest) over all of that user's entities, many users at once:
the Triton kernel on CUDA, a batched PyTorch path elsewhere (chosen once, at start-up).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

import torch

from kernels.reference import FP8, FP8_MAX

Backend = Literal["triton", "torch"]


def pick_backend(device: torch.device) -> Backend:
    """Triton on CUDA, PyTorch otherwise; INTENTSTREAM_KERNEL_BACKEND=torch forces PyTorch."""
    if os.environ.get("INTENTSTREAM_KERNEL_BACKEND") == "torch" or device.type != "cuda":
        return "torch"
    return "triton"


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
        old = self.pages.shape[0]
        self.pages = torch.cat([self.pages, torch.zeros_like(self.pages)])
        self.scales = torch.cat([self.scales, torch.zeros_like(self.scales)])
        self._free.extend(range(2 * old - 1, old - 1, -1))

    def append(self, user: str, vectors: torch.Tensor) -> None:
        """Quantise ``vectors`` [n, dim] and add them after the user's last entity."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected [n, {self.dim}] vectors, got {list(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise ValueError("entity vectors must be finite (found NaN or infinity)")
        rows, scales = quantize_rows(vectors.to(self.device))
        table = self.tables.setdefault(user, [])
        length = self.lengths.get(user, 0)
        done = 0
        while done < len(rows):
            slot = length % self.page_size
            if slot == 0:
                if not self._free:
                    self._grow()
                table.append(self._free.pop())
            take = min(self.page_size - slot, len(rows) - done)
            page = table[-1]
            self.pages[page, slot : slot + take] = rows[done : done + take]
            self.scales[page, slot : slot + take] = scales[done : done + take]
            done += take
            length += take
        self.lengths[user] = length

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

    def score(self, users: list[str], queries: torch.Tensor) -> Scores:
        """Attention of ``queries`` [len(users), n_q, dim] over each user's entities."""
        if queries.shape[0] != len(users) or queries.shape[2] != self.dim:
            raise ValueError(f"expected [{len(users)}, n_q, {self.dim}] queries, got {list(queries.shape)}")
        width = max((len(self.tables.get(u, [])) for u in users), default=0) or 1
        tables = torch.zeros((len(users), width), dtype=torch.int32)
        for i, user in enumerate(users):
            pages = self.tables.get(user, [])
            tables[i, : len(pages)] = torch.tensor(pages, dtype=torch.int32)
        lens = torch.tensor([self.lengths.get(u, 0) for u in users], dtype=torch.int32)
        tables, lens = tables.to(self.device), lens.to(self.device)
        queries = queries.to(self.device)
        if self.backend == "triton":
            from kernels.fp8_attention import paged_fp8_attention

            pooled, lse = paged_fp8_attention(
                queries, self.pages, self.pages, self.scales, self.scales, tables, lens
            )
        else:
            pooled, lse = paged_attention_torch(
                queries, self.pages, self.pages, self.scales, self.scales, tables, lens
            )
        return Scores(pooled, lse)
