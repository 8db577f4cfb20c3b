"""Kernels run on the CPU under Triton's interpreter here, with its fp8/bf16 rounding fixed
(kernels/interpreter.py). TRITON_INTERPRET must be set before triton is first imported;
tests/conftest.py does that for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from intentstream.kernels.interpreter import patch_rounding, unpatch_rounding


@pytest.fixture(autouse=True)
def hardware_rounding() -> Iterator[None]:
    patch_rounding()
    yield
    unpatch_rounding()
