"""The naive faust baseline of ``intentstream bench ingest``: the same validation and the
same context update as the worker, written the obvious faust way (one event at a time, a
table set per event). Run as a process:

    NAIVE_BOOTSTRAP=... NAIVE_TOPIC=... NAIVE_EVENTS=N NAIVE_RESULT=out.json \\
        python -m perf.naive_faust worker -l warn

It writes ``{"events_per_s": ...}`` (first event received → Nth applied) to NAIVE_RESULT
and exits.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faust
import orjson

from intentstream.schemas.codec import InvalidMessage, decode_event
from intentstream.stream.context import ContextShape, UserContext, apply_event
from intentstream.stream.entities import EntityCache

_env = os.environ
app = faust.App(
    f"naive-{os.getpid()}",
    broker=f"kafka://{_env.get('NAIVE_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    topic_partitions=int(_env.get("NAIVE_PARTITIONS", "4")),
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
    datadir=_env.get("NAIVE_DATADIR", f"/tmp/naive-faust-{os.getpid()}"),
)
source = app.topic(_env.get("NAIVE_TOPIC", "behaviors"), partitions=int(_env.get("NAIVE_PARTITIONS", "4")))
table = app.Table("contexts", partitions=int(_env.get("NAIVE_PARTITIONS", "4")), value_type=bytes)
shape, entities = ContextShape(), EntityCache()
wanted = int(_env.get("NAIVE_EVENTS", "0"))
progress = {"seen": 0, "started": 0.0}


@app.agent(source)
async def apply_each(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        if not progress["started"]:
            progress["started"] = time.time()
        progress["seen"] += 1
        try:
            behaviour = decode_event(
                event.value, now=datetime.now(UTC), key=event.key, max_future_skew=timedelta(minutes=5)
            )
        except InvalidMessage:
            continue
        raw = table.get(behaviour.user_id)
        ctx = UserContext.from_bytes(raw) if raw else UserContext(behaviour.user_id)
        if apply_event(ctx, behaviour, shape, entities, (event.message.partition, event.message.offset)):
            table[behaviour.user_id] = ctx.to_bytes()
        if progress["seen"] >= wanted:
            elapsed = time.time() - progress["started"]
            result = {"events": wanted, "elapsed_s": elapsed, "events_per_s": wanted / elapsed}
            Path(_env["NAIVE_RESULT"]).write_bytes(orjson.dumps(result))  # noqa: ASYNC240 - once, then exit
            os._exit(0)


if __name__ == "__main__":
    app.main()
