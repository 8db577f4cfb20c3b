"""The single-call intent tagger: one structured LLM call turns a user's context into tags
with an explanation each. Every answer is validated; an invalid one is retried a bounded
number of times and then the user keeps their previous record."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from pydantic import BaseModel, ValidationError

from agents.llm import LLM, LLMError
from agents.prompts import behaviour_data, data_block, tagger_schema, tagger_system
from schemas.record import IntentRecord, IntentTag, ReplanRequest

log = logging.getLogger(__name__)


class PlanFailed(RuntimeError):
    """No valid plan after the bounded retries; the user keeps their previous record."""

    def __init__(self, user_id: str, attempts: int, last_error: str) -> None:
        super().__init__(f"no valid plan for user {user_id} after {attempts} attempts: {last_error}")
        self.user_id = user_id
        self.attempts = attempts


class _RawTag(BaseModel):
    tag: str
    explanation: str


class _TaggerAnswer(BaseModel):
    tags: list[_RawTag]


@dataclass
class PlanCost:
    """Tokens and calls spent on one plan, retries included."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def parse_tags(text: str, max_tags: int) -> list[IntentTag]:
    """Validate an answer: JSON of the schema, tags cleaned to plain text, duplicates
    (case-insensitive) and empties dropped. Raises ValueError when nothing usable is left."""
    try:
        answer = _TaggerAnswer.model_validate(orjson.loads(text))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"answer is not valid JSON of the schema: {str(exc)[:200]}") from None
    tags: list[IntentTag] = []
    seen: set[str] = set()
    for raw in answer.tags:
        try:
            tag = IntentTag(tag=raw.tag, explanation=raw.explanation)
        except ValidationError:
            continue  # empty after cleaning
        if tag.tag.casefold() not in seen:
            seen.add(tag.tag.casefold())
            tags.append(tag)
    if not tags:
        raise ValueError("answer holds no usable tag")
    return tags[:max_tags]


class IntentTagger:
    """Plans one user's intents with a single structured LLM call."""

    def __init__(
        self, llm: LLM, *, max_tags: int, max_tokens: int, max_retries: int, temperature: float
    ) -> None:
        self.llm = llm
        self.max_tags = max_tags
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.temperature = temperature
        self._system = tagger_system(max_tags)
        self._schema = tagger_schema(max_tags)

    async def plan(self, request: ReplanRequest, now: datetime) -> tuple[IntentRecord, PlanCost]:
        """A validated record for ``request``, or :class:`PlanFailed`."""
        messages = [
            {"role": "system", "content": self._system},
            {"role": "user", "content": data_block(behaviour_data(request))},
        ]
        cost = PlanCost()
        for _attempt in range(1 + self.max_retries):
            cost.calls += 1
            try:
                answer = await self.llm.complete(
                    messages, schema=self._schema, max_tokens=self.max_tokens, temperature=self.temperature
                )
                cost.prompt_tokens += answer.prompt_tokens
                cost.completion_tokens += answer.completion_tokens
                cost.latency_s += answer.latency_s
                tags = parse_tags(answer.text, self.max_tags)
            except (LLMError, ValueError) as exc:
                cost.errors.append(str(exc)[:200])
                log.warning("plan attempt %d for user %s failed: %s", cost.calls, request.user_id, exc)
                continue
            record = IntentRecord(
                user_id=request.user_id,
                version=request.context_version,
                context_version=request.context_version,
                trigger=request.trigger,
                tags=tags,
                event_time=request.newest_event_time,
                planned_at=now,
                model=self.llm.model,
            )
            return record, cost
        raise PlanFailed(request.user_id, cost.calls, cost.errors[-1] if cost.errors else "unknown")
