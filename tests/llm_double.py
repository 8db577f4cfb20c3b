"""A test double for the LLM: answers each agent stage from a script, and records every
prompt it was given. It is not a model; unit tests use it to drive the agents' code paths
(validation, retries, repairs, the gate) deterministically."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from intentstream.agents import arbiter, experts, explainer, judge, planner
from intentstream.agents.llm import Completion, Message
from intentstream.agents.v1 import V1Baseline

Answer = str | Exception | Callable[[str], str]


def _known_stages() -> dict[str, str]:
    """Every agent stage's system prompt, mapped to the stage's name."""
    v1 = V1Baseline(None, max_tags=4)  # type: ignore[arg-type]  # only its prompts are read
    stages = [
        *(planner.STAGE, experts.STAGE, arbiter.arbiter_stage(4)),
        *(explainer.guide_stage(tone) for tone in explainer.TONES),
        *(judge.relevance_stage(4), judge.senior_stage(), *v1.paths, v1.explain),
        *(explainer.explain_stage(4, tone) for tone in explainer.TONES),
    ]
    return {stage.system: stage.name for stage in stages}


_STAGES = _known_stages()


def stage_of(system: str) -> str:
    if system not in _STAGES:
        raise AssertionError(f"the double does not know this system prompt: {system[:120]!r}")
    return _STAGES[system]


def data_of(messages: list[Message]) -> Any:
    """The JSON inside the user message's data block."""
    body = messages[-1]["content"]
    return orjson.loads(body.removeprefix("<data>\n").removesuffix("\n</data>"))


@dataclass
class Call:
    stage: str
    messages: list[Message]
    schema: dict[str, Any]
    temperature: float

    @property
    def data(self) -> Any:
        return data_of(self.messages)


class ScriptedLLM:
    """Test double: per stage, answers with the scripted items in order (the last one
    repeats); an item is a text, an exception to raise, or a function of the data text."""

    model = "scripted-test-double"

    def __init__(self, **script: Answer | list[Answer]) -> None:
        self.script: dict[str, deque[Answer]] = defaultdict(deque)
        for stage, answers in script.items():
            self.script[stage].extend(answers if isinstance(answers, list) else [answers])
        self.calls: list[Call] = []

    def calls_of(self, stage: str) -> list[Call]:
        return [c for c in self.calls if c.stage == stage]

    async def complete(
        self, messages: list[Message], *, schema: dict[str, Any], max_tokens: int, temperature: float
    ) -> Completion:
        stage = stage_of(messages[0]["content"])
        self.calls.append(Call(stage, messages, schema, temperature))
        queue = self.script[stage]
        if not queue:
            raise AssertionError(f"no scripted answer for stage {stage}")
        answer = queue.popleft() if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        text = answer(messages[-1]["content"]) if callable(answer) else answer
        return Completion(text, prompt_tokens=100, completion_tokens=20, latency_s=0.01, finish_reason="stop")


def js(value: Any) -> str:
    return orjson.dumps(value).decode()
