"""The decision arbiter: joint reasoning over the whole candidate pool.

In code (pure, tested): tags cleaned to plain text; candidates with a word that none of the
user's items holds dropped (ungrounded at the level of entities: "moulinex watch" for a
shopper who saw no watch), each kept one backed by the items that hold its words; ranked by
their relevance to the user's behaviour (attention of
each tag over the user's evidence in the FP8 entity pool, ``relevance``); near-duplicates
merged (embedding similarity, or one tag's words containing the other's). Then one LLM call
sees the pool and the profile together and decides which tags stay; the ranking stays the
pool's. If it gives no usable answer, the pool's ranking is used as it is (a repair, counted).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from intentstream.agents.embedding import TextEmbedder, similarity
from intentstream.agents.evidence import UserView, grounding, holding, terms, weighty, words
from intentstream.agents.experts import Candidate
from intentstream.agents.llm import LLM
from intentstream.agents.prompts import INSTRUCTION_LIKE, data_block, object_schema, system_prompt
from intentstream.agents.stage import PlanCost, Stage, StageFailed, ask
from intentstream.kernels.pool import BackendChoice
from intentstream.kernels.scorer import Scorer, padded_dim
from intentstream.schemas.record import TAG_MAX_CHARS
from intentstream.schemas.text import plain_text

# The arbiter is asked only about a pool of at least this many grounded candidates: with
# fewer, each is held by the user's items already and fits the record.
ARBITER_MIN_POOL = 3
MERGE_SIMILARITY = 0.72  # all-MiniLM-L6-v2 cosine; "running shoes" ~ "nike running shoes" is 0.90

_TASK = """\
Your task: you are the arbiter. Weigh all candidate tags (c ids) together and decide for each: \
keep it, or drop it when it is vague, repeats another, has little support (strength, grounded \
near 0) or does not fit the profile.
"""

# The weak candidate comes last, as in a real pool (ranked by relevance): a small model copies
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
    strength: float  # weight of the evidence the expert cited for it
    merged: tuple[str, ...] = ()  # tags folded into this one
    relevance: float = -math.inf  # the pool's ranking: see ``relevance``


def clean_tag(text: str) -> str | None:
    """The tag as plain text of 2 to 5 words, each in one writing system, or None.
    ("paper杯子" is a small model sliding into another script mid-word: no item's word, yet
    its first letters ground it.)"""
    if INSTRUCTION_LIKE.search(text):
        return None
    tag = plain_text(text, TAG_MAX_CHARS)
    if any(len(scripts(word)) > 1 for word in tag.split()):
        return None
    return tag if 2 <= len(tag.split()) <= 5 else None


_SCRIPT_FAMILY = {"HIRAGANA": "CJK", "KATAKANA": "CJK"}  # Japanese mixes these within a word


def scripts(word: str) -> set[str]:
    """The writing systems of the letters of ``word`` (LATIN, CYRILLIC, CJK, ...)."""
    found = set()
    for ch in word:
        if ch.isalpha():
            name = unicodedata.name(ch, "").split(" ", 1)[0]
            found.add(_SCRIPT_FAMILY.get(name, name))
    return found


def scorer_for(embedder: TextEmbedder, sharpness: float, backend: BackendChoice) -> Scorer:
    """The arbiter's scorer: the embedder's dimensions plus the evidence-weight channel."""
    return Scorer(padded_dim(embedder.dims + 1), sharpness=sharpness, backend=backend)


def relevance(tags: Sequence[str], view: UserView, embedder: TextEmbedder, scorer: Scorer) -> list[float]:
    """How strongly the user's behaviour supports each tag, whatever evidence an expert cited:
    attention of the tag over the user's described evidence in the entity pool,

        relevance(tag) = log sum_i w_i * exp(s * cos(tag, evidence_i))

    with w_i the evidence's weight and s the scorer's sharpness. The weight rides in one
    extra dimension of each entity (log(w_i) / s, against 1 in the query), so the score is
    the kernel's plain dot product. -inf for every tag when nothing is described."""
    items = [e for e in view.evidence if e.kind != "signal" and e.weight > 0]
    if not tags or not items:
        return [-math.inf] * len(tags)
    d = embedder.dims
    if scorer.dim < d + 1:
        raise ValueError(f"the arbiter's scorer has dim {scorer.dim}; {embedder.name} needs at least {d + 1}")
    rows = np.zeros((len(items), scorer.dim), np.float32)
    rows[:, :d] = embedder.embed([e.text.casefold() for e in items])
    rows[:, d] = [math.log(e.weight) / scorer.sharpness for e in items]
    queries = np.zeros((1, len(tags), scorer.dim), np.float32)
    queries[0, :, :d] = embedder.embed([t.casefold() for t in tags])
    queries[0, :, d] = 1.0
    key = f"arbiter\x1f{view.user_id}"  # one plan's entities, gone when it is scored
    try:
        scorer.add([key] * len(items), rows)
        return [float(r) for r in scorer.attend([key], queries).relevance[0]]
    finally:
        scorer.release([key])


