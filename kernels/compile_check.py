"""Compile the kernels for Hopper (sm_90) without a GPU and inspect what came out.

The interpreter does not enforce hardware rules (e.g. fp8 ``tl.dot`` needs an inner
dimension of at least 32 on sm_90), so every kernel is also compiled here with the ptxas
inside the triton wheel. Reports whether the PTX uses ``wgmma`` with e4m3 operands and the
stack (spill) bytes ``cuobjdump -res-usage`` shows. Run without TRITON_INTERPRET:

    python -m kernels.compile_check        # prints JSON
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _res_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    return {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def compile_sm90(kernel: Any, signature: dict[str, str], constexprs: dict[str, Any], **options: Any) -> Any:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    full = {**signature, **{name: "constexpr" for name in constexprs}}
    source = ASTSource(fn=kernel, signature=full, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def check_all() -> dict[str, Any]:
    if os.environ.get("TRITON_INTERPRET"):
        raise RuntimeError("unset TRITON_INTERPRET: the compile check needs the real compiler")
    from intentstream.kernels import fp8_attention as k
    from intentstream.kernels.fp8_attention import FLASH_BLOCK_M, FLASH_BLOCK_N, FLASH_WARPS

    ptr8, ptr32, i32, f32 = "*fp8e4nv", "*fp32", "i32", "fp32"
    flash_sig = {
        "Q": ptr8, "K": ptr8, "VT": ptr8, "Out": "*bf16",
        "q_scale": ptr32, "k_scale": ptr32, "v_scale": ptr32,
        "cu_seqlens_q": "*i32", "cu_seqlens_k": "*i32", "vt_starts": "*i32",
        "total_q": i32, "total_k": i32, "vt_cols": i32,
        "stride_ot": i32, "stride_oh": i32,
        "q_scale_h": i32, "k_scale_h": i32, "v_scale_h": i32, "qk_scale": f32,
    }  # fmt: skip
    paged_sig = {
        "Q": ptr32, "K_pages": ptr8, "V_pages": ptr8, "K_scales": ptr32, "V_scales": ptr32,
        "block_tables": "*i32", "seq_lens": "*i32", "Out": ptr32, "Lse": ptr32,
        "n_q": i32, "stride_qu": i32, "stride_qn": i32, "stride_bt": i32, "stride_ou": i32,
        "stride_on": i32, "qk_scale": f32,
    }  # fmt: skip
    results: dict[str, Any] = {}
    for d in (64, 128):
        for causal in (False, True):
            compiled = compile_sm90(
                k._flash_fp8_fwd,
                flash_sig,
                {"HEADS": 8, "KV_HEADS": 4, "D": d, "BLOCK_M": FLASH_BLOCK_M, "BLOCK_N": FLASH_BLOCK_N,
                 "CAUSAL": causal},
                num_warps=FLASH_WARPS,
                num_stages=2,
            )  # fmt: skip
            ptx = compiled.asm["ptx"]
            results[f"flash_fp8_fwd_d{d}{'_causal' if causal else ''}"] = {
                "wgmma_fp8": bool(re.search(r"wgmma\.mma_async[^\n]*e4m3", ptx)),
                **_res_usage(compiled.asm["cubin"]),
            }
    # The scorer's shapes (16-entity pages): d64, the stream's entity vectors; d512, the
    # arbiter's relevance (MiniLM's 384 dimensions and the weight channel).
    for d in (64, 512):
        compiled = compile_sm90(
            k._paged_fp8_attn, paged_sig, {"D": d, "PAGE": 16, "BLOCK_Q": 16}, num_warps=4
        )
        results[f"paged_fp8_attn_d{d}"] = {
            "wgmma": "wgmma" in compiled.asm["ptx"],
            **_res_usage(compiled.asm["cubin"]),
        }
    flash = [v for name, v in results.items() if name.startswith("flash")]
    return {
        "sm90_compiled": True,
        "wgmma_fp8": all(v["wgmma_fp8"] for v in flash),
        "spill_bytes": max(v.get("stack", 0) + v.get("local", 0) for v in results.values()),
        "spill_bytes_d128": max(
            v.get("stack", 0) + v.get("local", 0) for n, v in results.items() if "d128" in n
        ),
        "kernels": results,
    }


def run_in_subprocess() -> dict[str, Any]:
    """``check_all`` in a clean process (the caller may be running the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "intentstream.kernels.compile_check"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        return {"sm90_compiled": False, "error": done.stderr[-2000:]}
    return dict(orjson.loads(done.stdout))


if __name__ == "__main__":
    print(orjson.dumps(check_all()).decode())
