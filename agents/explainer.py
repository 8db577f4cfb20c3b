"""Explanations by meta-prompting: first a style guide written for this user, these tags and
this moment (season, weather, holidays), then one sentence per tag written under that guide
(the writer's worked example is the one of the guide's tone).

Facts are filled by code. The model writes the phrasing around two slots: ``{did}`` (what
the shopper did with the tag's items, how often: built by code from the tag's own evidence)
and ``{price}`` (its price or price band). Guided decoding makes every sentence hold
``{did}``. The phrasing is then checked in code: no number of its own, no action the
evidence does not show, no repeat of the item ``{did}`` names, no word naming the user's
*other* items or the prompts' example products, no markup, link or instruction. A sentence
that fails is asked for again; after the retries it is built from the evidence alone (a
repair, counted).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from intentstream.agents.arbiter import Pooled
from intentstream.agents.evidence import (
    SEASONS,
    Evidence,
    UserView,
    grounding,
    season,
    stem,
    term,
    terms,
    words,
)
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
from intentstream.schemas.events import ACTION_WEIGHT, Action
from intentstream.schemas.record import EXPLANATION_MAX_CHARS, Wording
from intentstream.schemas.text import sentence_text
from intentstream.stream.plancache import interest_key

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


def _guide_answer(tone: str) -> dict[str, str]:
    return {"tone": tone, "moment": "a rainy autumn weekend", "focus": "The item and what they did."}


_EXPLAIN_TASK = """\
Your task: for each tag write one plain sentence (at most 20 words) in the guide's style \
telling the shopper why the tag was chosen. The store fills in the facts: write {did} for \
what the shopper did with the item, {price} for its price (only when given). Never write a \
number or an action yourself. No markup, no links.
"""


def _explain_example(tone: str) -> dict[str, Any]:
    return {
        "guide": {"tone": tone, "moment": "autumn", "focus": "The item and what they did."},
        "tags": [{"id": "t1", "tag": "nike sport shoes", "item": "nike sport shoes", "price": "{price}"}],
    }


# One worked example per tone. A small model copies its example: with one example for all,
# every guide was "practical" and every explanation ended alike ("…, worth a second look
# this winter"). So the style guide's example is of a tone chosen by the user (``tone_for``),
# and the writer is shown the worked sentence of the tone its guide chose. Each sentence is
# true of any item: it states no action, number or product of its own, and has few content
# words (one may happen to name another of the user's items). One tag only: a small model
# copies an example's sentences by position onto other tags.
EXPLAIN_ANSWERS = {
    "warm": "You {did}; more like it could brighten your autumn.",
    "practical": "You {did}, so similar ones are here for autumn.",
    "playful": "You {did}, and there is plenty more like it this autumn!",
    "concise": "Shown because you {did}.",
}
if set(EXPLAIN_ANSWERS) != set(TONES):
    raise ImportError("agents.explainer.EXPLAIN_ANSWERS must hold one sentence per tone")
# Products named in the agents' worked examples: a small model copies them into sentences.
EXAMPLE_WORDS = frozenset(
    {"nike", "garmin", "philips", "kettle", "watch", "shoe", "perfume", "luxury", "running", "lyon"}
)
# A sentence with one {did}, and {price} at most once after it: the model cannot skip the facts.
TEMPLATE_PATTERN = r"^[^{}]*\{did\}[^{}]*(\{price\}[^{}]*)?$"
SLOT = re.compile(r"\{(did|price)\}")
# The phrasing may not repeat an item's name ({did} says it): all its words, or all but one,
# when that is this many or more. Naming the interest ("more hot water bottles" after "the
# white skull hot water bottle") is what the sentence is for.
RESTATED_WORDS = 3


def tone_for(user_id: str) -> str:
    """The tone of the style guide's worked example for ``user_id``: stable per user, spread
    evenly over users."""
    return TONES[zlib.crc32(user_id.encode()) % len(TONES)]


def guide_stage(tone: str) -> Stage:
    """The style-guide writer, its worked example of ``tone``."""
    return Stage(
        name="style_guide",
        system=system_prompt(_GUIDE_TASK, _GUIDE_EXAMPLE, _guide_answer(tone)),
        schema=object_schema(
            tone={"type": "string", "enum": list(TONES)},
            moment=sentence_property(60),
            focus=sentence_property(120),
        ),
        max_tokens=80,
    )


def explain_stage(max_tags: int, tone: str) -> Stage:
    """The explanation writer for a guide of ``tone``: its worked example is that tone's."""
    answer = {"explanations": [{"id": "t1", "text": EXPLAIN_ANSWERS[tone]}]}
    return Stage(
        name="explainer",
        system=system_prompt(_EXPLAIN_TASK, _explain_example(tone), answer),
        schema=object_schema(
            explanations=array_of(
                object_schema(
                    id={"type": "string", "pattern": "^t[0-9]{1,2}$"},
                    text={**sentence_property(200), "pattern": TEMPLATE_PATTERN},
                ),
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
    wording: Wording = "llm"  # "code": the model's answers failed, the sentence is code's


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
_TIMES = re.compile(r"\b(\d+) times\b|\btwice\b", re.IGNORECASE)
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


def check_sentence(text: str, evidence: Sequence[Evidence], foreign: frozenset[str] = frozenset()) -> str:
    """The sentence cleaned to plain text, or ValueError saying what is wrong with it.
    ``foreign``: words (``term``s) that name things outside ``evidence`` (the user's other
    items, the prompts' example products); the sentence may not use them."""
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
    counts = {str(n) for e in evidence for n in e.counts.values()}
    times = [m.group(1) or "2" for m in _TIMES.finditer(sentence)]
    miscounted = [n for n in times if n not in counts]
    if miscounted:  # "5 times" must be a count, not a price that happens to be 5.49
        raise ValueError(f"explanation states counts the data does not hold: {miscounted}")
    done = {a for e in evidence for a in e.counts}
    claimed = [a for a, pattern in _ACTION_CLAIMS.items() if pattern.search(sentence) and a not in done]
    if claimed:
        raise ValueError(f"explanation claims actions the data does not show: {claimed}")
    vocabulary = frozenset(stem(w) for e in evidence for w in words(e.described))
    if vocabulary and grounding(sentence, vocabulary) == 0.0:
        raise ValueError(f"explanation names nothing from its evidence: {sentence!r}")
    own = frozenset(t for e in evidence for t in terms(e.described))
    named = sorted({w for w in words(sentence) if term(w) in foreign and term(w) not in own})
    if named:
        raise ValueError(f"explanation names {named}, which its evidence does not show")
    said = Counter(words(sentence))
    if said and said.most_common(1)[0][1] > 2:
        raise ValueError(f"explanation repeats itself: {sentence[:80]!r}")
    return sentence


def foreign_words(view: UserView, evidence: Sequence[Evidence]) -> frozenset[str]:
    """Words (``term``s) an explanation of ``evidence`` may not use: the words of the user's
    other items, of the prompts' example products and the seasons it is not ("a warm
    summer" in November), unless ``evidence`` holds them too."""
    own = frozenset(t for e in evidence for t in terms(e.described))
    others = frozenset(t for e in view.evidence if e.kind != "signal" for t in terms(e.described))
    seasons = set(SEASONS) - {season(view.moment)}
    return (others | {term(w) for w in EXAMPLE_WORDS | seasons}) - own


# What the shopper did with an item, as a phrase holding the item; every ``Action`` has one.
_DOING = {
    Action.VIEW: "viewed the {}", Action.CLICK: "clicked the {}", Action.FAVOURITE: "saved the {}",
    Action.CART: "put the {} in your cart", Action.PURCHASE: "bought the {}",
    Action.SEARCH: "searched for {}",
}  # fmt: skip
if _missing := set(Action) - set(_DOING):
    raise ImportError(f"agents.explainer._DOING has no phrase for {sorted(_missing)}")
DID_MAX_CHARS = 120


def _times(n: int) -> str:
    return {1: "", 2: " twice"}.get(n, f" {n} times")


def doing(e: Evidence, exact: bool = True) -> str:
    """What the shopper did with one item, as code says it: its strongest action and, when
    ``exact``, how often ("put the garmin watch in your cart twice"). An earlier interest is
    a cluster of older behaviour around the item: no count or action is true of the item
    itself, so only that they looked at such things."""
    if e.kind == "earlier":
        return f"looked at things like the {e.text}"
    action = max(e.counts, key=lambda a: (ACTION_WEIGHT.get(a, 1.0), e.counts[a]), default=Action.VIEW.value)
    try:
        phrase = _DOING[Action(action)]
    except ValueError:  # an action this version does not know reads as a view
        phrase = _DOING[Action.VIEW]
    return phrase.format(e.text) + (_times(e.counts.get(action, 1)) if exact else "")


def did_slot(evidence: Sequence[Evidence], earlier: Sequence[Evidence] = ()) -> str | None:
    """The ``{did}`` fact of a tag: what was done with its heaviest item (and its second,
    when both fit), or None when the tag has no described item. A recent item's count is
    stated only when no earlier interest shares a word with it (that cluster may hold some
    of its events): those of ``evidence`` and ``earlier``, the user's other earlier
    interests. The same item is said once."""
    items = sorted(
        (e for e in evidence if e.kind != "signal" and not INSTRUCTION_LIKE.search(e.text)),
        key=lambda e: -e.weight,
    )
    # Older behaviour is folded into clusters by similarity: one sharing a word with an item
    # may hold some of its events, so the recent count would be only part of the truth.
    clustered = {stem(w) for e in [*items, *earlier] if e.kind == "earlier" for w in words(e.text)}
    phrases: list[str] = []
    said: set[str] = set()
    for e in items:
        key = interest_key(e.text)
        if key in said:
            continue
        said.add(key)
        # The recent item rather than the cluster around it: what was done with it is known.
        told = next((r for r in items if r.kind == "recent" and interest_key(r.text) == key), e)
        phrase = doing(told, exact=not clustered & {stem(w) for w in words(told.text)})
        if phrases and len(phrases[0]) + len(phrase) + 5 > DID_MAX_CHARS:
            break
        phrases.append(phrase)
        if len(phrases) == 2:
            break
    return " and ".join(phrases) or None


def price_slot(evidence: Sequence[Evidence]) -> str | None:
    """The ``{price}`` fact of a tag: its heaviest recent priced item's price (an earlier
    interest's band spans other items too)."""
    priced = [e for e in evidence if e.kind == "recent" and e.price is not None]
    if not priced:
        return None
    price = max(priced, key=lambda e: e.weight).price
    return f"{price:g}" if isinstance(price, float | int) else str(price)


def fill(
    template: str, evidence: Sequence[Evidence], foreign: frozenset[str], earlier: Sequence[Evidence] = ()
) -> str:
    """The sentence from the model's ``template``: its slots filled by code from ``evidence``
    and the result checked (``check_sentence``). ValueError when the phrasing states a
    number, repeats an item's name (``RESTATED_WORDS``), names a foreign word,
    uses a slot without its fact or the sentence fails."""
    if "{did}" not in template:
        raise ValueError(f"sentence without the {{did}} slot: {template[:80]!r}")
    phrasing = SLOT.sub(" ", template)
    if NUMBER.search(phrasing) or any(w in NUMBER_WORDS for w in _WORD_RE.findall(phrasing.casefold())):
        raise ValueError(f"the phrasing states a number itself: {template[:80]!r}")
    phrased = terms(phrasing)
    restated = [
        said
        for named in (terms(e.text) for e in evidence)
        if len(said := named & phrased) >= max(RESTATED_WORDS, len(named) - 1)
    ]
    if restated:  # "You bought the jumbo bag suki, a look at the jumbo bag suki."
        raise ValueError(f"the phrasing names the item again ({sorted(restated[0])}); {{did}} says it")
    facts = {"did": did_slot(evidence, earlier), "price": price_slot(evidence)}
    missing = [name for name in SLOT.findall(template) if facts[name] is None]
    if missing:
        raise ValueError(f"slots with no fact for this tag: {missing}")
    text = SLOT.sub(lambda m: str(facts[m.group(1)]), template).strip()
    return check_sentence(text[:1].upper() + text[1:], evidence, foreign)


def evidence_sentence(evidence: Sequence[Evidence], earlier: Sequence[Evidence] = ()) -> str:
    """A plain sentence built from the evidence alone: the repair when the model's fails."""
    said = did_slot(evidence, earlier)
    if said is None:
        return "Chosen from your recent activity."
    return sentence_text(f"You {said}.", EXPLANATION_MAX_CHARS)


def explainer_data(tags: Sequence[Pooled], view: UserView, guide: StyleGuide) -> dict[str, Any]:
    """Each tag with its heaviest item, and the price slot where it has a price. The facts
    themselves are not shown: a small model shown "bought the hat 7 times" writes it again
    beside the slot that will say it."""
    shown = []
    for n, p in enumerate(tags):
        items = sorted((e for e in view.pick(p.evidence) if e.kind != "signal"), key=lambda e: -e.weight)
        entry: dict[str, Any] = {"id": f"t{n + 1}", "tag": p.tag, "item": items[0].text if items else p.tag}
        if price_slot(items) is not None:
            entry["price"] = "{price}"
        shown.append(entry)
    return {"guide": guide.model_dump(), "tags": shown}


class Explainer:
    """The style-guide agent and the explanation writer."""

    def __init__(self, llm: LLM, max_tags: int, retries: int = 2) -> None:
        self.llm = llm
        self.guide_stages = {tone: replace(guide_stage(tone), retries=retries) for tone in TONES}
        self.explain_stages = {
            tone: replace(explain_stage(max_tags, tone), retries=retries) for tone in TONES
        }

    async def guide(self, tags: Sequence[Pooled], view: UserView, cost: PlanCost) -> StyleGuide:
        data: dict[str, Any] = {"tags": [p.tag for p in tags], "profile": view.profile()}
        if view.signals:
            data["signals"] = [s.text for s in view.signals]
        moment_facts = frozenset(
            stem(w) for w in words(" ".join([season(view.moment), *data.get("signals", [])]))
        )

        def parse(text: str) -> StyleGuide:
            guide = parse_model(StyleGuide, text)
            # Every word of the moment from the season and signals: "winter weekend" on a
            # Tuesday is the example's "weekend", copied.
            if grounding(guide.moment, moment_facts) < 1.0:
                guide = guide.model_copy(update={"moment": season(view.moment)})
            return guide

        try:
            stage = self.guide_stages[tone_for(view.user_id)]
            return await ask(self.llm, stage, data_block(data), parse, cost, view.user_id)
        except StageFailed as exc:
            cost.repairs.append(f"style_guide: default guide ({exc})")
            return StyleGuide(
                tone="concise", moment=season(view.moment), focus="Point at the items behind each tag."
            )

    async def explain(self, tags: Sequence[Pooled], view: UserView, cost: PlanCost) -> list[Explained]:
        """One checked sentence per tag, in the tags' order."""
        guide = await self.guide(tags, view, cost)
        evidence = {f"t{n + 1}": view.pick(p.evidence) for n, p in enumerate(tags)}
        foreign = {tid: foreign_words(view, cited) for tid, cited in evidence.items()}
        earlier = [e for e in view.evidence if e.kind == "earlier"]
        written: dict[str, str] = {}

        def parse(text: str) -> dict[str, str]:
            answer = parse_model(_Explanations, text)
            problems = []
            for item in answer.explanations:
                if item.id in evidence and item.id not in written:
                    try:
                        written[item.id] = fill(item.text, evidence[item.id], foreign[item.id], earlier)
                    except ValueError as exc:
                        problems.append(f"{item.id}: {exc}")
            if len(written) < len(tags):
                raise ValueError("; ".join(problems) or "explanations missing for some tags")
            return written

        data = data_block(explainer_data(tags, view, guide))
        try:
            stage = self.explain_stages.get(guide.tone, self.explain_stages["concise"])
            await ask(self.llm, stage, data, parse, cost, view.user_id)
        except StageFailed as exc:
            cost.repairs.append(
                f"explainer: {len(tags) - len(written)} sentence(s) built from evidence ({exc})"
            )
        return [
            Explained(p.tag, written[tid], p.evidence)
            if tid in written
            else Explained(p.tag, evidence_sentence(evidence[tid], earlier), p.evidence, "code")
            for tid, p in zip(evidence, tags, strict=True)
        ]
