"""The Triton FP8 kernels against their PyTorch references, under the interpreter."""

from __future__ import annotations

import itertools

import pytest
import torch
import triton
import triton.language as tl

from intentstream.kernels.fp8_attention import flash_fp8_forward, paged_fp8_attention
from intentstream.kernels.interpreter import patch_rounding, unpatch_rounding
from intentstream.kernels.pool import paged_attention_torch
from intentstream.kernels.reference import (
    FP8,
    attention_reference,
    dequantize,
    fp8_scale,
    paged_attention_reference,
    quantize_fp8,
)


@triton.jit
def _cast(X, F8, BF, N: tl.constexpr):
    offs = tl.arange(0, N)
    x = tl.load(X + offs)
    tl.store(F8 + offs, x.to(tl.float8e4nv))
    tl.store(BF + offs, x.to(tl.bfloat16))


def interpreted_casts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f8 = torch.empty(x.shape, dtype=FP8)
    bf = torch.empty(x.shape, dtype=torch.bfloat16)
    _cast[(1,)](x, f8, bf, N=x.numel())
    return f8.float(), bf.float()


def test_interpreter_rounding_bug_and_its_fix() -> None:
    # Ties between fp8 neighbours (1.0|1.125, 1.875|2.0), a value past fp8's range, and a
    # bf16 value just above a tie (1 + 2^-8 + 2^-10 rounds up to 1 + 2^-7).
    x = torch.tensor([1.0625, 1.9375, 500.0, 1.0 + 2**-8 + 2**-10], dtype=torch.float32)
    hardware_f8 = x.clamp(-448, 448).to(FP8).float()  # round to nearest even, saturate
    hardware_bf = x.to(torch.bfloat16).float()
    unpatch_rounding()
    buggy_f8, buggy_bf = interpreted_casts(x)
    assert buggy_f8[0] == 1.125  # tie away from zero instead of to even
    assert buggy_f8[1] == 1.0  # the carry into the exponent is lost: 1.9375 became 1.0
    assert buggy_bf[3] == 1.0  # truncated, where the hardware rounds up to 1 + 2^-7
    assert hardware_bf[3] == 1.0 + 2**-7
    assert not torch.equal(buggy_f8, hardware_f8)
    patch_rounding()
    fixed_f8, fixed_bf = interpreted_casts(x)
    assert torch.equal(fixed_f8, hardware_f8)
    assert fixed_f8.tolist()[:3] == [1.0, 2.0, 448.0]
    assert torch.equal(fixed_bf, hardware_bf)


def varlen(lens_q: list[int], lens_k: list[int], heads: int, kv_heads: int, d: int, per_head: bool):
    g = torch.Generator().manual_seed(sum(lens_q) * 7 + d + heads)
    q = torch.randn(sum(lens_q), heads, d, generator=g) * 2
    k = torch.randn(sum(lens_k), kv_heads, d, generator=g)
    v = torch.randn(sum(lens_k), kv_heads, d, generator=g) * 3

    def scale(x: torch.Tensor) -> torch.Tensor:
        return fp8_scale(x, (0, 2)) if per_head else fp8_scale(x)

    qs, ks, vs = scale(q), scale(k), scale(v)
    cu_q = torch.tensor([0, *itertools.accumulate(lens_q)], dtype=torch.int32)
    cu_k = torch.tensor([0, *itertools.accumulate(lens_k)], dtype=torch.int32)
    return quantize_fp8(q, qs), quantize_fp8(k, ks), quantize_fp8(v, vs), qs, ks, vs, cu_q, cu_k


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "per_head", "out_dtype"),
    [(4, 2, False, torch.bfloat16), (2, 2, True, torch.float16), (4, 1, True, torch.float32)],
)
def test_flash_forward_matches_the_reference(
    d: int, causal: bool, heads: int, kv_heads: int, per_head: bool, out_dtype: torch.dtype
) -> None:
    lens_q, lens_k = [37, 1, 130], [50, 70, 129]  # ragged; m != n; partial blocks
    q, k, v, qs, ks, vs, cu_q, cu_k = varlen(lens_q, lens_k, heads, kv_heads, d, per_head)
    out = flash_fp8_forward(
        q, k, v, qs, ks, vs, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
        max_seqlen_q=max(lens_q), out_dtype=out_dtype,
    )  # fmt: skip
    ref = attention_reference(
        q, k, v, qs, ks, vs, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, out_dtype=torch.float32
    )
    assert out.dtype == out_dtype
    vmax = float(dequantize(v, vs).abs().max())
    # P is quantised to fp8 for P·V: error bound 2^-4 · max|v| (about 0.03 seen).
    assert float((out.float() - ref).abs().max()) <= 2**-4 * vmax


