"""What a context service counts and reports: its counters, the freshness ring, the stats
file each worker writes (``<home>/workers/<app>-<pid>.json``) and how to read it back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson


class Freshness:
    """Event produced → context durable (or → a record that includes it), in milliseconds:
    a bounded ring of (produced at, latency) samples, summarised over the newest
    ``window_s`` of production. The ring is two numpy arrays, so a summary reads them as
    they are (it was a deque of tuples, copied into an array for every summary: a tenth of
    a busy worker's CPU when stats were written every second)."""

    def __init__(self, size: int = 250_000, window_s: float = 10.0) -> None:
        self.size = size
        self._produced = np.zeros(size, dtype=np.float64)
        self._latency = np.zeros(size, dtype=np.float64)
        self._next = 0  # where the next sample goes
        self._count = 0
        self.window_ms = window_s * 1000

    def __len__(self) -> int:
        return self._count

    def add(self, produced_ms: float, latency_ms: float) -> None:
        i = self._next
        self._produced[i] = produced_ms
        self._latency[i] = latency_ms
        self._next = (i + 1) % self.size
        self._count = min(self._count + 1, self.size)

    def percentiles(self, window_ms: float | None = None) -> dict[str, float]:
        """Over the newest ``window_ms`` of production (the configured window unless given;
        ``math.inf`` for every sample the ring still holds)."""
        return self.summaries(window_ms)[0]

    def summaries(self, *windows_ms: float | None) -> list[dict[str, float]]:
        """``percentiles`` for each window, reading the ring once."""
        if not self._count:
            return [{} for _ in windows_ms]
        produced, latency = self._produced[: self._count], self._latency[: self._count]
        newest = produced[(self._next - 1) % self.size]
        out = []
        for window_ms in windows_ms:
            window = self.window_ms if window_ms is None else window_ms
            recent = latency if window == math.inf else latency[produced >= newest - window]
            p50, p95, p99 = np.percentile(recent, [50, 95, 99])
            out.append(
                {
                    "p50": round(float(p50), 2),
                    "p95": round(float(p95), 2),
                    "p99": round(float(p99), 2),
                    "max": round(float(recent.max()), 2),
                    "samples": len(recent),
                }
            )
        return out


@dataclass
class ContextCounters:
    """The context service's counters (cumulative since it started)."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    changelog_writes: int = 0
    commits_failed: int = 0
    signals_applied: int = 0
    signals_fanned_out: int = 0  # users whose context a signal re-planned
    signal_replans: dict[str, int] = field(default_factory=dict)  # the same, by signal (newest 1,000)
    triggers: dict[str, int] = field(default_factory=dict)  # re-plans requested, by reason
    # Re-plans decided whose new interests the shared plan cache all held: no LLM request.
    served_from_cache: dict[str, int] = field(default_factory=dict)
    # Of the re-plans requested, those whose new interests earlier requests had all asked
    # about: the cache would have served them had the LLM planned every request by then.
    cacheable_if_llm_kept_up: int = 0
    batches: int = 0
    # Live records (stream/records.py): versions written, users whose record already saw
    # their context, compare-and-set refusals made again, and writes left to the next change.
    records_written: int = 0
    records_unchanged: int = 0
    record_conflicts: int = 0
    records_gave_up: int = 0
    # Where the batch loop's time goes, in seconds: apply (decode, update, trigger), write
    # (live records, changelog and dead letters until acknowledged), commit (offsets).
    seconds_apply: float = 0.0
    seconds_decide: float = 0.0  # of apply: finding what is new and deciding
    seconds_records: float = 0.0  # composing and writing live records (beside the changelog)
    seconds_write: float = 0.0
    seconds_commit: float = 0.0
    first_batch_at: float = 0.0  # wall clock: the first batch received, the latest written
    last_batch_at: float = 0.0

    def signal_replanned(self, signal_id: str, users: int) -> None:
        self.signals_fanned_out += users
        self.signal_replans[signal_id] = self.signal_replans.get(signal_id, 0) + users
        while len(self.signal_replans) > 1000:
            del self.signal_replans[next(iter(self.signal_replans))]


def read_stats(path: Path) -> dict[str, Any] | None:
    try:
        return dict(orjson.loads(path.read_bytes()))
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
