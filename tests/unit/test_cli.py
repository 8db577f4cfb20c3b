"""The command line lists what the README promises."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.helpers import event_dict


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in (
        "up",
        "down",
        "status",
        "llm",
        "worker",
        "demo",
        "replay",
        "convert",
        "get",
        "bench",
        "eval",
    ):
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


def test_each_benchmark_has_its_own_flags_and_defaults() -> None:
    from intentstream.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench", "agents"]).users == 20
    assert parser.parse_args(["bench", "redis"]).users == 100_000
    assert parser.parse_args(["bench", "agents", "--users", "6"]).users == 6
    assert parser.parse_args(["bench", "ingest", "--events", "500", "--json"]).events == 500
    for bad in (["--users", "0"], ["--users", "-3"], ["--users", "x"], ["--events", "100"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "agents", *bad])  # --events is ingest's, not agents'
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "kernels", "--users", "3"])


def _cli(*args: str, home: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "intentstream.cli", *args],
        capture_output=True,
        text=True,
        env={"INTENTSTREAM_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )


def test_eval_of_a_log_nobody_qualifies_in_fails_clearly_before_any_llm(tmp_path: Path) -> None:
    log = tmp_path / "tiny.jsonl"
    log.write_bytes(b"".join(orjson.dumps(event_dict(n)) + b"\n" for n in range(4)) + b"garbage\n")
    result = _cli("eval", "--log", str(log), "--format", "jsonl", home=tmp_path)
    assert result.returncode == 2
    assert "no user has 10 described events (4 events read, 1 rows skipped)" in result.stderr


def test_eval_of_a_missing_log_says_where_it_looked(tmp_path: Path) -> None:
    result = _cli("eval", "--log", str(tmp_path / "nope.csv"), "--format", "rees46", home=tmp_path)
    assert result.returncode == 2
    assert "no log at" in result.stderr


def test_eval_and_bench_replay_options_are_checked(tmp_path: Path) -> None:
    from intentstream.cli import build_parser

    parser = build_parser()
    for bad in (["--k", "0"], ["--users", "-3"], ["--format", "parquet"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["eval", "--log", "x", "--format", "jsonl", *bad])
    result = _cli("bench", "replay", home=tmp_path)
    assert result.returncode == 2
    assert "the following arguments are required: --log, --format" in result.stderr


def test_convert_writes_what_it_could_read_and_counts_the_rest(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    log.write_text(
        "\r\n".join(
            [
                header,
                "2019-10-01 00:00:00 UTC,view,1,2,electronics.smartphone,apple,489.07,7,s",
                "2019-10-01 00:00:01 UTC,teleport,1,2,,,1.0,7,s",  # unknown event type
                "2019-10-01 00:00:02 UTC,view,1,2,,,not-a-price,7,s",
                "2019-10-01 00:00:03 UTC,cart,1,2,,,1.0,7,s",
            ]
        )
    )
    out = tmp_path / "out.jsonl"
    result = _cli("convert", "--log", str(log), "--format", "rees46", "--out", str(out), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == {
        "events": 2,
        "rows_read": 4,
        "skipped": {"unknown_event_type": 1, "invalid_row": 1},
    }
    assert [orjson.loads(line)["action"] for line in out.read_bytes().splitlines()] == ["view", "cart"]
    missing = _cli(
        "convert", "--log", str(tmp_path / "none.csv"), "--format", "rees46", "--out", str(out), home=tmp_path
    )
    assert missing.returncode == 2
    assert "no log at" in missing.stderr


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found = {o for action in parser._actions for o in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def test_no_option_is_one_faust_takes_from_the_command_line() -> None:
    # Importing faust reads sys.argv for --loop*, --datadir* and -L (faust/__init__.py): an
    # option named --loops made `convert --loops 30` load an event loop called "30".
    from intentstream.cli import build_parser

    taken = [o for o in _options(build_parser()) if o.startswith(("--loop", "--datadir")) or o == "-L"]
    assert taken == []


def test_convert_repeats_a_log_from_the_command_line(tmp_path: Path) -> None:
    log = tmp_path / "in.csv"
    log.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:00 UTC,view,3900821,2053013552326770905,appliances.kettle,aqua,33.20,5547,s\n"
    )
    out = tmp_path / "out.jsonl"
    subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "convert", "--log", str(log), "--format", "rees46",
         "--out", str(out), "--repeat", "3"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert len(out.read_bytes().splitlines()) == 3
