"""Triton kernels: flash-style FP8 attention forward, and paged FP8 attention for scoring.

``flash_fp8_forward``: Q, K, V in float8 e4m3 with per-tensor or per-head fp32 scales;
causal or not; ragged (varlen, ``cu_seqlens``) batches; query length ≠ key length;
grouped-query heads; head dims 64 and 128; fp32 accumulation (Q·Kᵀ in fp8 on tensor cores,
P quantised to fp8 for P·V, as FlashAttention-3 does); bf16, fp16 or fp32 output.

``paged_fp8_attention``: a few queries per user over that user's entity pages (fp8 rows
with per-row fp32 scales, found through a block table), many users per launch; returns the
attention output and the log-sum-exp of the scores (the tag–user relevance). Rows are
dequantised to fp16 for the dots (entity vectors are unit-scale, so fp16's range is ample;
and Triton 3.9.0's interpreter evaluates bf16 ``tl.dot`` wrongly, which the tests need).

Both have PyTorch references in ``kernels.reference``; ``kernels.pool`` picks the backend.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# Hopper configuration of the forward kernel: two warpgroups on 128×128 tiles compile to fp8
# wgmma with no spills at head dim 128 (see kernels/compile_check.py).
FLASH_BLOCK_M, FLASH_BLOCK_N, FLASH_WARPS = 128, 128, 8


@triton.jit
def _flash_fp8_fwd(
    Q, K, VT, Out,
    q_scale, k_scale, v_scale,
    cu_seqlens_q, cu_seqlens_k, vt_starts,
    total_q, total_k, vt_cols,
    stride_ot, stride_oh,
    q_scale_h, k_scale_h, v_scale_h,
    qk_scale,
    HEADS: tl.constexpr,
    KV_HEADS: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
):  # fmt: skip
    # Loads go through tensor descriptors (TMA on Hopper): Q as [total_q, heads·d], K as
    # [total_k, kv_heads·d] and V transposed as [kv_heads·d, total_k], because fp8 wgmma
    # wants its B operand K-major (as FlashAttention-3 and the Triton tutorial arrange V).
    # A block may run past its sequence into the next one: those rows are masked below,
    # and rows past the end of the tensor are zero-filled by the descriptor. In VT each
    # sequence starts at a 16-byte-aligned column, as TMA wants its inner offsets.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HEADS
    h = pid_bh % HEADS
    kvh = h // (HEADS // KV_HEADS)
    q_start = tl.load(cu_seqlens_q + b)
    m = tl.load(cu_seqlens_q + b + 1) - q_start
    k_start = tl.load(cu_seqlens_k + b)
    n = tl.load(cu_seqlens_k + b + 1) - k_start
    if pid_m * BLOCK_M >= m:
        return
    q_desc = tl.make_tensor_descriptor(Q, [total_q, HEADS * D], [HEADS * D, 1], [BLOCK_M, D])
    k_desc = tl.make_tensor_descriptor(K, [total_k, KV_HEADS * D], [KV_HEADS * D, 1], [BLOCK_N, D])
    v_desc = tl.make_tensor_descriptor(VT, [KV_HEADS * D, vt_cols], [vt_cols, 1], [D, BLOCK_N])
    vt_start = tl.load(vt_starts + b)  # this sequence's first column in VT (16-aligned)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    q = q_desc.load([q_start + pid_m * BLOCK_M, h * D])
    # Scores in log2 units: sm_scale · log2(e) · the dequantisation scales of Q and K.
    scale = qk_scale * tl.load(q_scale + h * q_scale_h) * tl.load(k_scale + kvh * k_scale_h)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    end_n = n
    if CAUSAL:  # query i sees keys j <= i + (n - m): the sequences' ends are aligned
        end_n = tl.minimum(n, (pid_m + 1) * BLOCK_M + n - m)
    for start_n in range(0, end_n, BLOCK_N):
        cols = start_n + offs_n
        k = k_desc.load([k_start + start_n, kvh * D])
        s = tl.dot(q, tl.trans(k)) * scale
        valid = cols[None, :] < n
        if CAUSAL:
            valid = valid & (cols[None, :] <= offs_m[:, None] + n - m)
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing to see yet
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        vt = v_desc.load([kvh * D, vt_start + start_n])
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float8e4nv), tl.trans(vt))
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None] * tl.load(v_scale + kvh * v_scale_h)
    tl.store(
        Out + (q_start + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=offs_m[:, None] < m,
    )


def _transposed_v(v: torch.Tensor, cu_seqlens_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """V as [kv_heads·d, columns], each sequence starting at a multiple of 16 columns."""
    total_k, kv_heads, d = v.shape
    lens = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
    padded = (lens + 15) // 16 * 16
    starts = torch.zeros_like(padded)
    starts[1:] = padded.cumsum(0)[:-1]
    columns = int(padded.sum()) if len(padded) else 0
    seq_of_token = torch.repeat_interleave(torch.arange(len(lens), device=v.device), lens)
    where = starts[seq_of_token] + torch.arange(total_k, device=v.device) - cu_seqlens_k[seq_of_token]
    vt = torch.zeros((kv_heads * d, max(columns, 16)), dtype=torch.uint8, device=v.device)
    vt[:, where] = v.view(torch.uint8).permute(1, 2, 0).reshape(kv_heads * d, total_k)
    return vt.view(v.dtype), starts.int()


def _ensure_allocator(device: torch.device) -> None:
    """Device-side tensor descriptors need a little global scratch memory per launch."""

    def alloc(size: int, alignment: int, stream: int | None) -> torch.Tensor:
        return torch.empty(size, device=device, dtype=torch.int8)

    triton.set_allocator(alloc)


def _head_stride(scale: torch.Tensor, heads: int) -> int:
    """0 for a per-tensor scale, 1 for one per head (any shape holding ``heads`` values)."""
    if scale.numel() == 1:
        return 0
    if scale.numel() == heads:
        return 1
    raise ValueError(f"a scale must hold 1 or {heads} values, not {scale.numel()}")


def flash_fp8_forward(
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
    max_seqlen_q: int,
    sm_scale: float | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    block_m: int = FLASH_BLOCK_M,
    block_n: int = FLASH_BLOCK_N,
    num_warps: int = FLASH_WARPS,
) -> torch.Tensor:
    """See ``kernels.reference.attention_reference`` for the shapes and the semantics."""
    total_q, heads, d = q.shape
    kv_heads = k.shape[1]
    vt, vt_starts = _transposed_v(v, cu_seqlens_k.long())
    _ensure_allocator(q.device)
    if d not in (64, 128):
        raise ValueError(f"head dim {d} is not supported (64 or 128)")
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads evenly")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype != torch.float8_e4m3fn or t.stride(-1) != 1:
            raise ValueError(f"{name} must be float8_e4m3fn with a contiguous last dimension")
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d)
    out = torch.empty((total_q, heads, d), dtype=out_dtype, device=q.device)
    batch = len(cu_seqlens_q) - 1
    grid = (triton.cdiv(max(max_seqlen_q, 1), block_m), batch * heads)
    _flash_fp8_fwd[grid](
        q.contiguous(), k.contiguous(), vt, out,
        q_scale.float().contiguous(), k_scale.float().contiguous(), v_scale.float().contiguous(),
        cu_seqlens_q.int(), cu_seqlens_k.int(), vt_starts,
        total_q, k.shape[0], vt.shape[1],
        out.stride(0), out.stride(1),
        _head_stride(q_scale, heads), _head_stride(k_scale, kv_heads), _head_stride(v_scale, kv_heads),
        sm_scale * LOG2E,
        HEADS=heads, KV_HEADS=kv_heads, D=d, BLOCK_M=block_m, BLOCK_N=block_n, CAUSAL=causal,
        num_warps=num_warps,
    )  # fmt: skip
    return out


@triton.jit
def _paged_fp8_attn(
    Q, K_pages, V_pages, K_scales, V_scales, block_tables, seq_lens, Out, Lse,
    n_q, stride_qu, stride_qn, stride_bt, stride_ou, stride_on,
    qk_scale,
    D: tl.constexpr,
    PAGE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):  # fmt: skip
    u = tl.program_id(0)
    pid_q = tl.program_id(1)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_p = tl.arange(0, PAGE)
    offs_d = tl.arange(0, D)
    n = tl.load(seq_lens + u)
    q = tl.load(
        Q + u * stride_qu + offs_q[:, None] * stride_qn + offs_d[None, :],
        mask=offs_q[:, None] < n_q,
        other=0.0,
    ).to(tl.float16)
    m_i = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q], tl.float32)
    acc = tl.zeros([BLOCK_Q, D], tl.float32)
    for i in range(0, tl.cdiv(n, PAGE)):
        page = tl.load(block_tables + u * stride_bt + i).to(tl.int64)
        rows = i * PAGE + offs_p
        live = rows < n
        k = tl.load(
            K_pages + page * PAGE * D + offs_p[None, :] * D + offs_d[:, None], mask=live[None, :], other=0.0
        )
        k_s = tl.load(K_scales + page * PAGE + offs_p, mask=live, other=0.0)
        k = (k.to(tl.float32) * k_s[None, :]).to(tl.float16)
        s = tl.dot(q, k) * qk_scale
        s = tl.where(live[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            V_pages + page * PAGE * D + offs_p[:, None] * D + offs_d[None, :], mask=live[:, None], other=0.0
        )
        v_s = tl.load(V_scales + page * PAGE + offs_p, mask=live, other=0.0)
        v = (v.to(tl.float32) * v_s[:, None]).to(tl.float16)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    mask = offs_q < n_q
    tl.store(
        Out + u * stride_ou + offs_q[:, None] * stride_on + offs_d[None, :],
        acc / l_safe[:, None],
        mask=mask[:, None],
    )
    lse = tl.where(l_i == 0.0, float("-inf"), (m_i + tl.math.log2(l_safe)) / 1.4426950408889634)
    tl.store(Lse + u * n_q + offs_q, lse, mask=mask)


def paged_fp8_attention(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    k_scales: torch.Tensor,
    v_scales: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    sm_scale: float | None = None,
    block_q: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """See ``kernels.reference.paged_attention_reference``."""
    users, n_q, d = q.shape
    page = k_pages.shape[1]
    if k_pages.dtype != torch.float8_e4m3fn or not k_pages.is_contiguous() or not v_pages.is_contiguous():
        raise ValueError("pages must be contiguous float8_e4m3fn tensors [pages, page_size, d]")
    sm_scale = sm_scale if sm_scale is not None else 1.0 / math.sqrt(d)
    q = q.contiguous()
    tables = block_tables.int().contiguous()
    out = torch.empty((users, n_q, d), dtype=torch.float32, device=q.device)
    lse = torch.empty((users, n_q), dtype=torch.float32, device=q.device)
    grid = (users, triton.cdiv(n_q, block_q))
    _paged_fp8_attn[grid](
        q, k_pages, v_pages, k_scales.float().contiguous(), v_scales.float().contiguous(),
        tables, seq_lens.int().contiguous(), out, lse,
        n_q, q.stride(0), q.stride(1), tables.stride(0), out.stride(0), out.stride(1),
        sm_scale * LOG2E,
        D=d, PAGE=page, BLOCK_Q=block_q,
    )  # fmt: skip
    return out, lse