INTEREST_MIN_ITEMS = 2  # items of the user a tag must stand for to be an interest, not a name


def as_interest(tag: Pooled, view: UserView) -> Pooled:
    """``tag`` as an interest when it is one item's name: a tag of 3 words or more that only
    one of the user's items holds ("jumbo storage bag suki") becomes its longest run of
    words that ``INTEREST_MIN_ITEMS`` of the user's items hold ("jumbo storage bag", also
    held by "jumbo storage bag skulls"), backed by those items. Every word stays the
    model's, in its order; a name no run of which another item shares is kept as it is (a
    one-off interest). RecGPT hands tags to retrieval: a name retrieves one item."""
    items = [e for e in view.evidence if e.kind != "signal"]
    tokens = tag.tag.split()
    if len(tokens) < 3 or len(holding(tag.tag, items)) >= INTEREST_MIN_ITEMS:
        return tag
    best: tuple[int, int, str, list[str]] | None = None
    for n in range(len(tokens) - 1, 1, -1):
        for start in range(len(tokens) - n + 1):
            run = " ".join(tokens[start : start + n])
            if sum(not w.isdigit() for w in words(run)) < 2:
                continue  # "3 tier", "set of": no interest of two words
            held = holding(run, items)
            if len(held) >= INTEREST_MIN_ITEMS and (best is None or (len(held), n) > best[:2]):
                best = (len(held), n, run, [e.id for e in held])
    if best is None:
        return tag
    weights = {e.id: e.weight for e in items}
    ids = tuple(sorted(best[3], key=lambda i: -weights[i]))
    signals = tuple(i for i in tag.evidence if i.startswith("s"))
    return replace(tag, tag=best[2], evidence=ids + signals, merged=(*tag.merged, tag.tag))


def as_interests(tags: Sequence[Pooled], view: UserView) -> list[Pooled]:
    """Each tag ``as_interest``; two that become the same interest are one (the first, with
    the evidence of both). The same interest is the same content words, whatever padding
    the 2-word minimum drew from the model ("lucente interest" is "lucente products"), as
    whole words, a plural's "s" aside ("cardigan holder" is not "card holder")."""
    out: dict[frozenset[str] | str, Pooled] = {}
    for t in tags:
        made = as_interest(t, view)
        key: frozenset[str] | str = terms(made.tag) or made.tag.casefold()
        if key in out:
            first = out[key]
            out[key] = replace(first, evidence=tuple(dict.fromkeys(first.evidence + made.evidence)))
        else:
            out[key] = made
    return list(out.values())