def test_causal_rows_that_see_no_key_are_zero_and_empty_sequences_are_fine() -> None:
    q, k, v, qs, ks, vs, cu_q, cu_k = varlen([10, 0, 4], [3, 5, 0], 2, 2, 64, False)
    out = flash_fp8_forward(
        q, k, v, qs, ks, vs, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=10,
        out_dtype=torch.float32,
    )  # fmt: skip
    ref = attention_reference(q, k, v, qs, ks, vs, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    assert torch.isfinite(out).all()
    assert out[:7].abs().max() == 0  # query i of 10 sees keys j <= i - 7: rows 0..6 see none
    assert out[10:].abs().max() == 0  # no keys at all
    assert float((out - ref.float()).abs().max()) < 0.1


def test_flash_forward_rejects_what_it_cannot_run() -> None:
    q, k, v, qs, ks, vs, cu_q, cu_k = varlen([4], [4], 3, 2, 64, False)
    kwargs = {"causal": False, "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k, "max_seqlen_q": 4}
    with pytest.raises(ValueError, match="share"):
        flash_fp8_forward(q, k, v, qs, ks, vs, **kwargs)
    q2, k2, v2, *_ = varlen([4], [4], 2, 2, 64, False)
    with pytest.raises(ValueError, match="float8"):
        flash_fp8_forward(q2.float(), k2, v2, qs, ks, vs, **kwargs)
    wide = torch.zeros(4, 2, 96, dtype=FP8)
    with pytest.raises(ValueError, match="head dim 96"):
        flash_fp8_forward(wide, wide, wide, qs, ks, vs, **kwargs)


def paged_case(page: int = 16, d: int = 64):
    g = torch.Generator().manual_seed(3)
    lens = torch.tensor([0, 3, page, 2 * page + 5, 77], dtype=torch.int32)
    needed = [-(-int(n) // page) for n in lens]
    pages = sum(needed) + 3
    k = torch.randn(pages, page, d, generator=g)
    v = torch.randn(pages, page, d, generator=g)
    k_scales, v_scales = k.abs().amax(-1) / 448, v.abs().amax(-1) / 448
    k8 = (k / k_scales.unsqueeze(-1)).to(FP8)
    v8 = (v / v_scales.unsqueeze(-1)).to(FP8)
    order = torch.randperm(pages, generator=g)
    tables = torch.zeros(len(lens), max(needed), dtype=torch.int32)
    taken = 0
    for u, n in enumerate(needed):
        tables[u, :n] = order[taken : taken + n]
        taken += n
    q = torch.randn(len(lens), 3, d, generator=g)
    return q, k8, v8, k_scales, v_scales, tables, lens


def test_paged_kernel_matches_the_reference() -> None:
    args = paged_case()
    out, lse = paged_fp8_attention(*args)
    ref_out, ref_lse = paged_attention_reference(*args)
    assert torch.isinf(lse[0]).all()  # a user with no entities
    assert (out[0] == 0).all()
    assert float((out - ref_out).abs().max()) < 2e-3
    assert float((lse[1:] - ref_lse[1:]).abs().max()) < 2e-3


def test_batched_torch_path_matches_the_reference() -> None:
    args = paged_case(page=32)
    out, lse = paged_attention_torch(*args)
    ref_out, ref_lse = paged_attention_reference(*args)
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    assert torch.allclose(lse[1:], ref_lse[1:], atol=1e-5)
