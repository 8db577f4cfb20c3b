"""The global planner: reads the whole compressed context once and splits the user's intent
into a few facets, each with a brief for one expert and the evidence that expert may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from intentstream.agents.evidence import UserView
from intentstream.agents.llm import LLM
from intentstream.agents.prompts import (
    EVIDENCE_IDS,
    array_of,
    data_block,
    id_list_property,
    object_schema,
    sentence_property,
    system_prompt,
    tag_property,
)
from intentstream.agents.stage import PlanCost, Stage, ask, parse_model

MAX_FACETS = 3
BRIEF_MAX_CHARS = 120

_TASK = f"""\
Your task: group the data into at most {MAX_FACETS} facets (different things the shopper may \
want), strongest first: a name of 2 to 5 words, a one-sentence brief for an expert, and the \
ids that show it (each id in one facet; a signal only where it matters, e.g. rain: umbrellas).
"""

_EXAMPLE_DATA = {
    "items": {
        "r1": {"item": "garmin electronics watch", "cart": 1},
        "r2": {"item": "nike sport shoes", "view": 3},
        "h1": {"item": "kitchen kettle", "purchase": 1},
    },
    "profile": {"actions": {"view": 3, "cart": 1, "purchase": 1}},
}
_EXAMPLE_ANSWER = {
    "facets": [
        {"facet": "running gear", "brief": "Look at the watch and the shoes.", "evidence": ["r1", "r2"]},
        {"facet": "kitchen appliances", "brief": "Look at the kettle.", "evidence": ["h1"]},
    ]
}  # fmt: skip

STAGE = Stage(
    name="planner",
    system=system_prompt(EVIDENCE_IDS + _TASK, _EXAMPLE_DATA, _EXAMPLE_ANSWER),
    schema=object_schema(
        facets=array_of(
            object_schema(
                facet=tag_property(),
                brief=sentence_property(BRIEF_MAX_CHARS),
                evidence=id_list_property(8),
            ),
            MAX_FACETS,
        )
    ),
    max_tokens=220,
)


class _Facet(BaseModel):
    facet: str = Field(max_length=64)
    brief: str = Field(max_length=BRIEF_MAX_CHARS * 2)
    evidence: list[str]


class _Answer(BaseModel):
    facets: list[_Facet]


@dataclass(frozen=True, slots=True)
class Facet:
    """One part of the user's intent, for one expert."""

    name: str
    brief: str
    evidence: tuple[str, ...]  # ids into the user's view


def planner_data(view: UserView) -> dict[str, Any]:
    """Everything the planner sees: all evidence and the profile."""
    return {"items": view.items(), "profile": view.profile(with_season=False)}


def parse_facets(text: str, view: UserView) -> list[Facet]:
    """Validate the planner's answer against the view: unknown ids and ids already used by a
    stronger facet are dropped, and so are facets left without evidence. ValueError when no
    facet is left."""
    answer = parse_model(_Answer, text)
    known = {e.id for e in view.evidence}
    used: set[str] = set()
    facets: list[Facet] = []
    for raw in answer.facets[:MAX_FACETS]:
        ids = tuple(dict.fromkeys(i for i in raw.evidence if i in known and i not in used))
        if not any(not i.startswith("s") for i in ids):
            continue  # a signal alone is no shopping interest of this user
        used.update(ids)
        facets.append(Facet(raw.facet.strip(), raw.brief.strip(), ids))
    if not facets:
        raise ValueError("the planner's answer holds no facet grounded in the user's data")
    return facets


class Planner:
    """The global planner agent."""

    def __init__(self, llm: LLM, stage: Stage = STAGE) -> None:
        self.llm = llm
        self.stage = stage

    async def plan(self, view: UserView, cost: PlanCost) -> list[Facet]:
        data = data_block(planner_data(view))
        return await ask(
            self.llm, self.stage, data, lambda text: parse_facets(text, view), cost, view.user_id
        )
