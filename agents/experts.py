"""Expert agents: one per facet, each proposing candidate tags from only its facet's
evidence (a few items, not the whole context: that is where HMAS saves its tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from intentstream.agents.evidence import UserView
from intentstream.agents.llm import LLM
from intentstream.agents.planner import Facet
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

CANDIDATES_PER_EXPERT = 3
RATIONALE_MAX_CHARS = 120

_TASK = f"""\
Your task: you are the expert for one facet. Propose up to {CANDIDATES_PER_EXPERT} tags, best \
first: interests of 2 to 5 words that many items could satisfy, made of the items' words and \
kinds (brand, product type, kind), not one item's whole title; each with a short rationale and \
its ids. Never guess a product type for a brand alone.
"""

_EXAMPLE_DATA = {
    "facet": "running gear",
    "brief": "Look at the watch and the shoes.",
    "items": {
        "r1": {"item": "garmin electronics watch", "cart": 1},
        "r2": {"item": "nike sport shoes", "view": 3},
    },
}
_EXAMPLE_ANSWER = {
    "candidates": [
        {"tag": "garmin watch", "rationale": "The Garmin watch was carted.", "evidence": ["r1"]},
        {"tag": "sport shoes", "rationale": "Viewed the Nike shoes again.", "evidence": ["r2"]},
    ]
}  # fmt: skip

STAGE = Stage(
    name="expert",
    system=system_prompt(EVIDENCE_IDS + _TASK, _EXAMPLE_DATA, _EXAMPLE_ANSWER),
    schema=object_schema(
        candidates=array_of(
            object_schema(
                tag=tag_property(),
                rationale=sentence_property(RATIONALE_MAX_CHARS),
                evidence=id_list_property(6),
            ),
            CANDIDATES_PER_EXPERT,
        )
    ),
    max_tokens=200,
)


class _Candidate(BaseModel):
    tag: str = Field(max_length=96)
    rationale: str = Field(max_length=RATIONALE_MAX_CHARS * 2)
    evidence: list[str]


class _Answer(BaseModel):
    candidates: list[_Candidate]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A tag an expert proposes, with why and on what evidence."""

    tag: str
    rationale: str
    evidence: tuple[str, ...]
    facet: str


def expert_data(view: UserView, facet: Facet) -> dict[str, Any]:
    """What one expert sees: its facet, its brief and its evidence only."""
    return {
        "facet": facet.name,
        "brief": facet.brief,
        "items": view.items(facet.evidence),
    }


def parse_candidates(text: str, facet: Facet) -> list[Candidate]:
    """Validate an expert's answer: evidence outside the facet is dropped; a candidate
    citing nothing inherits the facet's evidence. ValueError when no candidate is given."""
    answer = parse_model(_Answer, text)
    allowed = set(facet.evidence)
    candidates = []
    for raw in answer.candidates[:CANDIDATES_PER_EXPERT]:
        ids = tuple(dict.fromkeys(i for i in raw.evidence if i in allowed)) or facet.evidence
        candidates.append(Candidate(raw.tag.strip(), raw.rationale.strip(), ids, facet.name))
    if not candidates:
        raise ValueError(f"the expert for {facet.name!r} proposed no candidate")
    return candidates


class Expert:
    """An expert agent; one instance serves every facet (the facet is in the data)."""

    def __init__(self, llm: LLM, stage: Stage = STAGE) -> None:
        self.llm = llm
        self.stage = stage

    async def propose(self, view: UserView, facet: Facet, cost: PlanCost) -> list[Candidate]:
        data = data_block(expert_data(view, facet))
        return await ask(
            self.llm, self.stage, data, lambda text: parse_candidates(text, facet), cost, view.user_id
        )
