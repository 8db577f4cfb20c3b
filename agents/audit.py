"""The fact audit: every written tag and explanation checked against the user's *raw* events,
independently of generation. It never sees the compressed view the agents read, the evidence
they cited or the judge's links; it groups the events by item description itself
(``interests``) and checks:

- **tag grounded**: every content word of the tag is a word of one of the user's item
  descriptions (the item's text, category path or brand). "moulinex watch" for a shopper who never saw a
  watch is not; "smartphone" for one who viewed Apple and Samsung smartphones is.
- **explanation factual**: every number it states is a count, price or price band of the
  tag's own interests; every action it claims ("bought", "cart", "searched") was done on
  them; it names no item word of the user's *other* interests, no known brand or category
  outside the tag's interests ("the Samsung smartphone" explaining an Apple tag is false).
- **heaviest interest covered**: some tag covers the interest the events weigh most, and
  ``coverage``: the share of interests with real weight (up to the record's tag limit) that a
  tag covers. An interest here is a *kind* of item (``kinds``): the items of one category
  path, or, in a log without categories, item descriptions sharing two content words ("white
  skull hot water bottle" and "grey heart hot water bottle"). A tag covers a kind when it
  holds all its words in one of the kind's items. One description alone (a product title,
  bought as often as four others) is an item, not an interest; its figure is kept beside
  (``heaviest_item_covered``).
- **interest or item name** (given the whole log's items, ``LogItems``): how many items of
  the log hold every word of the tag. A tag only one item holds is that item's name, not an
  interest a feed can retrieve many items for.

The checks are written here on purpose, not imported from the explainer or the judge: an
audit that shared their code would share their blind spots.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from intentstream.schemas.events import ACTION_WEIGHT, Action, BehaviorEvent

REAL_WEIGHT_SHARE = 0.25  # an interest weighing this share of the heaviest one has real weight
KIND_SHARED_WORDS = 2  # uncategorised descriptions sharing this many content words are one kind

_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_NUMBER_WORDS = {
    "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twice": "2", "dozen": "12",
}  # fmt: skip
# Words that say nothing about what an item is: they never make or break a fact.
_FILLER = frozenset(
    {
        "the", "and", "for", "you", "your", "with", "this", "that", "these", "those", "from", "have",
        "has", "had", "are", "was", "were", "its", "their", "our", "new", "set", "pack", "item",
        "items", "product", "products", "things", "stuff", "interest", "interests", "related",
        "other", "times", "time", "once", "more", "some", "recently", "again", "just", "all",
        # two-letter words that name nothing (two-letter brands and types do: "lg", "hp", "tv")
        "of", "to", "in", "on", "by", "at", "or", "an", "is", "it", "as", "be", "we", "us", "me",
        "my", "no", "so", "up", "if", "do", "go", "he", "am", "ll", "re", "ve",
    }
)  # fmt: skip
_CLAIMS = {
    Action.PURCHASE: re.compile(r"\b(bought|buy|buying|purchas\w*|order\w*)\b", re.IGNORECASE),
    Action.CART: re.compile(r"\bcart", re.IGNORECASE),
    Action.SEARCH: re.compile(r"\bsearch", re.IGNORECASE),
    Action.FAVOURITE: re.compile(r"\b(saved|favou?rite\w*|wish ?list)", re.IGNORECASE),
}


def stems(text: str) -> set[str]:
    """Content words of ``text`` by 4-letter prefix ("shoes"/"shoe", "kitchenware"/"kitchen")."""
    return {w[:4] if len(w) > 4 else w for w in _WORD.findall(text.casefold()) if len(w) >= 2} - {
        w[:4] if len(w) > 4 else w for w in _FILLER
    }


def names(text: str) -> set[str]:
    """Whole content words of ``text``, a plural's final "s" dropped: what the entity checks
    compare ("viewed" must not match the brand "viewsonic", as a 4-letter stem would)."""
    found = {w for w in _WORD.findall(text.casefold()) if len(w) >= 2 and w not in _FILLER}
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in found}


def _described(event: BehaviorEvent) -> str:
    parts = [event.item_text, event.brand, event.query, (event.category or "").replace(".", " ")]
    return " ".join(p for p in parts if p).replace("_", " ")


def event_words(event: BehaviorEvent) -> set[str]:
    """The stems of everything that describes the event's item: text, category path, brand
    (and the query of a search)."""
    return stems(_described(event))


@dataclass
class AuditInterest:
    """The events of one item description, weighed by what was done with them."""

    key: str
    weight: float = 0.0
    words: set[str] = field(default_factory=set)  # stems, for grounding
    names: set[str] = field(default_factory=set)  # whole words, for the entity checks
    events: list[BehaviorEvent] = field(default_factory=list)


def interests(events: Iterable[BehaviorEvent]) -> list[AuditInterest]:
    """The user's interests, heaviest first (ties: the most recently touched first): one per
    item description (lower case, words only), weighed by the actions' weights."""
    groups: dict[str, AuditInterest] = {}
    order: dict[str, int] = {}
    for n, e in enumerate(events):
        text = e.item_text or e.query
        if not text:
            continue
        key = " ".join(_WORD.findall(text.casefold()))
        group = groups.setdefault(key, AuditInterest(key))
        group.weight += ACTION_WEIGHT[e.action.value]
        group.words |= event_words(e)
        group.names |= names(_described(e))
        group.events.append(e)
        order[key] = n
    return sorted(groups.values(), key=lambda g: (-g.weight, -order[g.key]))


