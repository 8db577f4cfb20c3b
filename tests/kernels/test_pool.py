"""The paged FP8 entity pool: appends, memory, scoring through the chosen backend."""

from __future__ import annotations

import pytest
import torch

from intentstream.kernels.compile_check import run_in_subprocess
from intentstream.kernels.pool import EntityPool, pick_backend
from intentstream.kernels.reference import paged_attention_reference


def vectors(n: int, dim: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def test_appends_across_pages_keep_every_entity_in_order() -> None:
    pool = EntityPool(dim=64, page_size=8, pages=2)  # grows when it runs out
    first, second = vectors(5), vectors(30, seed=1)
    pool.append("u1", first)
    pool.append("u2", vectors(3, seed=2))
    pool.append("u1", second)
    stored = pool.entities("u1")
    assert stored.shape == (35, 64)
    assert torch.allclose(stored, torch.cat([first, second]), atol=0.07)  # fp8: 3 mantissa bits
    assert len(pool.tables["u1"]) == 5  # ceil(35 / 8)
    assert pool.pages.shape[0] >= 6


def test_fp8_pages_take_about_a_quarter_of_fp32() -> None:
    pool = EntityPool(dim=64, page_size=32)
    for u in range(10):
        pool.append(f"u{u}", vectors(320, seed=u))
    fp32 = 10 * 320 * 64 * 4
    assert pool.memory_bytes() / fp32 == pytest.approx(68 / 256)


def test_release_returns_pages_for_reuse() -> None:
    pool = EntityPool(dim=64, page_size=8, pages=4)
    pool.append("gone", vectors(32))
    pool.release("gone")
    pool.append("next", vectors(32, seed=3))
    assert pool.pages.shape[0] == 4  # no growth needed
    assert "gone" not in pool.tables


def test_bad_vectors_are_refused() -> None:
    pool = EntityPool(dim=64)
    with pytest.raises(ValueError, match="finite"):
        pool.append("u", torch.full((2, 64), float("nan")))
    with pytest.raises(ValueError, match=r"\[2, 64\] vectors, got \[2, 32\]"):
        pool.append("u", torch.zeros(2, 32))
    with pytest.raises(ValueError, match="queries"):
        pool.score(["u"], torch.zeros(2, 1, 64))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_scores_match_the_reference_on_either_backend(backend: str) -> None:
    pool = EntityPool(dim=64, page_size=16, backend=backend)  # type: ignore[arg-type]
    users = ["none", "few", "many"]
    pool.append("few", vectors(5))
    pool.append("many", vectors(100, seed=4))
    queries = torch.stack([vectors(3, seed=9)] * 3)
    scores = pool.score(users, queries)
    width = max(len(pool.tables.get(u, [])) for u in users)
    tables = torch.zeros(3, width, dtype=torch.int32)
    for i, u in enumerate(users):
        tables[i, : len(pool.tables.get(u, []))] = torch.tensor(pool.tables.get(u, []), dtype=torch.int32)
    lens = torch.tensor([pool.lengths.get(u, 0) for u in users], dtype=torch.int32)
    ref_out, ref_lse = paged_attention_reference(
        queries, pool.pages, pool.pages, pool.scales, pool.scales, tables, lens
    )
    assert torch.isinf(scores.relevance[0]).all()
    assert torch.allclose(scores.pooled, ref_out, atol=2e-3)
    assert torch.allclose(scores.relevance[1:], ref_lse[1:], atol=2e-3)


def test_a_tag_like_the_users_entities_scores_higher() -> None:
    pool = EntityPool(dim=64)
    phones = vectors(1, seed=11).repeat(40, 1) + 0.05 * vectors(40, seed=12)
    pool.append("u", phones)
    tags = torch.stack([phones[0], vectors(1, seed=13)[0]]).unsqueeze(0)
    relevance = pool.score(["u"], tags).relevance[0]
    assert relevance[0] > relevance[1]


def test_backend_is_chosen_by_device_unless_the_settings_say() -> None:
    assert pick_backend(torch.device("cpu")) == "torch"
    assert pick_backend(torch.device("cuda")) == "triton"
    assert pick_backend(torch.device("cuda"), "torch") == "torch"


def test_many_users_appended_at_once_land_as_if_one_by_one() -> None:
    together, alone = EntityPool(dim=64, page_size=4, pages=1), EntityPool(dim=64, page_size=4, pages=1)
    rows = vectors(11, seed=5)
    users = ["a", "b", "a", "a", "c", "a", "b", "a", "a", "b", "a"]
    together.append_many(users, rows)
    for user, row in zip(users, rows, strict=True):
        alone.append(user, row[None])
    for user in "abc":
        assert torch.equal(together.entities(user), alone.entities(user))
    with pytest.raises(ValueError, match=r"\[2, 64\]"):
        together.append_many(["a", "b"], vectors(3))


def test_trim_keeps_the_newest_entities_in_whole_pages() -> None:
    pool = EntityPool(dim=64, page_size=8, pages=4)
    rows = vectors(30, seed=6)
    pool.append("u", rows)
    pool.trim("u", keep=12)  # 30 -> 22 -> 14; one more page would leave 6 < 12
    assert pool.lengths["u"] == 14
    assert torch.allclose(pool.entities("u"), rows[16:], atol=0.07)
    assert len(pool._free) == 2
    pool.append("u", vectors(1, seed=7))
    assert torch.allclose(pool.entities("u")[:14], rows[16:], atol=0.07)


@pytest.mark.slow
def test_kernels_compile_for_hopper_with_fp8_wgmma_and_no_spills() -> None:
    report = run_in_subprocess()
    assert report["sm90_compiled"], report.get("error")
    assert report["wgmma_fp8"]
    assert report["spill_bytes_d128"] == 0
    assert report["spill_bytes"] == 0
