"""Loaders that turn recorded logs into behaviour events.

Both shared logs are kept byte-for-byte as published, messiness included: REES46 has CRLF
line endings and empty category/brand fields; Online Retail has cancellations and ``_`` for
spaces. A row that cannot be turned into a valid event is counted and skipped, never fatal.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import ValidationError

from intentstream.schemas.events import Action, BehaviorEvent

LogFormat = Literal["rees46", "online-retail", "jsonl"]
FORMATS: tuple[LogFormat, ...] = ("rees46", "online-retail", "jsonl")


@dataclass
class LoadStats:
    """How many rows were read, and why any were skipped."""

    rows: int = 0
    events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _rees46(path: Path, stats: LoadStats) -> Iterator[BehaviorEvent]:
    actions = {"view": Action.VIEW, "cart": Action.CART, "purchase": Action.PURCHASE}
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            stats.rows += 1
            action = actions.get(row.get("event_type") or "")
            if action is None:
                stats.skipped["unknown_event_type"] += 1
                continue
            category = (row.get("category_code") or "").strip() or None
            brand = (row.get("brand") or "").strip() or None
            try:
                price = float(row["price"]) if row.get("price") else None
                # The category path's leaf is the product type ("appliances.kitchen.kettle").
                product_type = category.rsplit(".", 1)[-1].replace("_", " ") if category else None
                words = [brand, product_type]
                yield BehaviorEvent(
                    event_id=f"rees46-{line}",
                    user_id=row["user_id"],
                    action=action,
                    ts=datetime.strptime(row["event_time"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC),
                    item_id=row["product_id"],
                    item_text=" ".join(w for w in words if w) or None,  # undescribed: no text
                    category=category,
                    brand=brand,
                    price=price,
                )
                stats.events += 1
            except (KeyError, TypeError, ValueError, ValidationError):
                stats.skipped["invalid_row"] += 1


def _online_retail(path: Path, stats: LoadStats) -> Iterator[BehaviorEvent]:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            stats.rows += 1
            invoice = row.get("InvoiceNo") or ""
            try:
                quantity = int(row["Quantity"])
                if invoice.startswith("C") or quantity <= 0:
                    stats.skipped["cancellation"] += 1
                    continue
                customer = (row.get("CustomerID") or "").strip().removesuffix(".0")
                description = (row.get("Description") or "").replace("_", " ").strip().lower()
                yield BehaviorEvent(
                    event_id=f"retail-{invoice}-{line}",
                    user_id=customer,
                    action=Action.PURCHASE,
                    ts=datetime.strptime(row["InvoiceDate"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC),
                    item_id=row["StockCode"],
                    item_text=description or f"product {row['StockCode']}",
                    price=float(row["UnitPrice"]),
                    region=(row.get("Country") or "").replace("_", " ").strip() or None,
                )
                stats.events += 1
            except (KeyError, TypeError, ValueError, ValidationError):
                stats.skipped["invalid_row"] += 1


def _jsonl(path: Path, stats: LoadStats) -> Iterator[BehaviorEvent]:
    with path.open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            stats.rows += 1
            try:
                yield BehaviorEvent.model_validate(orjson.loads(raw))
                stats.events += 1
            except (orjson.JSONDecodeError, ValidationError):
                stats.skipped["invalid_row"] += 1


def load_events(path: Path, fmt: LogFormat, stats: LoadStats | None = None) -> Iterator[BehaviorEvent]:
    """Events of a log in file order (which is time order for both shared logs)."""
    stats = stats if stats is not None else LoadStats()
    if not path.exists():
        raise FileNotFoundError(f"no log at {path}")
    readers = {"rees46": _rees46, "online-retail": _online_retail, "jsonl": _jsonl}
    return readers[fmt](path, stats)