@dataclass(frozen=True, slots=True)
class AuditKind:
    """Descriptions of one kind of item (``kinds``), heaviest first."""

    members: tuple[AuditInterest, ...]

    @property
    def weight(self) -> float:
        return sum(g.weight for g in self.members)

    @property
    def key(self) -> str:
        return self.members[0].key


def kinds(user: Sequence[AuditInterest]) -> list[AuditKind]:
    """``user``'s descriptions grouped into kinds of item, heaviest first: by the category
    path their events show most; without one, with every description sharing
    ``KIND_SHARED_WORDS`` content words (numbers aside), transitively."""
    parent = list(range(len(user)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = i = parent[parent[i]]
        return i

    first_of: dict[str, int] = {}
    uncategorised: list[tuple[int, set[str]]] = []
    for i, g in enumerate(user):
        paths = Counter(e.category for e in g.events if e.category)
        if paths:
            parent[i] = root(first_of.setdefault(paths.most_common(1)[0][0], i))
            continue
        mine = {w for w in g.names if not w.isdigit()}
        for j, theirs in uncategorised:
            if len(mine & theirs) >= KIND_SHARED_WORDS:
                parent[root(i)] = root(j)
        uncategorised.append((i, mine))
    groups: dict[int, list[AuditInterest]] = {}
    for i, g in enumerate(user):
        groups.setdefault(root(i), []).append(g)
    found = [AuditKind(tuple(sorted(m, key=lambda g: -g.weight))) for m in groups.values()]
    # Stable: ties keep the order of their heaviest member (most recently touched first).
    return sorted(found, key=lambda k: -k.weight)


def covers(tag: str, interest: AuditInterest) -> bool:
    """Whether every content word of ``tag`` is a word of ``interest``."""
    mine = stems(tag)
    return bool(mine) and mine <= interest.words


def _numbers(text: str) -> list[str]:
    found = _NUMBER.findall(text)
    found += [_NUMBER_WORDS[w] for w in _WORD.findall(text.casefold()) if w in _NUMBER_WORDS]
    return [n.replace(",", ".") for n in found]


def _number_forms(value: float) -> set[str]:
    forms = {f"{value:.2f}", f"{value:.1f}", str(round(value)), f"{value:g}"}
    return forms | {f.rstrip("0").rstrip(".") for f in forms if "." in f}


def true_numbers(chosen: Sequence[AuditInterest]) -> set[str]:
    """Every number that is a fact of ``chosen``: counts per action of each interest and of
    all together, how many interests, prices and price bands, numbers in item texts."""
    found: set[str] = {str(len(chosen))}
    totals: dict[str, int] = {}
    prices: list[float] = []
    for g in chosen:
        counts: dict[str, int] = {}
        for e in g.events:
            counts[e.action.value] = counts.get(e.action.value, 0) + 1
            if e.price is not None:
                prices.append(e.price)
                found |= _number_forms(e.price)
        for action, n in counts.items():
            found.add(str(n))
            totals[action] = totals.get(action, 0) + n
        found.add(str(len(g.events)))
        found |= set(_numbers(g.key))
    found |= {str(n) for n in totals.values()}
    found.add(str(sum(totals.values())))
    if prices:
        found |= _number_forms(min(prices)) | _number_forms(max(prices))
    return found


class LogItems:
    """Every item of a whole log by the stems of its description (text, category path,
    brand): how many items a tag could stand for. An interest is what many items satisfy
    ("hot water bottle"); a tag only one item of the log holds every word of is that item's
    name ("white skull hot water bottle"), however true."""

    def __init__(self, events: Iterable[BehaviorEvent]) -> None:
        self._by_stem: dict[str, set[str]] = {}
        for e in events:
            if e.item_text:
                item = e.item_id or e.item_text
                for w in event_words(e):
                    self._by_stem.setdefault(w, set()).add(item)

    def satisfying(self, tag: str) -> int:
        """How many of the log's items hold every content word of ``tag``."""
        found: set[str] | None = None
        for w in sorted(stems(tag), key=lambda w: len(self._by_stem.get(w, ()))):
            found = set(self._by_stem.get(w, ())) if found is None else found & self._by_stem.get(w, set())
            if not found:
                return 0
        return len(found) if found is not None else 0


@dataclass(frozen=True, slots=True)
class TagAudit:
    """One written tag's verdict."""

    tag: str
    grounded: bool
    factual: bool
    problems: tuple[str, ...]
    covered: tuple[str, ...]  # keys of the interests the tag covers
    items_satisfying: int | None = None  # of the whole log's items (``LogItems``), when given


@dataclass(frozen=True, slots=True)
class PlanAudit:
    """One user's written tags against their raw events."""

    tags: tuple[TagAudit, ...]
    heaviest: str | None  # the heaviest kind's heaviest description
    heaviest_covered: bool  # a tag covers the heaviest kind (or one tied with it)
    with_weight: int  # kinds with real weight, up to the tag limit
    covered_with_weight: int
    heaviest_item_covered: bool = False  # a tag covers the heaviest single description

    @property
    def coverage(self) -> float:
        return self.covered_with_weight / self.with_weight if self.with_weight else 1.0

    @property
    def passed(self) -> bool:
        """Every tag grounded and every explanation factual."""
        return all(t.grounded and t.factual for t in self.tags)


def audit_tag(
    tag: str,
    explanation: str,
    user: Sequence[AuditInterest],
    known: frozenset[str] = frozenset(),
    moment: str = "",
) -> TagAudit:
    """Audit one tag and its explanation against the user's interests. ``known``: entity
    words (``names``) of the whole log (brands, category words): one outside the tag's
    interests is a false fact even when the user never saw it. ``moment``: words of the
    season and signals in force, which an explanation may name."""
    problems: list[str] = []
    covered = [g for g in user if covers(tag, g)]
    if not covered:
        missing = stems(tag) - set().union(*(g.words for g in user)) if user else stems(tag)
        problems.append(
            f"tag {tag!r}: no interest holds all its words"
            + (f" ({sorted(missing)} in none)" if missing else "")
        )
    # An ungrounded tag's explanation is audited against the interests sharing a word with it.
    mine = covered or [g for g in user if stems(tag) & g.words]
    mine_names = set().union(*(g.names for g in mine)) if mine else set()
    allowed = true_numbers(mine)
    false_numbers = [n for n in _numbers(explanation) if n not in allowed]
    if false_numbers:
        problems.append(f"states {false_numbers}, no count or price of the tag's items")
    done = {e.action for g in mine for e in g.events}
    claimed = [a.value for a, pattern in _CLAIMS.items() if pattern.search(explanation) and a not in done]
    if claimed:
        problems.append(f"claims {claimed}, not done on the tag's items")
    chosen = {id(g) for g in mine}
    others = set().union(*(g.names for g in user if id(g) not in chosen)) if user else set()
    foreign = (names(explanation) & (others | known)) - mine_names - names(tag) - names(moment)
    if foreign:
        problems.append(f"names {sorted(foreign)}, which the tag's items do not show")
    factual = not any(p.startswith(("states", "claims", "names")) for p in problems)
    return TagAudit(tag, bool(covered), factual, tuple(problems), tuple(g.key for g in covered))


def audit_plan(
    tags: Sequence[tuple[str, str]],
    events: Sequence[BehaviorEvent],
    *,
    max_tags: int,
    known: frozenset[str] = frozenset(),
    moment: str = "",
    log_items: LogItems | None = None,
) -> PlanAudit:
    """Audit the written ``(tag, explanation)`` pairs of one user against ``events``, the raw
    behaviour the plan was made from; with ``log_items``, how many items of the log each tag
    could stand for (``TagAudit.items_satisfying``)."""
    user = interests(events)
    audited = tuple(audit_tag(t, x, user, known, moment) for t, x in tags)
    if log_items is not None:
        audited = tuple(replace(a, items_satisfying=log_items.satisfying(a.tag)) for a in audited)
    covered = {key for a in audited for key in a.covered}
    grouped = kinds(user)
    top = grouped[0].weight if grouped else 0.0
    top_item = user[0].weight if user else 0.0

    def hit(kind: AuditKind) -> bool:
        return any(g.key in covered for g in kind.members)

    # Ties at the top weigh the same: covering any of them covers the heaviest interest.
    weighty = [k for k in grouped if k.weight >= REAL_WEIGHT_SHARE * top][:max_tags]
    return PlanAudit(
        audited,
        grouped[0].key if grouped else None,
        any(hit(k) for k in grouped if k.weight == top),
        len(weighty),
        sum(hit(k) for k in weighty),
        any(g.key in covered for g in user if g.weight == top_item),
    )


def entity_words(events: Iterable[BehaviorEvent]) -> frozenset[str]:
    """The brands and category-path words of a whole log (``names``): the words that name
    what an item *is* (a title-only log has none; its users' own items still count)."""
    found: set[str] = set()
    for e in events:
        if e.brand:
            found |= names(e.brand)
        if e.category:
            found |= names(e.category.replace(".", " ").replace("_", " "))
    return frozenset(found)
