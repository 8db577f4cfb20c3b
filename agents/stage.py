"""One structured LLM call of one agent stage: a fixed system prompt (served from vLLM's
prefix cache), the user's data in a delimited block, a JSON schema, a token budget, a
validating parser and bounded retries. Every call's tokens and latency are booked to its
stage, so a plan's cost can be read per agent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from intentstream.agents.llm import LLM, LLMError, Message

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
RETRY_TEMPERATURE = 0.7


class StageFailed(RuntimeError):
    """A stage gave no valid answer within its retries."""

    def __init__(self, stage: str, user_id: str, attempts: int, last_error: str) -> None:
        super().__init__(
            f"{stage}: no valid answer for user {user_id} after {attempts} attempts: {last_error}"
        )
        self.stage = stage
        self.user_id = user_id
        self.attempts = attempts


@dataclass
class StageCost:
    """Calls, tokens and LLM seconds of one stage."""

    calls: int = 0
    invalid: int = 0  # answers the parser rejected (each was retried or repaired)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, served from vLLM's prefix cache
    completion_tokens: int = 0
    latency_s: float = 0.0


@dataclass
class PlanCost:
    """What one plan cost, by stage (retries included)."""

    stages: dict[str, StageCost] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # answers fixed in code instead of rejected
    delta: bool = False  # a delta plan (agents.chain.delta): no planner, experts for what is new
    generalized: list[str] = field(default_factory=list)  # item names made interests, in code

    def stage(self, name: str) -> StageCost:
        return self.stages.setdefault(name, StageCost())

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stages.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.stages.values())

    @property
    def cached_prompt_tokens(self) -> int:
        return sum(s.cached_prompt_tokens for s in self.stages.values())

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.stages.values())

    @property
    def latency_s(self) -> float:
        return sum(s.latency_s for s in self.stages.values())

    def without(self, *names: str) -> PlanCost:
        """The cost of every stage except ``names`` (e.g. the plan without its judge); the
        errors, repairs and changes made in code are kept."""
        return replace(self, stages={k: v for k, v in self.stages.items() if k not in names})


@dataclass(frozen=True, slots=True)
class Stage:
    """An agent stage's fixed parts: its name, system prompt, answer schema and budget."""

    name: str
    system: str
    schema: dict[str, Any]
    max_tokens: int
    temperature: float = 0.0
    retries: int = 2


def parse_model(model: type[M], text: str) -> M:
    """Parse an answer as ``model``; ValueError (never a pydantic error) when it does not fit."""
    try:
        return model.model_validate(orjson.loads(text))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"answer is not valid JSON of the schema: {str(exc)[:200]}") from None


async def ask(
    llm: LLM, stage: Stage, data: str, parse: Callable[[str], T], cost: PlanCost, user_id: str
) -> T:
    """Ask ``stage`` about ``data`` until ``parse`` accepts the answer (ValueError rejects
    one), at most ``1 + stage.retries`` times; then :class:`StageFailed`."""
    messages: list[Message] = [{"role": "system", "content": stage.system}, {"role": "user", "content": data}]
    booked = cost.stage(stage.name)
    last = "no attempt"
    for attempt in range(1 + stage.retries):
        booked.calls += 1
        try:
            # A retry at temperature 0 would repeat the rejected answer word for word.
            temperature = stage.temperature if attempt == 0 else max(stage.temperature, RETRY_TEMPERATURE)
            answer = await llm.complete(
                messages, schema=stage.schema, max_tokens=stage.max_tokens, temperature=temperature
            )
        except LLMError as exc:
            last = str(exc)[:200]
            cost.errors.append(f"{stage.name}: {last}")
            log.warning("%s attempt %d for user %s failed: %s", stage.name, attempt + 1, user_id, last)
            continue
        booked.prompt_tokens += answer.prompt_tokens
        booked.cached_prompt_tokens += answer.cached_prompt_tokens
        booked.completion_tokens += answer.completion_tokens
        booked.latency_s += answer.latency_s
        try:
            return parse(answer.text)
        except ValueError as exc:
            booked.invalid += 1
            last = str(exc)[:200]
            cost.errors.append(f"{stage.name}: {last}")
            log.warning("%s answer %d for user %s rejected: %s", stage.name, attempt + 1, user_id, last)
    raise StageFailed(stage.name, user_id, booked.calls, last)
