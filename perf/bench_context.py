"""``intentstream bench context``: how much the compressed context saves, on real users.

Compression ratio = tokens of the raw behaviour text of a user's whole history ÷ tokens of
what the planner is shown of that user's compressed context (the JSON data block built from
the replan request). Tokens are counted with the served model's own tokenizer. Also the
context's size in bytes, up to 10,000 events for one user (the bound must hold at any
history length).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
from tokenizers import Tokenizer

from intentstream.agents.evidence import user_view
from intentstream.agents.planner import planner_data
from intentstream.agents.v1 import raw_line
from intentstream.perf.logs import LogFormat, load_events
from intentstream.progress import say
from intentstream.schemas.events import BehaviorEvent
from intentstream.settings import Settings
from intentstream.stream.batch import shape_of
from intentstream.stream.context import ContextShape, UserContext, apply_event, replan_request
from intentstream.stream.entities import EntityCache

LOGS: dict[str, tuple[str, LogFormat]] = {
    "rees46": ("rees46/events.csv", "rees46"),
    "online_retail": ("online_retail/online_retail.csv", "online-retail"),
}


def rendered(ctx: UserContext, shape: ContextShape) -> str:
    request = replan_request(ctx, trigger="report", signals=[], now=datetime.now(UTC), shape=shape)
    return orjson.dumps(planner_data(user_view(request, request.requested_at))).decode()


def load_tokenizer(settings: Settings) -> Tokenizer:
    path = settings.model_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make setup` to fetch and convert the model")
    return Tokenizer.from_file(str(path))


def compression(
    events: list[BehaviorEvent], tokenizer: Tokenizer, shape: ContextShape, min_events: int
) -> dict[str, Any]:
    """Ratios over the users with at least ``min_events`` events."""
    histories: dict[str, list[BehaviorEvent]] = defaultdict(list)
    for e in events:
        histories[e.user_id].append(e)
    entities = EntityCache()
    ratios, raw_total, ctx_total = [], 0, 0
    for user, history in histories.items():
        if len(history) < min_events:
            continue
        ctx = UserContext(user)
        for e in history:
            apply_event(ctx, e, shape, entities)
        raw = len(tokenizer.encode("\n".join(raw_line(e) for e in history)).ids)
        compact = len(tokenizer.encode(rendered(ctx, shape)).ids)
        ratios.append(raw / compact)
        raw_total += raw
        ctx_total += compact
    if not ratios:
        return {"users": 0}
    return {
        "users": len(ratios),
        "min_events_per_user": min_events,
        "ratio_median": round(statistics.median(ratios), 2),
        "ratio_pooled": round(raw_total / ctx_total, 2),  # all raw tokens ÷ all context tokens
        "raw_tokens_per_user_mean": round(raw_total / len(ratios)),
        "context_tokens_per_user_mean": round(ctx_total / len(ratios)),
    }


def size_at_length(events: list[BehaviorEvent], shape: ContextShape, lengths: list[int]) -> dict[str, int]:
    """Bytes of one user's context after n events (the log's events, looped, as one user)."""
    entities = EntityCache()
    ctx = UserContext("one-user")
    sizes, largest = {}, 0
    for n in range(1, max(lengths) + 1):
        e = events[(n - 1) % len(events)]
        apply_event(ctx, e.model_copy(update={"user_id": "one-user", "event_id": f"e{n}"}), shape, entities)
        largest = max(largest, len(ctx.to_bytes())) if n % 50 == 0 or n in lengths else largest
        if n in lengths:
            sizes[str(n)] = len(ctx.to_bytes())
    sizes["largest_seen"] = largest
    return sizes


def bench_context(settings: Settings, min_events: int = 20) -> dict[str, Any]:
    tokenizer = load_tokenizer(settings)
    shape = shape_of(settings)
    result: dict[str, Any] = {}
    for name, (rel, fmt) in LOGS.items():
        say(f"compression on {name} ...")
        events = sorted(load_events(settings.datasets_dir / rel, fmt), key=lambda e: e.ts)
        result[f"compression_{name}"] = compression(events, tokenizer, shape, min_events)
        result[f"compression_{name}_50_plus"] = compression(events, tokenizer, shape, 50)
    say("context size up to 10,000 events for one user ...")
    events = list(load_events(settings.datasets_dir / LOGS["rees46"][0], "rees46"))
    started = time.perf_counter()
    result["context_bytes_by_events"] = size_at_length(events, shape, [10, 100, 1000, 10_000])
    result["context_bytes_limit"] = 8192
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["tokenizer"] = f"{settings.llm_model_name} (tokenizer.json of the served model)"
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    result["method"] = (
        "raw = one line per behaviour (time, action, text, category, brand, price) for the user's "
        "whole history; context = the JSON data block the planner is shown (recent behaviours, "
        "interest clusters, each under its id, and the profile); both tokenized with the model's tokenizer"
    )
    return result