def pool_candidates(
    candidates: Sequence[Candidate],
    view: UserView,
    embedder: TextEmbedder,
    scorer: Scorer,
    merge_at: float = MERGE_SIMILARITY,
) -> list[Pooled]:
    """Clean, ground, rank (most relevant first) and merge the experts' candidates."""
    vocabulary = view.vocabulary()
    weights = {e.id: e.weight for e in view.evidence}
    items = [e for e in view.evidence if e.kind != "signal"]
    kept: list[Pooled] = []
    for c in candidates:
        tag = clean_tag(c.tag)
        if tag is None:
            continue
        held = {e.id for e in holding(tag, items)}
        if not held:
            continue  # some word of it is in none of the user's items: not their interest
        # The tag is backed by the items that hold its words, whatever the expert cited.
        cited = tuple(i for i in c.evidence if i in held or i.startswith("s"))
        evidence = cited if any(i in held for i in cited) else tuple(sorted(held, key=lambda i: -weights[i]))
        strength = sum(weights.get(i, 0.0) for i in evidence)
        share = grounding(tag, vocabulary)
        kept.append(Pooled("", tag, plain_text(c.rationale, 200), evidence, share, strength))
    if not kept:
        return []
    scored = relevance([p.tag for p in kept], view, embedder, scorer)
    kept = [replace(p, relevance=r) for p, r in zip(kept, scored, strict=True)]
    kept.sort(key=lambda p: p.relevance, reverse=True)
    sims = similarity(embedder, [p.tag.casefold() for p in kept])
    merged: list[int] = []  # indices into kept, most relevant first
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
        # A folded tag's items join only where they hold the head's words: "apple smartphone"
        # must not be explained by the Samsung one folded into it.
        held = {e.id for e in holding(head.tag, items)}
        evidence = tuple(
            dict.fromkeys([*head.evidence, *(e for o in others for e in o.evidence if e in held)])
        )
        strength = sum(weights.get(i, 0.0) for i in evidence)
        pool.append(
            Pooled(f"c{n + 1}", head.tag, head.rationale, evidence, head.grounded, strength,
                   tuple(o.tag for o in others), head.relevance)
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
    """The pool entries the arbiter kept, most relevant first. The model decides what stays;
    the ranking is the pool's (a 0.5B model orders candidates close to at random)."""
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

    def __init__(
        self, llm: LLM, embedder: TextEmbedder, max_tags: int, scorer: Scorer, retries: int = 2
    ) -> None:
        self.llm = llm
        self.embedder = embedder
        self.scorer = scorer
        self.max_tags = max_tags
        self.retries = retries

    async def decide(self, candidates: Sequence[Candidate], view: UserView, cost: PlanCost) -> list[Pooled]:
        """The final tags, strongest first; empty when no candidate is grounded."""
        pool = pool_candidates(candidates, view, self.embedder, self.scorer)
        if not pool:
            pool = evidence_pool(view, self.max_tags)
            cost.repairs.append(f"arbiter: no grounded candidate; {len(pool)} tag(s) taken from the evidence")
        if len(pool) <= ARBITER_MIN_POOL - 1:
            return pool  # too little to weigh against each other: no LLM call
        data = data_block(arbiter_data(pool, view))
        try:
            stage = replace(arbiter_stage(len(pool)), retries=self.retries)
            kept = await ask(
                self.llm,
                stage,
                data,
                lambda text: parse_decisions(text, pool, self.max_tags),
                cost,
                view.user_id,
            )
        except StageFailed as exc:
            cost.repairs.append(f"arbiter: the pool's ranking kept as it is ({exc})")
            kept = pool[: self.max_tags]
        return with_weighty(kept, pool, view, self.max_tags)


def with_weighty(kept: list[Pooled], pool: Sequence[Pooled], view: UserView, max_tags: int) -> list[Pooled]:
    """``kept``, with the pool's best tag put back for each interest with real weight
    (``weighty``, heaviest first, up to ``max_tags``) the arbiter dropped every tag of: a
    one-off view must not push out what the shopper does a good deal. It takes a free place,
    else the place of the last kept tag that backs no such interest; the heaviest interest,
    failing both, the last kept tag's. The ranking stays the pool's."""
    kinds = [{e.id for e in g} for g in weighty(view)[:max_tags]]
    by_id = {p.id: p for p in pool}
    chosen = [p.id for p in kept]

    def backs(tag_id: str, kind: set[str]) -> bool:
        return bool(kind & set(by_id[tag_id].evidence))

    for n, kind in enumerate(kinds):
        if any(backs(t, kind) for t in chosen):
            continue
        backing = next((p.id for p in pool if p.id not in chosen and backs(p.id, kind)), None)
        if backing is None:
            continue
        if len(chosen) >= max_tags:
            light = [t for t in chosen if not any(backs(t, k) for k in kinds)]
            if light:
                chosen.remove(light[-1])
            elif n == 0:
                chosen.pop()
            else:
                continue
        chosen.append(backing)
    return [p for p in pool if p.id in chosen]
