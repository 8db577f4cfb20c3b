"""What the agents know of one user, as numbered pieces of evidence.

Every agent cites evidence by id ("r2": a recent item, "h1": an earlier interest, "s1": an
environment signal), so a tag can be traced to the behaviour or signal behind it, an expert
can be shown only its facet's evidence, and grounding is checked in code rather than trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from intentstream.schemas.events import ACTION_WEIGHT, Action
from intentstream.schemas.record import ReplanRequest
from intentstream.stream.plancache import interest_key

EvidenceKind = Literal["recent", "earlier", "signal"]


_WORD = re.compile(r"[^\W_]+")
# Words that say nothing about what a shopper wants; never count as grounding.
STOPWORDS = frozenset(
    {
        "a", "an", "and", "the", "of", "for", "to", "in", "on", "with", "by", "at", "from", "or",
        "your", "you", "my", "our", "their", "new", "set", "pack", "products", "product", "items",
        "item", "things", "stuff", "shopping", "interest", "interests", "related", "other",
        # two-letter words that name nothing (two-letter brands and types do: "lg", "hp", "tv")
        "is", "it", "as", "be", "we", "us", "me", "no", "so", "up", "if", "do", "go", "he", "am",
        "ll", "re", "ve",
    }
)  # fmt: skip


def words(text: str) -> list[str]:
    """Lower-case content words (letters and digits, length 2 or more, no stopwords)."""
    return [w for w in _WORD.findall(text.casefold()) if len(w) >= 2 and w not in STOPWORDS]


def weighed(counts: dict[str, int]) -> float:
    """How strongly counts by action show an interest (an unknown action counts as a view)."""
    return sum(ACTION_WEIGHT.get(a, ACTION_WEIGHT[Action.VIEW]) * n for a, n in counts.items())


def stem(word: str) -> str:
    # "rain"/"rainy", "shoe"/"shoes", "kitchen"/"kitchenware": a 4-letter prefix is enough
    # for grounding and never needs a language-specific stemmer.
    return word[:4] if len(word) > 4 else word


def term(word: str) -> str:
    """A word as the entity checks compare it: a plural's final "s" dropped ("phones" is
    "phone"). Whole words, unlike ``stem``: "viewed" must not name the brand "viewsonic"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def terms(text: str) -> frozenset[str]:
    """The content words of ``text`` as ``term``s."""
    return frozenset(term(w) for w in words(text))


@dataclass(frozen=True, slots=True)
class Evidence:
    """One recent item, earlier interest or signal, with how strongly it shows an interest."""

    id: str
    kind: EvidenceKind
    text: str
    counts: dict[str, int]
    price: float | str | None = None
    weight: float = 0.0
    kinds: str | None = None  # what kind of item, where its text does not say: "comedy, romance"
    category: str | None = None  # the category path, for grouping (never shown to the agents)

    @property
    def described(self) -> str:
        """Every word that describes the item: its text and its kinds."""
        return f"{self.text} {self.kinds}" if self.kinds else self.text

    def as_data(self) -> dict[str, Any]:
        """The evidence as the agents see it, inside the data block (keyed by its id there)."""
        entry: dict[str, Any] = {"item" if self.kind != "signal" else "signal": self.text}
        if self.kinds:
            entry["kind"] = self.kinds
        entry.update(self.counts)
        if self.price is not None:
            entry["price"] = self.price
        return entry


