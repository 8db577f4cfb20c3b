"""orjson codecs. Decoding never raises anything but :class:`InvalidMessage`, whose
``reason`` is a stable code the dead-letter topic carries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from intentstream.schemas.events import UNPADDED, Action, BehaviorEvent, EnvSignal
from intentstream.schemas.record import ReplanRequest

M = TypeVar("M", bound=BaseModel)

_ACTIONS = frozenset(a.value for a in Action)


class InvalidMessage(ValueError):
    """A message that cannot be applied. ``reason`` is one of:

    ``oversized``, ``malformed_json``, ``not_an_object``, ``unsupported_schema_version``,
    ``unknown_action``, ``invalid_fields``, ``future_timestamp``, ``key_mismatch``.
    """

    def __init__(self, reason: str, detail: str, message_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" + (f" (id {message_id})" if message_id else ""))
        self.reason = reason
        self.detail = detail[:500]
        self.message_id = message_id


def encode(message: BaseModel) -> bytes:
    """Serialise a model to compact JSON bytes."""
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise InvalidMessage("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("malformed_json", str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidMessage("not_an_object", f"top level is {type(data).__name__}")
    version = data.get("schema_version", 1)
    if version != 1:
        raise InvalidMessage("unsupported_schema_version", f"schema_version={version!r}")
    return data


def _message_id(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    return value[:128] if isinstance(value, str) else None


def _validate(model: type[M], data: dict[str, Any], message_id: str | None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<message>'}: {_said(err)}"
            for err in exc.errors(include_url=False, include_input=False)[:5]
        )
        raise InvalidMessage("invalid_fields", detail, message_id) from None


def _said(error: Any) -> str:
    if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == UNPADDED:
        return "an id must not begin or end with whitespace"
    return str(error["msg"])


def _check_clock(ts: datetime, now: datetime, max_future_skew: timedelta, message_id: str) -> None:
    if ts - now > max_future_skew:
        raise InvalidMessage(
            "future_timestamp", f"ts {ts.isoformat()} is ahead of {now.isoformat()}", message_id
        )


def decode_event(
    raw: bytes,
    *,
    now: datetime,
    key: bytes | None = None,
    max_bytes: int = 16 * 1024,
    max_future_skew: timedelta = timedelta(minutes=5),
) -> BehaviorEvent:
    """Validate one behaviour message from the behaviours topic.

    ``key`` (when given) must be the user id: the per-user table is partitioned by it.
    """
    data = _load_object(raw, max_bytes)
    event_id = _message_id(data, "event_id")
    action = data.get("action")
    if isinstance(action, str) and action not in _ACTIONS:
        raise InvalidMessage("unknown_action", f"action={action[:40]!r}", event_id)
    event = _validate(BehaviorEvent, data, event_id)
    if key is not None and key.decode("utf-8", "replace") != event.user_id:
        raise InvalidMessage("key_mismatch", "message key is not the event's user_id", event_id)
    _check_clock(event.ts, now, max_future_skew, event.event_id)
    return event


def decode_signal(
    raw: bytes,
    *,
    now: datetime,
    max_bytes: int = 16 * 1024,
    max_future_skew: timedelta = timedelta(minutes=5),
) -> EnvSignal:
    """Validate one environment signal from the env-signals topic."""
    data = _load_object(raw, max_bytes)
    signal = _validate(EnvSignal, data, _message_id(data, "signal_id"))
    _check_clock(signal.ts, now, max_future_skew, signal.signal_id)
    return signal


def decode_replan(raw: bytes, max_bytes: int = 1 << 20) -> ReplanRequest:
    """Validate one replan request (written by the stream workers themselves)."""
    data = _load_object(raw, max_bytes)
    return _validate(ReplanRequest, data, _message_id(data, "user_id"))
