"""``intentstream bench kernels``: correctness and speed of the FP8 attention kernels.

On a machine without CUDA: the Triton kernels' error against the PyTorch references under
the interpreter (with its rounding fixed), the PyTorch path's speed (users scored per second
with 2,000 entities each), and the pool's memory against fp32. On CUDA: TFLOP/s of the
forward kernel and of ``scaled_dot_product_attention`` in bf16 on the same shapes. Always:
the sm_90 compile check (fp8 wgmma, spill bytes), run in a clean process, and
``kernels.scorer.Scorer`` on this machine's backend: many users' behaviour sequences attended
per launch (users per second) and the arbiter's relevance (ms per plan).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

from intentstream.progress import say


def _interpreter_correctness() -> dict[str, Any]:
    from intentstream.kernels.fp8_attention import flash_fp8_forward, paged_fp8_attention
    from intentstream.kernels.interpreter import patch_rounding
    from intentstream.kernels.reference import (
        FP8,
        attention_reference,
        dequantize,
        fp8_scale,
        paged_attention_reference,
        quantize_fp8,
    )

    patch_rounding()
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    cases = 0
    for d in (64, 128):
        for causal in (False, True):
            lens_q, lens_k = [100, 3, 64], [120, 40, 64]
            q = torch.randn(sum(lens_q), 4, d, generator=g)
            k = torch.randn(sum(lens_k), 2, d, generator=g)
            v = torch.randn(sum(lens_k), 2, d, generator=g)
            qs, ks, vs = fp8_scale(q, (0, 2)), fp8_scale(k), fp8_scale(v, (0, 2))
            q8, k8, v8 = quantize_fp8(q, qs), quantize_fp8(k, ks), quantize_fp8(v, vs)
            cu_q = torch.tensor([0, 100, 103, 167], dtype=torch.int32)
            cu_k = torch.tensor([0, 120, 160, 224], dtype=torch.int32)
            kw: dict[str, Any] = {"causal": causal, "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k}
            out = flash_fp8_forward(q8, k8, v8, qs, ks, vs, max_seqlen_q=100, out_dtype=torch.float32, **kw)
            ref = attention_reference(q8, k8, v8, qs, ks, vs, out_dtype=torch.float32, **kw)
            worst = max(worst, float((out - ref).abs().max()) / float(dequantize(v8, vs).abs().max()))
            cases += 1
    pages = torch.randn(40, 32, 64, generator=g)
    scales = pages.abs().amax(-1) / 448
    p8 = (pages / scales.unsqueeze(-1)).to(FP8)
    tables = torch.arange(40, dtype=torch.int32).reshape(4, 10)
    lens = torch.tensor([0, 17, 200, 320], dtype=torch.int32)
    queries = torch.randn(4, 8, 64, generator=g)
    out, _ = paged_fp8_attention(queries, p8, p8, scales, scales, tables, lens)
    ref, _ = paged_attention_reference(queries, p8, p8, scales, scales, tables, lens)
    return {
        "interpreter_cases": cases + 1,
        "flash_max_error_over_max_v": round(worst, 5),
        "flash_error_bound": 2**-4,
        "paged_max_abs_error": round(float((out - ref).abs().max()), 6),
    }


def _torch_path_speed(users: int, entities: int, queries: int) -> dict[str, Any]:
    from intentstream.kernels.pool import EntityPool

    pool = EntityPool(dim=64, page_size=32, pages=users * (entities // 32 + 1), backend="torch")
    g = torch.Generator().manual_seed(1)
    names = [f"u{i}" for i in range(users)]
    for name in names:
        pool.append(name, torch.nn.functional.normalize(torch.randn(entities, 64, generator=g), dim=-1))
    tags = torch.randn(users, queries, 64, generator=g)
    batch = 64
    pool.score(names[:batch], tags[:batch])  # warm up
    started = time.perf_counter()
    for i in range(0, users, batch):
        pool.score(names[i : i + batch], tags[i : i + batch])
    elapsed = time.perf_counter() - started
    return {
        "torch_users_scored_per_s": round(users / elapsed),
        "torch_scoring": f"{users} users x {entities} entities x {queries} tag queries, batches of {batch}",
        "pool_bytes_per_user": pool.memory_bytes() // users,
        "fp32_bytes_per_user": entities * 64 * 4,
        "pool_vs_fp32": round(pool.memory_bytes() / (users * entities * 64 * 4), 3),
    }


def _cuda_throughput(seqlen: int = 8192, heads: int = 16, d: int = 128, batch: int = 4) -> dict[str, Any]:
    from intentstream.kernels.fp8_attention import flash_fp8_forward
    from intentstream.kernels.reference import fp8_scale, quantize_fp8

    dev = torch.device("cuda")
    q = torch.randn(batch * seqlen, heads, d, device=dev)
    k = torch.randn(batch * seqlen, heads, d, device=dev)
    v = torch.randn(batch * seqlen, heads, d, device=dev)
    qs, ks, vs = fp8_scale(q), fp8_scale(k), fp8_scale(v)
    q8, k8, v8 = quantize_fp8(q, qs), quantize_fp8(k, ks), quantize_fp8(v, vs)
    cu = torch.arange(0, (batch + 1) * seqlen, seqlen, dtype=torch.int32, device=dev)
    flops = 4 * batch * heads * seqlen * seqlen * d

    def timed(fn: Any) -> float:
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / 10

    fp8_s = timed(
        lambda: flash_fp8_forward(
            q8, k8, v8, qs, ks, vs, causal=False, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=seqlen
        )
    )
    qb, kb, vb = (x.view(batch, seqlen, heads, d).transpose(1, 2).bfloat16() for x in (q, k, v))
    sdpa_s = timed(lambda: torch.nn.functional.scaled_dot_product_attention(qb, kb, vb))
    return {
        "device": torch.cuda.get_device_name(),
        "shape": f"batch {batch}, seqlen {seqlen}, heads {heads}, head dim {d}, non-causal",
        "fp8_forward_tflops": round(flops / fp8_s / 1e12, 1),
        "sdpa_bf16_tflops": round(flops / sdpa_s / 1e12, 1),
        "ratio_vs_sdpa_bf16": round(sdpa_s / fp8_s, 2),
    }


def _pipeline_speed() -> dict[str, Any]:
    """The scorer on the backend chosen for this machine: many users' behaviour sequences
    attended per launch, and the arbiter's relevance per plan."""
    import numpy as np

    from intentstream.kernels.scorer import Scorer
    from intentstream.stream.entities import DIMS

    rng = np.random.default_rng(1)

    def unit(*shape: int) -> Any:
        x = rng.standard_normal(shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    out: dict[str, Any] = {}
    for history in (16, 64, 256):  # a typical user of the shared logs ... the full default window
        scorer = Scorer(DIMS, window=256)
        names = [f"u{i}" for i in range(4000)]
        scorer.add([n for n in names for _ in range(history)], unit(len(names) * history, DIMS))
        queries = unit(len(names), 2, DIMS)  # two queries per user
        scorer.attend(names[:100], queries[:100])  # warm up
        started = time.perf_counter()
        for i in range(0, len(names), 2000):  # a batch's users at a time
            scorer.attend(names[i : i + 2000], queries[i : i + 2000])
        out[f"attend_users_per_s_at_{history}_entities"] = round(len(names) / (time.perf_counter() - started))
    arbiter = Scorer(512)  # MiniLM's 384 dimensions and the weight channel, padded
    plans = 200
    started = time.perf_counter()
    for i in range(plans):  # each plan: ~12 pieces of evidence, ~6 candidate tags
        arbiter.add([f"p{i}"] * 12, unit(12, 512))
        arbiter.attend([f"p{i}"], unit(1, 6, 512))
        arbiter.release([f"p{i}"])
    out["arbiter_relevance_ms_per_plan"] = round(1000 * (time.perf_counter() - started) / plans, 3)
    out["pipeline_backend"] = arbiter.describe()
    return out


def bench_kernels(users: int = 2000, entities: int = 2000) -> dict[str, Any]:
    from intentstream.kernels.compile_check import run_in_subprocess

    cuda = torch.cuda.is_available()
    if not cuda:
        # Before triton is first imported: the kernels run on the CPU through the interpreter.
        os.environ["TRITON_INTERPRET"] = "1"
    result: dict[str, Any] = {"cuda": cuda}
    say("sm_90 compile check ...")
    check = run_in_subprocess()
    result.update(
        {k: check.get(k) for k in ("sm90_compiled", "wgmma_fp8", "spill_bytes", "spill_bytes_d128")}
    )
    if cuda:
        say("FP8 forward against SDPA bf16 on CUDA ...")
        result.update(_cuda_throughput())
    else:
        say("kernels under the interpreter against the references ...")
        result.update(_interpreter_correctness())
        result["cuda_throughput"] = "not measured: no GPU on this machine"
    say(f"PyTorch path: {users} users x {entities} entities ...")
    result.update(_torch_path_speed(users, entities, queries=8))
    say("the scorer: many users' sequences per launch, and the arbiter's relevance ...")
    result.update(_pipeline_speed())
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    return result
