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


def test_each_planned_tag_is_printed_with_the_audits_verdict() -> None:
    from datetime import timedelta

    from intentstream.perf.demo import describe
    from intentstream.schemas.events import BehaviorEvent
    from intentstream.schemas.record import IntentRecord, IntentTag
    from tests.helpers import NOW

    events = [
        BehaviorEvent(
            event_id=f"e{n}", user_id="u1", action="view", ts=NOW - timedelta(minutes=n), item_id=f"i{n % 2}",
            item_text=("apple smartphone", "samsung smartphone")[n % 2], brand=("apple", "samsung")[n % 2],
        )
        for n in range(6)
    ]  # fmt: skip
    record = IntentRecord(
        user_id="u1", version=3, context_version=3, trigger="first_plan", event_time=NOW, planned_at=NOW,
        model="m", verdict="good", llm_context_version=3,
        tags=[
            IntentTag(tag="apple smartphone", explanation="You viewed the samsung smartphone 3 times."),
            IntentTag(
                tag="samsung smartphone",
                explanation="You viewed the samsung smartphone 3 times.",
                wording="code",
            ),
            IntentTag(tag="smartphones", explanation="Viewed 6 times.", source="live", wording="code"),
        ],
    )  # fmt: skip
    text = describe("u1", events, record)
    lines = text.splitlines()
    apple = lines.index("    • [llm] apple smartphone — You viewed the samsung smartphone 3 times.")
    assert "names ['samsung']" in lines[apple + 1]
    # the samsung tag, its sentence code's after the model's answers failed
    assert (
        lines[apple + 2]
        == "    • [llm; sentence by code] samsung smartphone — You viewed the samsung smartphone 3 times."
    )
    assert lines[apple + 3] == "        audit: true"
    assert lines[apple + 4].startswith("    • [live] smartphones")
    assert "audit:" not in lines[apple + 4] or "heaviest" in lines[apple + 4]  # live entries: code's
    assert "heaviest interest" in lines[-1]


def test_the_items_a_feed_shows_first_are_printed_with_their_titles_and_lists() -> None:
    from intentstream.perf.demo import describe
    from intentstream.schemas.events import BehaviorEvent
    from intentstream.schemas.record import IntentRecord, IntentTag
    from tests.helpers import NOW

    events = [
        BehaviorEvent(event_id=f"e{n}", user_id=user, action="view", ts=NOW, item_id=item, item_text=text)
        for n, (user, item, text) in enumerate(
            [("u1", "k1", "bosch kettle"), ("u2", "k2", "tefal kettle"), ("u2", "m1", "kettle descaler")]
        )
    ]  # fmt: skip
    kettles = IntentTag(
        tag="kettles", explanation="Viewed once.", source="live", wording="code", items=["k2"]
    )
    record = IntentRecord(
        user_id="u1", version=2, context_version=1, trigger="live", event_time=NOW, planned_at=NOW,
        model="none", tags=[kettles], co_viewed=["m1", "k2"], category_popular=["k2", "x9"],
    )  # fmt: skip
    lines = describe("u1", events, record).splitlines()
    start = lines.index("    a feed shows first (3 items in all):")
    assert lines[start + 1 :] == [
        "      tefal kettle [tags, co-viewed, category]",
        "      kettle descaler [co-viewed]",
        "      x9 [category]",  # no title among the replayed events: its id
    ]


def test_an_undescribed_event_is_printed_as_such_not_as_none() -> None:
    from intentstream.perf.demo import describe
    from intentstream.schemas.events import BehaviorEvent
    from tests.helpers import NOW

    events = [
        BehaviorEvent(event_id="e1", user_id="u1", action="view", ts=NOW, item_id="i9"),
        BehaviorEvent(event_id="e2", user_id="u1", action="search", ts=NOW, query="red kettle"),
    ]
    lines = describe("u1", events, None).splitlines()
    assert lines[1] == "    recent  view     item i9 (undescribed)"
    assert lines[2] == "    recent  search   search 'red kettle'"
