"""The model is used only when its bytes are exactly the published ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from intentstream.deploy.model import ModelError, assemble_gguf


def chunks(tmp_path: Path, *parts: bytes) -> list[Path]:
    paths = []
    for i, data in enumerate(parts):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_matching_chunks_are_assembled_in_order(tmp_path: Path) -> None:
    parts = chunks(tmp_path, b"GGUF", b"-weights-", b"tail")
    whole = b"GGUF-weights-tail"
    target = assemble_gguf(
        parts, tmp_path / "m.gguf", size=len(whole), sha256=hashlib.sha256(whole).hexdigest()
    )
    assert target.read_bytes() == whole


def test_wrong_bytes_are_refused_and_nothing_is_left(tmp_path: Path) -> None:
    parts = chunks(tmp_path, b"GGUF", b"tampered")
    with pytest.raises(ModelError, match="refusing"):
        assemble_gguf(parts, tmp_path / "m.gguf", size=12, sha256=hashlib.sha256(b"GGUF-weights").hexdigest())
    assert not (tmp_path / "m.gguf").exists()
    assert not (tmp_path / "m.gguf.partial").exists()


def test_wrong_order_is_refused(tmp_path: Path) -> None:
    parts = chunks(tmp_path, b"B", b"A")
    with pytest.raises(ModelError):
        assemble_gguf(parts, tmp_path / "m.gguf", size=2, sha256=hashlib.sha256(b"AB").hexdigest())
