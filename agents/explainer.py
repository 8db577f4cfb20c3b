"""Explanations by meta-prompting: first a style guide written for this user, these tags and
this moment (season, weather, holidays), then one sentence per tag written under that guide
from the tag's own evidence only.

Every sentence is checked in code: plain text, length-limited, and every number in it must
be a number the data holds (no invented prices or counts). A sentence that fails is asked for
again; after the retries it is replaced by one built from the evidence (a repair, counted).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from intentstream.agents.arbiter import Pooled
from intentstream.agents.evidence import Evidence, UserView, grounding, season, stem, words
from intentstream.agents.llm import LLM
from intentstream.agents.prompts import (
    INSTRUCTION_LIKE,
    array_of,
    data_block,
    object_schema,
    sentence_property,
    system_prompt,
)
from intentstream.agents.stage import PlanCost, Stage, StageFailed, ask, parse_model
from intentstream.schemas.events import ACTION_DONE, ACTION_WEIGHT, Action
from intentstream.schemas.record import EXPLANATION_MAX_CHARS
from intentstream.schemas.text import sentence_text

TONES = ("warm", "practical", "playful", "concise")
SENTENCE_MAX_CHARS = 160

_GUIDE_TASK = """\
Your task: write a style guide for the sentences telling this shopper why each tag was chosen: \
a tone, the moment in a few words (from the season and signals only) and what to point at.
"""
_GUIDE_EXAMPLE = {
    "tags": ["garmin sports watch"],
    "profile": {"actions": {"cart": 1}, "season": "autumn", "region": "Lyon"},
    "signals": ["weather: heavy rain this weekend"],
}
_GUIDE_ANSWER = {
    "tone": "practical",
    "moment": "a rainy autumn weekend",
    "focus": "The item and what they did.",
}

_EXPLAIN_TASK = f"""\
Your task: for each tag write one plain sentence (at most 20 words, {SENTENCE_MAX_CHARS} \
characters) in the guide's style, saying what the shopper did with the tag's items, in the \
words of "did" (viewed is not bought). Use only the items, actions, counts and prices given; \
never invent facts. No markup, no links.
"""
_EXPLAIN_EXAMPLE = {
    "guide": {"tone": "warm", "moment": "autumn", "focus": "The item and what they did."},
    "tags": [
        {"id": "t1", "tag": "nike sport shoes",
         "evidence": [{"item": "nike sport shoes", "did": "viewed 3 times"}]},
    ],
}  # fmt: skip
# One tag only: a small model copies an example's sentences by position onto other tags.
_EXPLAIN_ANSWER = {"explanations": [{"id": "t1", "text": "You viewed the Nike sport shoes 3 times."}]}


def guide_stage() -> Stage:
    return Stage(
        name="style_guide",
        system=system_prompt(_GUIDE_TASK, _GUIDE_EXAMPLE, _GUIDE_ANSWER),
        schema=object_schema(
            tone={"type": "string", "enum": list(TONES)},
            moment=sentence_property(60),
            focus=sentence_property(120),
        ),
        max_tokens=80,
    )


def explain_stage(max_tags: int) -> Stage:
    return Stage(
        name="explainer",
        system=system_prompt(_EXPLAIN_TASK, _EXPLAIN_EXAMPLE, _EXPLAIN_ANSWER),
        schema=object_schema(
            explanations=array_of(
                object_schema(id={"type": "string", "pattern": "^t[0-9]{1,2}$"}, text=sentence_property(200)),
                max_tags,
            )
        ),
        max_tokens=60 * max_tags,
    )


class StyleGuide(BaseModel):
    """How this user's explanations should read at this moment."""

    tone: str
    moment: str
    focus: str


class _Explanation(BaseModel):
    id: str
    text: str


class _Explanations(BaseModel):
    explanations: list[_Explanation]


@dataclass(frozen=True, slots=True)
class Explained:
    """A final tag with its explanation."""

    tag: str
    explanation: str
    evidence: tuple[str, ...]


NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
NUMBER_WORDS = {  # "one" is left out: it is a pronoun as often as a count
    "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20",
}  # fmt: skip
_WORD_RE = re.compile(r"[a-z]+")
# Words that claim the shopper did something stronger than viewing; the evidence must show it.
_ACTION_CLAIMS = {
    "cart": re.compile(r"\bcart", re.IGNORECASE),
    "purchase": re.compile(r"\b(bought|buy|buying|purchas|order)", re.IGNORECASE),
    "search": re.compile(r"\bsearch", re.IGNORECASE),
    "favourite": re.compile(r"\b(saved|favou?rite|wish ?list)", re.IGNORECASE),
}
_LINK = re.compile(r"https?:|www\.|\.(?:com|net|org)\b", re.IGNORECASE)


def data_numbers(evidence: Sequence[Evidence]) -> set[str]:
    """Every number the evidence holds (counts, prices, price bands), as written forms."""
    found: set[str] = set()
    for e in evidence:
        values: list[Any] = [*e.counts.values(), e.price, e.text]
        for value in values:
            for n in NUMBER.findall(str(value)):
                found.add(n)
                if "." in n:
                    found.add(n.split(".")[0])  # "199.0" may be written "199"
                    found.add(f"{float(n):.2f}")
    return found


