"""The V1-style baseline, for comparison only: several independent LLM paths, each re-reading
the user's full raw behaviour history, as RecGPT V1 did before V2's hierarchical agents.

    path 1 (interests):    full history ─► interest tags
    path 2 (tag routes):   full history ─► tags the shopper will look for next
    path 3 (explanations): full history + the merged tags ─► one sentence per tag

Its output goes through the same cleaning and the same judge as the chain's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from intentstream.agents.arbiter import clean_tag
from intentstream.agents.evidence import UserView
from intentstream.agents.explainer import Explained, check_sentence, evidence_sentence
from intentstream.agents.judge import tag_evidence
from intentstream.agents.llm import LLM
from intentstream.agents.prompts import (
    array_of,
    data_block,
    object_schema,
    sentence_property,
    system_prompt,
    tag_property,
)
from intentstream.agents.stage import PlanCost, Stage, StageFailed, ask, parse_model
from intentstream.schemas.events import BehaviorEvent

_PATHS = {
    "v1_interests": "Your task: read the shopper's whole behaviour history (one line per behaviour, "
    "oldest first) and list the shopping interests it shows, strongest first, as tags of 2 to 5 "
    "words built from the words of the items.",
    "v1_routes": "Your task: read the shopper's whole behaviour history (one line per behaviour, "
    "oldest first) and predict the product types they will look for next, as tags of 2 to 5 words "
    "built from the words of the items.",
}
_EXPLAIN = (
    "Your task: read the shopper's whole behaviour history (one line per behaviour, oldest first) "
    "and, for each tag, write one short plain sentence (at most 20 words) saying which behaviour "
    "shows it. Mention only items, counts and prices in the history; never invent facts."
)


def raw_line(e: BehaviorEvent) -> str:
    """One behaviour as plain text, the way a V1-style prompt lists the history."""
    parts = [e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.action.value]
    parts += [p for p in (e.query, e.item_text, e.category, e.brand) if p]
    if e.price is not None:
        parts.append(f"price {e.price:.2f}")
    return " ".join(parts)


class _Tags(BaseModel):
    tags: list[str]


class _Line(BaseModel):
    tag: str
    explanation: str


class _Lines(BaseModel):
    explanations: list[_Line]


@dataclass(frozen=True, slots=True)
class V1Result:
    tags: list[Explained]
    cost: PlanCost


class V1Baseline:
    """Independent paths over the full raw history."""

    def __init__(self, llm: LLM, max_tags: int, retries: int = 2) -> None:
        self.llm = llm
        self.max_tags = max_tags
        tags_schema = object_schema(tags=array_of(tag_property(), max_tags))
        self.paths = [
            Stage(name, system_prompt(task), tags_schema, max_tokens=25 * max_tags, retries=retries)
            for name, task in _PATHS.items()
        ]
        self.explain = Stage(
            "v1_explain",
            system_prompt(_EXPLAIN),
            object_schema(
                explanations=array_of(
                    object_schema(tag=tag_property(), explanation=sentence_property()), max_tags
                )
            ),
            max_tokens=60 * max_tags,
            retries=retries,
        )

    async def plan(self, history: Sequence[BehaviorEvent], view: UserView, now: datetime) -> V1Result:
        """Tags and explanations from the full history; StageFailed when no path answers."""
        cost = PlanCost()
        lines = "\n".join(raw_line(e) for e in history)
        data = data_block({"history": lines})

        def parse_tags(text: str) -> list[str]:
            tags = [t for t in (clean_tag(raw) for raw in parse_model(_Tags, text).tags) if t]
            if not tags:
                raise ValueError("no usable tag")
            return tags

        answers = await asyncio.gather(
            *(ask(self.llm, path, data, parse_tags, cost, view.user_id) for path in self.paths),
            return_exceptions=True,
        )
        merged: dict[str, str] = {}
        for answer in answers:
            if isinstance(answer, StageFailed):
                continue
            if isinstance(answer, BaseException):
                raise answer
            for tag in answer:
                merged.setdefault(tag.casefold(), tag)  # V1 merged its routes by exact text
        tags = list(merged.values())[: self.max_tags]
        if not tags:
            raise StageFailed("v1", view.user_id, cost.calls, "no path gave a usable tag")

        explained: dict[str, str] = {}

        def parse_lines(text: str) -> dict[str, str]:
            for line in parse_model(_Lines, text).explanations:
                key = line.tag.casefold().strip()
                if key in merged and key not in explained:
                    try:
                        explained[key] = check_sentence(line.explanation, view.evidence)
                    except ValueError:
                        continue
            if len(explained) < len(tags):
                raise ValueError("explanations missing or invalid for some tags")
            return explained

        explain_data = data_block({"history": lines, "tags": tags})
        try:
            await ask(self.llm, self.explain, explain_data, parse_lines, cost, view.user_id)
        except StageFailed:
            cost.repairs.append("v1_explain: sentences built from evidence")
        result = [
            Explained(t, explained[t.casefold()], ())
            if t.casefold() in explained
            else Explained(t, evidence_sentence(tag_evidence(t, view), view.evidence), (), "code")
            for t in tags
        ]
        return V1Result(result, cost)
