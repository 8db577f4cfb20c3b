"""``intentstream demo``: the whole loop on real parts, then everything it started stops.

broker + redis-server (+ the vLLM server) ─► a worker process ─► replay the first REES46
events ─► wait for the most active users' plans ─► print their tags and explanations as
read back from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from intentstream.agents.audit import audit_plan, entity_words
from intentstream.agents.evidence import season
from intentstream.deploy import stack
from intentstream.deploy.model import ensure_model
from intentstream.perf.logs import load_events
from intentstream.producer import IntentProducer
from intentstream.schemas.codec import encode
from intentstream.schemas.events import BehaviorEvent
from intentstream.schemas.record import IntentRecord
from intentstream.settings import Settings
from intentstream.store import IntentStore, connect_with
from intentstream.stream.batch import BatchPath, Message
from intentstream.stream.context import UserContext


def start_worker(
    settings: Settings, endpoints: stack.Endpoints, log: Path, *, planner: bool = True
) -> subprocess.Popen[bytes]:
    """A worker in its own process with these settings, pointed at ``endpoints``."""
    pinned = settings.model_copy(
        update={
            "kafka_bootstrap": endpoints.kafka_bootstrap,
            "redis_url": endpoints.redis_url,
            "llm_base_url": endpoints.llm_base_url,
            # The broker is the local Tansu when no address was configured.
            "scan_end_offsets": (
                settings.scan_end_offsets
                if settings.scan_end_offsets is not None
                else settings.kafka_bootstrap is None
            ),
        }
    )
    # The unprefixed names win over the prefixed ones; keep the parent's out of the child.
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL", "LLM_BASE_URL")}
    env.update(pinned.to_env())
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "intentstream.cli", "worker", *([] if planner else ["--no-planner"])],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (faust commits and leaves the group), SIGKILL after ``timeout_s``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _publish(settings: Settings, bootstrap: str, events: list[BehaviorEvent]) -> int:
    async with IntentProducer(bootstrap, settings) as producer:
        return await producer.send_events(events)


async def wait_for_plans(
    settings: Settings,
    redis_url: str,
    users: list[str],
    *,
    timeout_s: float,
    alive: Callable[[], bool],
    say: Callable[[str], None],
    turned_down: Callable[[str], str | None] = lambda _user: None,
) -> dict[str, IntentRecord]:
    """Poll Redis until every user in ``users`` has a record with the LLM's tags (their own
    plan, or the plan cache's) or was turned down (the judge found the plan bad, or no valid
    plan came), or the timeout passes."""
    client = connect_with(settings, redis_url)
    store = IntentStore.from_settings(client, settings)
    started = time.monotonic()
    found: dict[str, IntentRecord] = {}
    try:
        while time.monotonic() - started < timeout_s and alive():
            for user in users:
                record = await store.get(user)
                if record is not None and (
                    record.llm_context_version is not None or any(t.source == "cache" for t in record.tags)
                ):
                    # The LLM's plan landed, or its plan for another user with the same interests
                    # was served from the shared plan cache (live records come first).
                    found[user] = record
            written = await store.notifications()
            say(
                f"  {len(found)}/{len(users)} followed users planned; {written} records written in all "
                f"({time.monotonic() - started:.0f}s)"
            )
            if all(user in found or turned_down(user) for user in users):
                break
            await asyncio.sleep(5.0)
    finally:
        await client.aclose()
    return found


def asked_about(settings: Settings, events: list[BehaviorEvent]) -> set[str]:
    """The users whose events make the worker's batch path ask the LLM for a plan."""
    path = BatchPath.from_settings(settings)
    contexts: dict[int, dict[str, UserContext]] = {0: {}}
    asked: set[str] = set()
    for offset, event in enumerate(events):
        message = Message(
            "behaviors", 0, offset, event.user_id.encode(), encode(event), event.ts.timestamp() * 1000
        )
        asked |= set(path.apply(contexts, [message], event.ts).decisions)
    return asked


def turned_down(log: Path, user: str) -> str | None:
    """Why the worker wrote no plan for ``user``, if its log says so."""
    if not log.exists():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        for marker in (f"plan for user {user} judged bad", f"no valid plan for user {user}:"):
            if marker in line:
                return line[line.index(marker) :]
    return None


