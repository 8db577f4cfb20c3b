"""The decision arbiter: joint reasoning over the whole candidate pool.

In code (pure, tested): tags cleaned to plain text; candidates with no word in the user's
data dropped (ungrounded); near-duplicates merged (embedding similarity, or one tag's words
containing the other's); a strength from the evidence behind each. Then one LLM call sees
the pool and the profile together and picks and orders the final tags. If it gives no
usable answer, the pool's own ranking is used (a repair, counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from agents.embedding import TextEmbedder, similarity
from agents.evidence import UserView, grounding, words
from agents.experts import Candidate
from agents.llm import LLM
from agents.prompts import INSTRUCTION_LIKE, data_block, object_schema, system_prompt
from agents.stage import PlanCost, Stage, StageFailed, ask
from schemas.record import TAG_MAX_CHARS
from schemas.text import plain_text

MERGE_SIMILARITY = 0.72  # all-MiniLM-L6-v2 cosine; "running shoes" ~ "nike running shoes" is 0.90

_TASK = """\
Your task: you are the arbiter. Weigh all candidate tags (c ids) together and decide for each: \
keep it, or drop it when it is vague, repeats another, has little support (strength, grounded \
near 0) or does not fit the profile.
"""

# The weak candidate comes last, as in a real pool (ranked by evidence): a small model copies
# the example's positions, and must not learn to drop the second-strongest tag.
_EXAMPLE_DATA = {
    "candidates": [
        {"id": "c1", "tag": "nike sport shoes", "rationale": "Viewed shoes.", "grounded": 1, "strength": 2.7},
        {"id": "c2", "tag": "garmin sports watch", "rationale": "Carted.", "grounded": 1, "strength": 2.5},
        {"id": "c3", "tag": "philips kettle", "rationale": "Bought.", "grounded": 1, "strength": 1.5},
        {"id": "c4", "tag": "fitness lifestyle", "rationale": "Likes sport.", "grounded": 0, "strength": 0.4},
    ],
    "profile": {"actions": {"view": 3, "cart": 1, "purchase": 1}, "season": "autumn"},
}  # fmt: skip
_EXAMPLE_ANSWER = {"c1": "keep", "c2": "keep", "c3": "keep", "c4": "drop"}


def arbiter_stage(n_candidates: int) -> Stage:
    """A keep-or-drop decision for each candidate, as properties c1..cn: the model cannot
    skip or invent one."""
    decision = {"type": "string", "enum": ["keep", "drop"]}
    return Stage(
        name="arbiter",
        system=system_prompt(_TASK, _EXAMPLE_DATA, _EXAMPLE_ANSWER),
        schema=object_schema(**{f"c{n + 1}": decision for n in range(n_candidates)}),
        max_tokens=10 + 8 * n_candidates,
    )


@dataclass(frozen=True, slots=True)
class Pooled:
    """A candidate in the arbiter's pool, after cleaning and merging."""

    id: str
    tag: str
    rationale: str
    evidence: tuple[str, ...]
    grounded: float  # share of the tag's words found in the user's data
    strength: float  # weight of the evidence behind it
    merged: tuple[str, ...] = ()  # tags folded into this one

    @property
    def score(self) -> float:
        """The pool's own ranking, used when the LLM arbiter gives no usable answer."""
        return self.strength * (0.5 + self.grounded)


def clean_tag(text: str) -> str | None:
    """The tag as plain text of 2 to 5 words, or None."""
    if INSTRUCTION_LIKE.search(text):
        return None
    tag = plain_text(text, TAG_MAX_CHARS)
    return tag if 2 <= len(tag.split()) <= 5 else None


