"""The agents' side of the shared plan cache (``stream.plancache``): what a plan adds to it,
its explanations made into templates, and the checks a cached tag and its filled sentence
pass before a record carries them: the same checks the explainer puts the LLM's own
sentences through."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from intentstream.agents.evidence import SEASONS, Evidence, season
from intentstream.agents.explainer import NUMBER, NUMBER_WORDS, check_sentence
from intentstream.agents.prompts import INSTRUCTION_LIKE
from intentstream.schemas.events import ACTION_WEIGHT
from intentstream.stream.live import Facet
from intentstream.stream.plancache import CachedTag, facet_price, interest_key, price_text

_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


class ExplainerVet:
    """A cached tag is shown only if it reads like no instruction (our plans never hold one:
    such an entry was written by someone else); a filled sentence only if the explainer's
    ``check_sentence`` passes it against this user's facet (numbers the data holds, actions
    the user did, grounded in the item, no instruction, no link, no season but the record's)."""

    def tag(self, tag: str) -> bool:
        return not INSTRUCTION_LIKE.search(tag)

    def sentence(self, text: str, facet: Facet, now: datetime) -> str | None:
        evidence = Evidence("c1", "recent", facet.text, dict(facet.counts), facet_price(facet))
        # Written for another user, maybe in another season: "this autumn" in January is
        # false. The season is the record's, as the explainer's is its plan's.
        try:
            return check_sentence(text, [evidence], frozenset(SEASONS) - {season(now)})
        except ValueError:
            return None


def template_of(explanation: str, cite: Evidence) -> str | None:
    """The explanation with the personal facts of ``cite`` as slots, or None when it states
    a number that is none of the item's facts (it could not be said of another user)."""
    if "{" in explanation or "}" in explanation:
        return None
    text = (
        re.sub(re.escape(cite.text), "{item}", explanation, flags=re.IGNORECASE) if cite.text else explanation
    )
    slots: dict[str, str] = {}
    for action, n in sorted(cite.counts.items(), key=lambda an: -ACTION_WEIGHT.get(an[0], 1.0)):
        slots.setdefault(str(n), f"{{count:{action}}}")
    if isinstance(cite.price, int | float):
        for form in (str(cite.price), price_text(float(cite.price)), f"{float(cite.price):.2f}"):
            slots.setdefault(form, "{price}")
    unknown: list[str] = []

    def swap(match: re.Match[str]) -> str:
        value = NUMBER_WORDS.get(match.group(0).casefold(), match.group(0))
        slot = slots.get(value)
        if slot is None:
            unknown.append(value)
            return match.group(0)
        return slot

    if isinstance(cite.price, str):  # a band, "120-310": the band is one fact
        text = text.replace(cite.price, "{price}")
    text = NUMBER.sub(swap, _NUMBER_WORD.sub(swap, text))
    return None if unknown else text


def entries(
    tags: Sequence[tuple[str, str | None, Sequence[Evidence]]], *, model: str, now: datetime
) -> list[CachedTag]:
    """What a plan adds to the cache, from its tags (tag, explanation or None when not
    explained, cited evidence): each under the key of its heaviest cited item, the strongest
    tag first for a key. Tags that cite a signal are situational (rain: umbrellas) and are
    not kept."""
    kept: dict[str, CachedTag] = {}
    for tag, explanation, cited in tags:
        if not cited or any(e.kind == "signal" for e in cited):
            continue
        cite = max(cited, key=lambda e: e.weight)
        key = interest_key(cite.text)
        if not key or key in kept:
            continue
        template = template_of(explanation, cite) if explanation is not None else None
        kept[key] = CachedTag(key=key, tag=tag, template=template, cite=cite.text, model=model, made_at=now)
    return list(kept.values())