def check_sentence(text: str, evidence: Sequence[Evidence]) -> str:
    """The sentence cleaned to plain text, or ValueError saying what is wrong with it."""
    sentence = sentence_text(text, EXPLANATION_MAX_CHARS)
    if len(sentence.split()) < 3:
        raise ValueError(f"explanation too short: {sentence!r}")
    if _LINK.search(sentence):
        raise ValueError(f"explanation holds a link: {sentence!r}")
    if INSTRUCTION_LIKE.search(sentence):
        raise ValueError(f"explanation reads like an instruction: {sentence[:80]!r}")
    allowed = data_numbers(evidence)
    stated = NUMBER.findall(sentence)
    stated += [NUMBER_WORDS[w] for w in _WORD_RE.findall(sentence.casefold()) if w in NUMBER_WORDS]
    invented = [n for n in stated if n not in allowed and n.replace(",", ".") not in allowed]
    if invented:
        raise ValueError(f"explanation states numbers the data does not hold: {invented}")
    done = {a for e in evidence for a in e.counts}
    claimed = [a for a, pattern in _ACTION_CLAIMS.items() if pattern.search(sentence) and a not in done]
    if claimed:
        raise ValueError(f"explanation claims actions the data does not show: {claimed}")
    vocabulary = frozenset(stem(w) for e in evidence for w in words(e.text))
    if vocabulary and grounding(sentence, vocabulary) == 0.0:
        raise ValueError(f"explanation names nothing from its evidence: {sentence!r}")
    return sentence


_DID = {"view": "viewed {}", "click": "clicked {}", "favourite": "saved {}", "cart": "put {} in your cart",
        "purchase": "bought {}", "search": "searched for {}"}  # fmt: skip


def evidence_sentence(evidence: Sequence[Evidence]) -> str:
    """A plain sentence built from the evidence alone: the repair when the model's fails."""
    items = [e for e in evidence if e.kind != "signal" and not INSTRUCTION_LIKE.search(e.text)][:2]
    if not items:
        return "Chosen from your recent activity."
    parts = []
    for e in items:
        action = max(
            e.counts, key=lambda a: (a in ("purchase", "cart", "search"), e.counts[a]), default="view"
        )
        parts.append(_DID.get(action, "viewed {}").format(e.text))
    return sentence_text("You " + " and ".join(parts) + ".", EXPLANATION_MAX_CHARS)


# What a shopper did, in words; every ``Action`` has its phrase (a test checks the enum).
def did(e: Evidence) -> str:
    """What the shopper did with an item, in words: "viewed 3 times, put in the cart"."""
    done = []
    for action, n in sorted(e.counts.items(), key=lambda an: -ACTION_WEIGHT.get(an[0], 1.0)):
        verb = ACTION_DONE.get(action, ACTION_DONE[Action.VIEW])
        done.append(verb if n == 1 else f"{verb} {n} times")
    return ", ".join(done)


def told(e: Evidence) -> dict[str, Any]:
    """Evidence as the explainer sees it: the item, what was done with it, its price."""
    if e.kind == "signal":
        return {"signal": e.text}
    entry: dict[str, Any] = {"item": e.text, "did": did(e)}
    if e.price is not None:
        entry["price"] = e.price
    return entry


def explainer_data(tags: Sequence[Pooled], view: UserView, guide: StyleGuide) -> dict[str, Any]:
    return {
        "guide": guide.model_dump(),
        "tags": [
            {"id": f"t{n + 1}", "tag": p.tag,
             "evidence": [told(e) for e in view.pick(p.evidence)]}
            for n, p in enumerate(tags)
        ],
    }  # fmt: skip


class Explainer:
    """The style-guide agent and the explanation writer."""

    def __init__(self, llm: LLM, max_tags: int, retries: int = 2) -> None:
        self.llm = llm
        self.guide_stage = replace(guide_stage(), retries=retries)
        self.explain_stage = replace(explain_stage(max_tags), retries=retries)

    async def guide(self, tags: Sequence[Pooled], view: UserView, cost: PlanCost) -> StyleGuide:
        data: dict[str, Any] = {"tags": [p.tag for p in tags], "profile": view.profile()}
        if view.signals:
            data["signals"] = [s.text for s in view.signals]
        moment_facts = frozenset(
            stem(w) for w in words(" ".join([season(view.moment), *data.get("signals", [])]))
        )

        def parse(text: str) -> StyleGuide:
            guide = parse_model(StyleGuide, text)
            if grounding(guide.moment, moment_facts) < 0.5:  # a moment the data does not show
                guide = guide.model_copy(update={"moment": season(view.moment)})
            return guide

        try:
            return await ask(self.llm, self.guide_stage, data_block(data), parse, cost, view.user_id)
        except StageFailed as exc:
            cost.repairs.append(f"style_guide: default guide ({exc})")
            return StyleGuide(
                tone="concise", moment=season(view.moment), focus="Point at the items behind each tag."
            )

    async def explain(self, tags: Sequence[Pooled], view: UserView, cost: PlanCost) -> list[Explained]:
        """One checked sentence per tag, in the tags' order."""
        guide = await self.guide(tags, view, cost)
        evidence = {f"t{n + 1}": view.pick(p.evidence) for n, p in enumerate(tags)}
        written: dict[str, str] = {}

        def parse(text: str) -> dict[str, str]:
            answer = parse_model(_Explanations, text)
            problems = []
            for item in answer.explanations:
                if item.id in evidence and item.id not in written:
                    try:
                        written[item.id] = check_sentence(item.text, evidence[item.id])
                    except ValueError as exc:
                        problems.append(f"{item.id}: {exc}")
            if len(written) < len(tags):
                raise ValueError("; ".join(problems) or "explanations missing for some tags")
            return written

        data = data_block(explainer_data(tags, view, guide))
        try:
            await ask(self.llm, self.explain_stage, data, parse, cost, view.user_id)
        except StageFailed as exc:
            cost.repairs.append(
                f"explainer: {len(tags) - len(written)} sentence(s) built from evidence ({exc})"
            )
        return [
            Explained(p.tag, written.get(tid) or evidence_sentence(evidence[tid]), p.evidence)
            for tid, p in zip(evidence, tags, strict=True)
        ]