def pool_candidates(
    candidates: Sequence[Candidate],
    view: UserView,
    embedder: TextEmbedder,
    merge_at: float = MERGE_SIMILARITY,
) -> list[Pooled]:
    """Clean, ground, merge and rank the experts' candidates (strongest first)."""
    vocabulary = view.vocabulary()
    weights = {e.id: e.weight for e in view.evidence}
    kept: list[Pooled] = []
    for c in candidates:
        tag = clean_tag(c.tag)
        if tag is None:
            continue
        share = grounding(tag, vocabulary)
        if share == 0.0:
            continue  # nothing of it is in the user's data
        strength = sum(weights.get(i, 0.0) for i in c.evidence)
        kept.append(Pooled("", tag, plain_text(c.rationale, 200), c.evidence, share, strength))
    kept.sort(key=lambda p: p.score, reverse=True)
    if not kept:
        return []
    sims = similarity(embedder, [p.tag.casefold() for p in kept])
    merged: list[int] = []  # indices into kept, strongest first
    folded: dict[int, list[int]] = {}
    for i, p in enumerate(kept):
        mine = set(words(p.tag))
        for j in merged:
            theirs = set(words(kept[j].tag))
            if sims[i, j] >= merge_at or (mine and theirs and (mine <= theirs or theirs <= mine)):
                folded.setdefault(j, []).append(i)
                break
        else:
            merged.append(i)
    pool = []
    for n, j in enumerate(merged):
        head = kept[j]
        others = [kept[i] for i in folded.get(j, [])]
        evidence = tuple(dict.fromkeys([*head.evidence, *(e for o in others for e in o.evidence)]))
        strength = sum(weights.get(i, 0.0) for i in evidence)
        pool.append(
            Pooled(f"c{n + 1}", head.tag, head.rationale, evidence, head.grounded, strength,
                   tuple(o.tag for o in others))
        )  # fmt: skip
    return pool


def evidence_pool(view: UserView, max_tags: int) -> list[Pooled]:
    """Tags named after the strongest evidence itself: the repair when no expert's candidate
    is grounded (a small model tends to guess a product type for a brand-only item)."""
    pool: list[Pooled] = []
    for e in sorted((e for e in view.evidence if e.kind != "signal"), key=lambda e: -e.weight):
        tag = clean_tag(e.text) or clean_tag(e.text + " products")
        if tag and all(tag.casefold() != p.tag.casefold() for p in pool):
            pool.append(
                Pooled(f"c{len(pool) + 1}", tag, "named after the item itself", (e.id,), 1.0, e.weight)
            )
    return pool[:max_tags]


def parse_decisions(text: str, pool: Sequence[Pooled], max_tags: int) -> list[Pooled]:
    """The pool entries the arbiter kept, strongest evidence first. The model decides what
    stays; the ranking is the evidence's (a 0.5B model orders candidates close to at random)."""
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON: {exc}") from None
    if not isinstance(answer, dict) or any(answer.get(p.id) not in ("keep", "drop") for p in pool):
        raise ValueError(f"the arbiter did not decide on every candidate: {text[:200]}")
    kept = [p for p in pool if answer[p.id] == "keep"]
    if not kept:
        raise ValueError("the arbiter kept no candidate of the pool")
    return kept[:max_tags]  # the pool is ranked already


def arbiter_data(pool: Sequence[Pooled], view: UserView) -> dict[str, Any]:
    candidates = [
        {"id": p.id, "tag": p.tag, "rationale": p.rationale, "grounded": round(p.grounded, 2),
         "strength": round(p.strength, 1)}
        for p in pool
    ]  # fmt: skip
    data: dict[str, Any] = {"candidates": candidates, "profile": view.profile()}
    if view.signals:
        data["signals"] = [s.text for s in view.signals]
    return data


class Arbiter:
    """The decision arbiter agent."""

    def __init__(self, llm: LLM, embedder: TextEmbedder, max_tags: int, retries: int = 2) -> None:
        self.llm = llm
        self.embedder = embedder
        self.max_tags = max_tags
        self.retries = retries

    async def decide(self, candidates: Sequence[Candidate], view: UserView, cost: PlanCost) -> list[Pooled]:
        """The final tags, strongest first; empty when no candidate is grounded."""
        pool = pool_candidates(candidates, view, self.embedder)
        if not pool:
            pool = evidence_pool(view, self.max_tags)
            cost.repairs.append(f"arbiter: no grounded candidate; {len(pool)} tag(s) taken from the evidence")
        if len(pool) <= 1:
            return pool  # nothing to weigh against each other: no LLM call
        data = data_block(arbiter_data(pool, view))
        try:
            stage = replace(arbiter_stage(len(pool)), retries=self.retries)
            return await ask(
                self.llm,
                stage,
                data,
                lambda text: parse_decisions(text, pool, self.max_tags),
                cost,
                view.user_id,
            )
        except StageFailed as exc:
            cost.repairs.append(f"arbiter: ranked by evidence instead ({exc})")
            return pool[: self.max_tags]
