"""A fix for Triton 3.9.0's interpreter (TRITON_INTERPRET=1), used where kernels run on CPU
(the tests and ``intentstream bench kernels``).

The interpreter converts float32 to fp8 (e4m3) and to bf16 by bit manipulation that rounds
ties away from zero without carrying into the exponent, and truncates bf16 (upstream issue
#8322). A GPU rounds to nearest even and saturates fp8 at ±448. ``patch_rounding`` routes
those two conversions through PyTorch's, which round like the hardware.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from intentstream.kernels.reference import FP8_MAX


def patch_rounding() -> None:
    """Idempotent. Call after setting TRITON_INTERPRET=1 and importing triton."""
    import triton.language as tl
    from triton.runtime import interpreter

    original = getattr(interpreter._convert_float, "__wrapped_original__", interpreter._convert_float)

    def convert(data: Any, input_dtype: Any, output_dtype: Any, rounding_mode: Any) -> Any:
        if input_dtype == tl.float32 and output_dtype in (tl.float8e4nv, tl.bfloat16):
            x = torch.from_numpy(np.ascontiguousarray(data).view(np.float32).copy())
            if output_dtype == tl.float8e4nv:
                out = x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
            else:
                out = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            return out.reshape(np.shape(data))
        return original(data, input_dtype, output_dtype, rounding_mode)

    convert.__wrapped_original__ = original  # type: ignore[attr-defined]
    interpreter._convert_float = convert


def unpatch_rounding() -> None:
    from triton.runtime import interpreter

    original = getattr(interpreter._convert_float, "__wrapped_original__", None)
    if original is not None:
        interpreter._convert_float = original
