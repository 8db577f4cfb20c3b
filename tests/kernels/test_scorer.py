"""The scorer: the pipeline's one interface to the FP8 pool, the same on either backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import intentstream.kernels.scorer
from intentstream.kernels.scorer import Scorer, padded_dim


def unit_rows(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def filled(backend: str, window: int | None = None) -> Scorer:
    scorer = Scorer(64, sharpness=10.0, window=window, backend=backend)  # type: ignore[arg-type]
    lengths = {"short": 3, "mid": 40, "long": 130}
    users = [u for u, n in lengths.items() for _ in range(n)]
    scorer.add(users, unit_rows(len(users), seed=1))
    return scorer


def test_the_backend_follows_the_machine_unless_the_settings_say() -> None:
    on_cuda = torch.cuda.is_available()
    scorer = Scorer(64)
    assert scorer.backend == ("triton" if on_cuda else "torch")
    assert ("triton on cuda" if on_cuda else "torch on cpu") in scorer.describe()
    assert Scorer(64, backend="torch").describe().startswith("torch on cpu")


def test_triton_and_pytorch_backends_give_the_same_readouts_and_relevance() -> None:
    users = ["long", "none", "short", "mid"]
    queries = np.stack([unit_rows(2, seed=9 + i) for i in range(len(users))])
    by_torch = filled("torch").attend(users, queries)
    by_triton = filled("triton").attend(users, queries)  # the kernel, under the interpreter here
    assert np.allclose(by_triton.readouts, by_torch.readouts, atol=2e-3)
    finite = np.isfinite(by_torch.relevance)
    assert (finite == np.isfinite(by_triton.relevance)).all()
    assert not finite[1].any()  # a user without entities: -inf relevance, zero readout
    assert not by_torch.readouts[1].any()
    assert np.allclose(by_triton.relevance[finite], by_torch.relevance[finite], atol=2e-3)


def test_results_keep_the_callers_order_however_users_are_grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    users = ["mid", "long", "short", "long"]
    queries = np.stack([unit_rows(3, seed=20 + i) for i in range(len(users))])
    queries[3] = queries[1]  # the same user asked the same twice
    one_launch = filled("torch").attend(users, queries)
    monkeypatch.setattr(intentstream.kernels.scorer, "_TORCH_ROWS_PER_LAUNCH", 64)  # a launch per user or two
    many_launches = filled("torch").attend(users, queries)
    assert np.allclose(one_launch.readouts, many_launches.readouts, atol=1e-5)
    assert np.allclose(one_launch.relevance, many_launches.relevance, atol=1e-5)
    assert np.allclose(one_launch.readouts[1], one_launch.readouts[3])


def test_the_window_keeps_each_users_newest_entities() -> None:
    scorer = filled("torch", window=40)
    assert scorer.pool.lengths == {"short": 3, "mid": 40, "long": 50}  # 130 - 5 whole pages of 16
    assert scorer.knows("long")
    assert not scorer.knows("nobody")
    scorer.release(["long"])
    assert not scorer.knows("long")


def test_bad_shapes_and_dims_are_refused() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Scorer(384)
    scorer = Scorer(64)
    with pytest.raises(ValueError, match=r"\[1, n_q, 64\]"):
        scorer.attend(["u"], np.zeros((1, 2, 32), np.float32))
    with pytest.raises(ValueError, match="finite"):
        scorer.add(["u"], np.full((1, 64), np.nan, np.float32))
    assert [padded_dim(d) for d in (384 + 1, 64, 3)] == [512, 64, 16]
