"""Pydantic v2 models of every message and record, with orjson codecs and schema versions."""

from intentstream.schemas.codec import (
    InvalidMessage,
    decode_event,
    decode_replan,
    decode_signal,
    encode,
)
from intentstream.schemas.events import SCHEMA_VERSION, Action, BehaviorEvent, EnvSignal, SignalKind
from intentstream.schemas.record import IntentRecord, IntentTag, ReplanRequest

__all__ = [
    "SCHEMA_VERSION",
    "Action",
    "BehaviorEvent",
    "EnvSignal",
    "IntentRecord",
    "IntentTag",
    "InvalidMessage",
    "ReplanRequest",
    "SignalKind",
    "decode_event",
    "decode_replan",
    "decode_signal",
    "encode",
]
