"""The command line lists what the README promises."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("up", "down", "status", "llm", "worker", "demo", "replay", "get", "bench"):
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


def test_replay_pacing_options_are_checked() -> None:
    from intentstream.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["replay", "--log", "x", "--format", "jsonl", "--speedup", "60"])
    assert (args.speedup, args.rate) == (60.0, None)
    for bad in (["--rate", "0"], ["--speedup", "-2"], ["--rate", "nan"], ["--rate", "5", "--speedup", "2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["replay", "--log", "x", "--format", "jsonl", *bad])


def test_worker_roles_exclude_each_other(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "worker", "--no-planner", "--planner-only"],
        capture_output=True,
        text=True,
        env={"INTENTSTREAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP": "127.0.0.1:1"},
    )
    assert result.returncode == 2
    assert "exclude each other" in result.stderr


def test_status_without_a_stack_says_so_and_fails(tmp_path: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "status"],
        capture_output=True,
        text=True,
        env={"INTENTSTREAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_bench_counts_are_checked_and_default_per_benchmark() -> None:
    from intentstream.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench", "agents"]).users is None  # 20 for agents, 100,000 for redis
    assert parser.parse_args(["bench", "agents", "--users", "6"]).users == 6
    for bad in (["--users", "0"], ["--users", "-3"], ["--users", "x"], ["--events", "1.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "agents", *bad])
