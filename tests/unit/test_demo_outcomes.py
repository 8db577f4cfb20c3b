"""The demo tells a user the judge turned down from one still waiting for a plan."""

from __future__ import annotations

from pathlib import Path

from intentstream.perf.demo import turned_down


def test_turned_down_reads_the_workers_reason_for_that_user_only(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    assert turned_down(log, "u1") is None  # no log yet
    log.write_text(
        "INFO user u10 v3 (drift): ['rain boots']\n"
        "WARNING plan for user u1 judged bad: tags are vague; the user keeps the previous record\n"
        "ERROR no valid plan for user u2: planner: no valid answer; the user keeps the previous record\n"
    )
    assert (
        turned_down(log, "u1")
        == "plan for user u1 judged bad: tags are vague; the user keeps the previous record"
    )
    assert (turned_down(log, "u2") or "").startswith("no valid plan for user u2:")
    assert turned_down(log, "u10") is None  # planned, not turned down
    assert turned_down(log, "u3") is None