@dataclass(frozen=True, slots=True)
class UserView:
    """One user at one moment, for the agents: evidence, region, action counts and time."""

    user_id: str
    evidence: tuple[Evidence, ...]
    region: str | None
    counts: dict[str, int]
    moment: datetime

    def pick(self, ids: Iterable[str]) -> list[Evidence]:
        """The evidence with these ids, in the view's order; unknown ids are ignored."""
        wanted = set(ids)
        return [e for e in self.evidence if e.id in wanted]

    @property
    def signals(self) -> list[Evidence]:
        return [e for e in self.evidence if e.kind == "signal"]

    def vocabulary(self, ids: Iterable[str] | None = None) -> frozenset[str]:
        """Stems of every content word in the evidence (or in the evidence with ``ids``)."""
        chosen = self.evidence if ids is None else self.pick(ids)
        return frozenset(stem(w) for e in chosen for w in words(e.described))

    def items(self, ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Evidence keyed by id, as a data block shows it (a key costs fewer tokens than an
        "id" field on every item)."""
        chosen = self.evidence if ids is None else self.pick(ids)
        return {e.id: e.as_data() for e in chosen}

    def profile(self, with_season: bool = True) -> dict[str, Any]:
        """The profile facts every agent may rely on."""
        facts: dict[str, Any] = {"actions": self.counts}
        if with_season:
            facts["season"] = season(self.moment)
        if self.region:
            facts["region"] = self.region
        return facts


def grounding(text: str, vocabulary: frozenset[str]) -> float:
    """Share of the content words of ``text`` that appear (by stem) in ``vocabulary``."""
    content = words(text)
    if not content:
        return 0.0
    return sum(stem(w) in vocabulary for w in content) / len(content)


def holding(tag: str, evidence: Iterable[Evidence]) -> list[Evidence]:
    """The evidence whose own words hold every content word of ``tag`` (by stem): the items a
    tag names at the level of entities. "apple smartphone" is held by "apple smartphone",
    not by "samsung smartphone"; "smartphones" by both."""
    mine = {stem(w) for w in words(tag)}
    if not mine:
        return []
    return [e for e in evidence if mine <= {stem(w) for w in words(e.described)}]


KIND_SHARED_WORDS = 2  # uncategorised items sharing this many content words are one kind


def kinds_in(evidence: Sequence[Evidence]) -> list[list[Evidence]]:
    """Described ``evidence`` grouped into kinds of item: by category path; an item without
    one with every uncategorised item sharing ``KIND_SHARED_WORDS`` content words (numbers
    aside), transitively ("white skull hot water bottle", "grey heart hot water bottle").
    Each group heaviest first, by what was done with its items."""
    items = [e for e in evidence if e.kind != "signal" and interest_key(e.text)]
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = i = parent[parent[i]]
        return i

    first_of: dict[str, int] = {}
    loose: list[tuple[int, frozenset[str]]] = []
    for i, e in enumerate(items):
        if e.category:
            parent[i] = root(first_of.setdefault(e.category, i))
            continue
        mine = frozenset(term(w) for w in words(e.text) if not w.isdigit())
        for j, theirs in loose:
            if len(mine & theirs) >= KIND_SHARED_WORDS:
                parent[root(i)] = root(j)
        loose.append((i, mine))
    groups: dict[int, list[Evidence]] = {}
    for i, e in enumerate(items):
        groups.setdefault(root(i), []).append(e)
    return [sorted(g, key=lambda e: -weighed(e.counts)) for g in groups.values()]


def heaviest(view: UserView) -> list[Evidence]:
    """The evidence of the user's heaviest interest, heaviest item first: the kind of item
    (``kinds_in``) weighed by what was done with its items and how often, not by how recently
    (a fresh one-off view must not outweigh what the shopper does most)."""
    kinds = weighty(view)
    return kinds[0] if kinds else []


WEIGHTY_SHARE = 0.25  # a kind weighing this share of the heaviest kind's weight has real weight


def weighty(view: UserView, share: float = WEIGHTY_SHARE) -> list[list[Evidence]]:
    """The user's interests with real weight: the kinds of item (``kinds_in``) weighing at
    least ``share`` of the heaviest, heaviest first (ties in the order of the evidence, most
    recent first), each heaviest item first."""
    weighed_kinds = [(sum(weighed(e.counts) for e in g), g) for g in kinds_in(view.evidence)]
    if not weighed_kinds:
        return []
    top = max(w for w, _ in weighed_kinds)
    return [g for w, g in sorted(weighed_kinds, key=lambda wg: -wg[0]) if w >= share * top]


KINDS_MAX_WORDS = 4


def kinds_of(text: str, category: str | None) -> str | None:
    """The words of an item's category path its text does not say, when the text says none
    of them: a titled work's genres ("comedy, romance"), not a typed product's path
    ("electronics.smartphone" for "samsung smartphone" adds nothing worth its tokens)."""
    if not category:
        return None
    path = [w for w in words(category.replace(".", " ").replace("|", " ")) if w not in ("movie", "movies")]
    said = {stem(w) for w in words(text)}
    if not path or any(stem(w) in said for w in path):
        return None
    return ", ".join(dict.fromkeys(path[-KINDS_MAX_WORDS:]))


SEASONS = ("winter", "spring", "summer", "autumn")


def season(moment: datetime) -> str:
    """Meteorological season, northern hemisphere (both shared logs are European stores)."""
    return SEASONS[(moment.month % 12) // 3]


def user_view(request: ReplanRequest, now: datetime) -> UserView:
    """Number the request's recent items (repeats folded, newest first), earlier interests
    and signals. Items without any description are left out: small models invent things
    about them."""
    recent: dict[str, dict[str, int]] = {}
    prices: dict[str, float] = {}
    kinds: dict[str, str | None] = {}
    categories: dict[str, str | None] = {}
    for b in request.recent:
        if not b.text:
            continue
        kinds[b.text] = kinds_of(b.text, b.category)
        categories[b.text] = b.category
        counts = recent.pop(b.text, {})
        counts[b.action.value] = counts.get(b.action.value, 0) + 1
        recent[b.text] = counts  # re-inserted: most recent last
        if b.price is not None:
            prices[b.text] = round(b.price, 2)
    evidence: list[Evidence] = []
    for rank, (text, counts) in enumerate(reversed(recent.items())):
        weight = weighed(counts) * 0.9**rank
        evidence.append(
            Evidence(
                f"r{rank + 1}",
                "recent",
                text,
                counts,
                prices.get(text),
                weight,
                kinds.get(text),
                categories.get(text),
            )
        )
    for rank, interest in enumerate(request.interests):
        price: float | str | None = None
        if interest.price_low is not None and interest.price_high is not None:
            low, high = round(interest.price_low), round(interest.price_high)
            price = low if low == high else f"{low}-{high}"
        weight = weighed(interest.counts) * 0.5 * 0.9**rank
        evidence.append(
            Evidence(
                f"h{rank + 1}", "earlier", interest.text, dict(interest.counts), price, weight,
                kinds_of(interest.text, interest.category), interest.category,
            )
        )  # fmt: skip
    for rank, signal in enumerate(request.signals):
        evidence.append(Evidence(f"s{rank + 1}", "signal", f"{signal.kind}: {signal.text}", {}, None, 1.0))
    return UserView(request.user_id, tuple(evidence), request.region, dict(request.counts), now)
