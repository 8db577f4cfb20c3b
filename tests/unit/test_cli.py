"""The command line lists what the README promises."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("up", "down", "llm", "worker", "demo", "replay", "get"):
        assert f"    {command} " in out


def test_get_without_a_stack_explains_what_to_do(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "get", "u1"],
        capture_output=True,
        text=True,
        env={"INTENTSTREAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "intentstream up" in result.stderr
