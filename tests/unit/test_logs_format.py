"""JSON log lines carry the ids a record was given, and nothing breaks on odd values."""

from __future__ import annotations

import logging

import orjson

from intentstream.logs import JsonFormatter


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("intentstream.worker", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_json_object_with_the_ids() -> None:
    line = JsonFormatter().format(record("dead-lettered %s", "t/0/5", event_id="e1", reason="malformed_json"))
    entry = orjson.loads(line)
    assert entry["msg"] == "dead-lettered t/0/5"
    assert (entry["level"], entry["event_id"], entry["reason"]) == ("warning", "e1", "malformed_json")
    assert "user_id" not in entry
    assert "\n" not in line


def test_hostile_text_stays_inside_the_json_string() -> None:
    line = JsonFormatter().format(record('x"}\n{"level":"info', user_id="<script>\u0000"))
    entry = orjson.loads(line)
    assert entry["msg"] == 'x"}\n{"level":"info'
    assert entry["user_id"] == "<script>\u0000"
    assert line.count("\n") == 0