def describe(
    user: str,
    events: list[BehaviorEvent],
    record: IntentRecord | None,
    why_not: str | None = None,
    known: frozenset[str] = frozenset(),
) -> str:
    """A user's behaviour and intents, for people, with the fact audit's verdict on the
    agents' tags (``agents.audit``: against the user's raw events up to the record's)."""
    mine = [e for e in events if e.user_id == user]
    actions = Counter(e.action.value for e in mine)
    lines = [f"user {user}: {len(mine)} events ({', '.join(f'{n} {a}' for a, n in actions.items())})"]
    for event in mine[-3:]:
        said = event.item_text or (
            f"search {event.query!r}" if event.query else f"item {event.item_id} (undescribed)"
        )
        lines.append(f"    recent  {event.action.value:8s} {said}")
    if record is None:
        lines.append(f"    (no plan written: {why_not})" if why_not else "    (no plan yet)")
        return "\n".join(lines)
    lines.append(
        f"    plan v{record.version} ({record.trigger}) by {record.model}, judged {record.verdict}, "
        f"from behaviour up to {record.event_time:%Y-%m-%d %H:%M:%S} UTC"
    )
    planned = [t for t in record.tags if t.source != "live"]
    seen = [e for e in mine if e.ts <= record.event_time]
    audit = audit_plan(
        [(t.tag, t.explanation) for t in planned],
        seen,
        max_tags=max(1, len(planned)),
        known=known,
        moment=season(record.event_time),
    )
    verdicts = dict(zip((id(t) for t in planned), audit.tags, strict=True))
    for tag in record.tags:  # who made each: the LLM, or code from the user's own events
        # A live entry is code's throughout; say so of the others' sentences where it is true.
        by = "; sentence by code" if tag.wording == "code" and tag.source != "live" else ""
        lines.append(f"    • [{tag.source}{by}] {tag.tag} — {tag.explanation}")
        if (checked := verdicts.get(id(tag))) is not None:
            lines.append(
                "        audit: true"
                if not checked.problems
                else f"        audit: {'; '.join(checked.problems)}"
            )
    if planned:
        covered = "covered" if audit.heaviest_covered else "NOT covered"
        lines.append(f"    audit: heaviest interest {audit.heaviest!r} {covered}")
    lines += feed_lines(record, events)
    return "\n".join(lines)


FEED_SHOWN = 6


def feed_lines(record: IntentRecord, events: list[BehaviorEvent]) -> list[str]:
    """The first items a feed would show (``IntentRecord.items``), each with its title from
    the replayed events and the lists it came from: the tags' items, the items co-viewed with
    the user's last ones, their latest category's most popular (all three code's lookups)."""
    shown = record.items(FEED_SHOWN)
    if not shown:
        return []
    titles = {e.item_id: e.item_text for e in events if e.item_id and e.item_text}
    lists = (
        ("tags", {i for t in record.tags for i in t.items}),
        ("co-viewed", set(record.co_viewed)),
        ("category", set(record.category_popular)),
    )
    offered = set().union(*(items for _, items in lists))  # the feed is these, without repeats
    out = [f"    a feed shows first ({len(offered)} items in all):"]
    for item in shown:
        sources = ", ".join(name for name, items in lists if item in items)
        out.append(f"      {titles.get(item, item)} [{sources}]")
    return out


def run_demo(
    settings: Settings, log: Path, *, events: int, follow: int, timeout_s: float, say: Callable[[str], None]
) -> int:
    """Run the demo; returns the exit code (0 when every followed user got a plan)."""
    before = set(stack.load_state(settings))
    started: list[str] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        say("[1/5] starting the broker and redis-server ...")
        services = stack.up(settings, say)
        if settings.llm_base_url is None and "llm" not in services:
            say("[2/5] preparing the model and starting the vLLM server on CPU ...")
            services["llm"] = stack.start_llm(settings, ensure_model(settings, say), say)
            stack.save_state(settings, services)
        else:
            say("[2/5] using the running LLM server")
        started = [name for name in services if name not in before]
        endpoints = stack.resolve_endpoints(settings, need_llm=True)

        worker_log = settings.home / "logs" / "worker.log"
        say(f"[3/5] starting a worker (log {worker_log}) ...")
        worker = start_worker(settings, endpoints, worker_log)

        replayed = list(itertools.islice(load_events(log, "rees46"), events))
        known = entity_words(replayed)
        # Users with the most described items among those the worker will ask the LLM about
        # (decided by the worker's own batch path): the others get live records only.
        described = Counter(e.user_id for e in replayed if e.item_text)
        asked = asked_about(settings, replayed)
        followed = [user for user, _ in described.most_common() if user in asked][:follow]
        say(
            f"[4/5] replaying the first {len(replayed)} events of {log.name} "
            f"({len({e.user_id for e in replayed})} users) ..."
        )
        sent = asyncio.run(_publish(settings, endpoints.kafka_bootstrap, replayed))
        say(f"  {sent} events confirmed by the broker")

        say(f"[5/5] waiting for the plans of the {len(followed)} most active users ...")
        proc = worker
        records = asyncio.run(
            wait_for_plans(
                settings,
                endpoints.redis,
                followed,
                timeout_s=timeout_s,
                alive=lambda: proc.poll() is None,
                say=say,
                turned_down=lambda user: turned_down(worker_log, user),
            )
        )
        if worker.poll() is not None:
            say(f"error: the worker exited with code {worker.returncode}; see {worker_log}")
            return 1
        print()
        for user in followed:
            print(describe(user, replayed, records.get(user), turned_down(worker_log, user), known))
            print()
        # Done when every followed user was planned or turned down (the judge gate is working
        # as meant), and at least one plan reached Redis.
        settled = all(user in records or turned_down(worker_log, user) for user in followed)
        return 0 if records and settled else 1
    finally:
        if worker is not None:
            say("stopping the worker ...")
            stop_worker(worker)
        if started:
            with contextlib.suppress(stack.StackError):
                stack.down(settings, iter(started), say)
