"""PyTorch references for every kernel, and the CPU path of the pipeline.

Everything here is plain PyTorch in fp32 arithmetic: the Triton kernels are tested against
these functions, and machines without a GPU run these directly.

FP8 is ``torch.float8_e4m3fn`` (largest finite value 448). A tensor ``x`` is stored as
``q = fp8(x / scale)`` with ``scale = amax / 448``, so ``x ≈ q.float() * scale``.
"""

from __future__ import annotations

import math

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def fp8_scale(x: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """fp32 scales for ``x``: one per tensor (``dims=None``) or one per index of the kept
    dimensions (amax over ``dims``), never zero."""
    amax = x.abs().amax() if dims is None else x.abs().amax(dim=dims, keepdim=True)
    return (amax.float() / FP8_MAX).clamp(min=1e-12)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x / scale`` rounded to the nearest fp8 value, saturated at ±448."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    *,
    causal: bool,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    sm_scale: float | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Varlen attention over fp8 inputs, computed in fp32.

    ``q``: [total_q, heads, d]; ``k``, ``v``: [total_k, kv_heads, d] (grouped-query when
    kv_heads < heads). Sequence ``b`` spans ``cu_seqlens[b]:cu_seqlens[b+1]``. Scales are
    per tensor (shape [1, 1, 1]) or per head ([1, heads, 1] / [1, kv_heads, 1]). Causal masks
    align the ends of the query and key sequences (the last query sees every key).
    """
    d = q.shape[-1]
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d)
    heads, kv_heads = q.shape[1], k.shape[1]
    group = heads // kv_heads
    qf, kf, vf = dequantize(q, q_scale), dequantize(k, k_scale), dequantize(v, v_scale)
    out = torch.zeros(q.shape, dtype=torch.float32)
    for b in range(len(cu_seqlens_q) - 1):
        qs, qe = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        ks, ke = int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])
        if qe == qs:
            continue
        qb = qf[qs:qe].transpose(0, 1)  # [heads, m, d]
        kb = kf[ks:ke].transpose(0, 1).repeat_interleave(group, dim=0)
        vb = vf[ks:ke].transpose(0, 1).repeat_interleave(group, dim=0)
        scores = qb @ kb.transpose(1, 2) * sm_scale  # [heads, m, n]
        if causal:
            m, n = qe - qs, ke - ks
            rows = torch.arange(m).unsqueeze(1) + (n - m)
            scores = scores.masked_fill(torch.arange(n).unsqueeze(0) > rows, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no key: zeros
        out[qs:qe] = (probs @ vb).transpose(0, 1)
    return out.to(out_dtype)


def paged_attention_reference(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    k_scales: torch.Tensor,
    v_scales: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    sm_scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Few queries per user over that user's pages.

    ``q``: [users, n_q, d] (fp32/bf16); ``k_pages``, ``v_pages``: [pages, page_size, d] fp8
    with per-row scales ``k_scales``, ``v_scales``: [pages, page_size] fp32;
    ``block_tables``: [users, max_pages] int32 page ids; ``seq_lens``: [users] entities.
    Returns (out [users, n_q, d] fp32, lse [users, n_q] fp32; -inf for a user with none).
    """
    users, n_q, d = q.shape
    page_size = k_pages.shape[1]
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d)
    out = torch.zeros(users, n_q, d)
    lse = torch.full((users, n_q), float("-inf"))
    for u in range(users):
        n = int(seq_lens[u])
        if n == 0:
            continue
        pages = block_tables[u, : -(-n // page_size)].long()
        k = (k_pages[pages].float() * k_scales[pages].unsqueeze(-1)).reshape(-1, d)[:n]
        v = (v_pages[pages].float() * v_scales[pages].unsqueeze(-1)).reshape(-1, d)[:n]
        scores = q[u].float() @ k.T * sm_scale
        lse[u] = torch.logsumexp(scores, dim=-1)
        out[u] = torch.softmax(scores, dim=-1) @ v
    return out, lse
