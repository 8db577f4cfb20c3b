"""Agent-as-a-judge: sub-judges per dimension, then a senior judge.

Sub-judges: relevance is an LLM agent (does each tag follow from what the shopper did?);
grounding, timeliness, diversity and safety/format are checks in code, because code judges
them exactly and for free. The senior judge (an LLM agent) reads the tags and every
sub-judge's findings, lists defects first and strengths second, and gives the verdict:
good, average or bad. Hard floors it cannot talk its way past: a failed safety or grounding
check is bad (and then no LLM judge is asked); any other failed check caps the verdict at
average.

The judge never trusts the generator's own evidence links: it finds each tag's evidence by
the words they share (the items holding all of the tag's words first), so it judges HMAS and
the V1 baseline alike.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from intentstream.agents.embedding import TextEmbedder, similarity
from intentstream.agents.evidence import Evidence, UserView, grounding, holding, term, terms, weighty, words
from intentstream.agents.explainer import Explained, check_sentence, foreign_words
from intentstream.agents.llm import LLM
from intentstream.agents.prompts import (
    INSTRUCTION_LIKE,
    array_of,
    data_block,
    object_schema,
    sentence_property,
    system_prompt,
)
from intentstream.agents.stage import PlanCost, Stage, ask, parse_model
from intentstream.schemas.record import EXPLANATION_MAX_CHARS, TAG_MAX_CHARS
from intentstream.schemas.text import plain_text

Verdict = Literal["good", "average", "bad"]
RATINGS = {"strong": 1.0, "weak": 0.5, "unrelated": 0.0}
DIVERSITY_MAX_SIMILARITY = 0.8  # two tags closer than this (MiniLM cosine) say the same thing

_RELEVANCE_TASK = """\
Your task: you judge relevance. For each tag (t ids) rate how well it follows from what the \
shopper did, using the items listed with it: strong (it names what the shopper carted, bought, \
searched or viewed), weak (loosely related to those items) or unrelated (no item shows it).
"""
# Weaker ratings come last, as tags do in a ranked record: a small model copies the
# example's ratings by position, and must not learn that a second tag is unrelated.
_RELEVANCE_EXAMPLE = {
    "tags": [
        {"id": "t1", "tag": "garmin watch", "shown_by": [{"item": "garmin electronics watch", "cart": 1}]},
        {"id": "t2", "tag": "nike sport shoes", "shown_by": [{"item": "nike sport shoes", "view": 3}]},
        {"id": "t3", "tag": "sport accessories", "shown_by": [{"item": "nike sport shoes", "view": 3}]},
        {"id": "t4", "tag": "luxury perfume", "shown_by": []},
    ],
}  # fmt: skip
_RELEVANCE_ANSWER = {"t1": "strong", "t2": "strong", "t3": "weak", "t4": "unrelated"}

_SENIOR_TASK = """\
Your task: you are the senior judge of the tags and explanations chosen for this shopper. \
Read the sub-judges' findings. First list the defects you find (at most 3, empty if none), \
then the strengths (at most 3), then give the verdict: good (relevant, grounded, timely, \
diverse and well written), average (usable with flaws) or bad (wrong, unsafe or unusable).
When sub-judges did not pass or scored low, name that as a defect: the verdict is then at \
most average. For example, with relevance 0.5 and a failed diversity check, a good answer is:
{"defects":["One tag is only loosely related.","Two tags say nearly the same."],\
"strengths":["Explanations cite real items."],"verdict":"average"}
"""
_SENIOR_EXAMPLE = {
    "tags": [{"tag": "philips kettle", "explanation": "You bought the Philips kettle."},
             {"tag": "nike sport shoes", "explanation": "You viewed the Nike shoes 3 times."}],
    "sub_judges": {"relevance": {"score": 1.0, "passed": True, "findings": []},
                   "grounding": {"score": 1.0, "passed": True, "findings": []},
                   "timeliness": {"score": 1.0, "passed": True, "findings": []},
                   "diversity": {"score": 0.8, "passed": True, "findings": []},
                   "safety_format": {"score": 1.0, "passed": True, "findings": []}},
}  # fmt: skip
_SENIOR_ANSWER = {
    "defects": [],
    "strengths": ["Both tags name items the shopper acted on.", "Explanations state only what happened."],
    "verdict": "good",
}


def relevance_stage(n_tags: int) -> Stage:
    """One rating per tag, as properties t1..tn: the model cannot skip or invent a tag."""
    rating = {"type": "string", "enum": list(RATINGS)}
    return Stage(
        name="judge_relevance",
        system=system_prompt(_RELEVANCE_TASK, _RELEVANCE_EXAMPLE, _RELEVANCE_ANSWER),
        schema=object_schema(**{f"t{n + 1}": rating for n in range(n_tags)}),
        max_tokens=10 + 10 * n_tags,
    )


def senior_stage() -> Stage:
    notes = array_of(sentence_property(100), 3)
    return Stage(
        name="judge_senior",
        system=system_prompt(_SENIOR_TASK, _SENIOR_EXAMPLE, _SENIOR_ANSWER),
        schema=object_schema(
            defects=notes, strengths=notes, verdict={"type": "string", "enum": ["good", "average", "bad"]}
        ),
        max_tokens=200,
    )


@dataclass(frozen=True, slots=True)
class SubVerdict:
    """One dimension's finding: a score in [0, 1], whether it passes, and why not."""

    dimension: str
    score: float
    passed: bool
    findings: tuple[str, ...] = ()

    def as_data(self) -> dict[str, Any]:
        return {"score": round(self.score, 2), "passed": self.passed, "findings": list(self.findings)}


@dataclass(frozen=True, slots=True)
class Judgement:
    """The senior judge's verdict with its reasons and the sub-judges' findings."""

    verdict: Verdict
    defects: tuple[str, ...]
    strengths: tuple[str, ...]
    sub: dict[str, SubVerdict] = field(default_factory=dict)
    floor: str | None = None  # why a hard rule overrode the senior judge, if it did


def tag_evidence(tag: str, view: UserView) -> list[Evidence]:
    """The judge's own link from a tag to the evidence behind it: the items holding every
    word of the tag (``holding``), else the evidence sharing a word with it."""
    held = holding(tag, view.evidence)
    if held:
        return held
    mine = set(words(tag))
    return [e for e in view.evidence if mine & set(words(e.described))]


def shown(e: Evidence) -> dict[str, Any]:
    """Evidence as a judge sees it next to a tag (no id: the judge has no use for it)."""
    return e.as_data()


# ---- checks in code -------------------------------------------------------------------


def check_grounding(
    tags: Sequence[Explained], view: UserView, entities: frozenset[str] = frozenset()
) -> SubVerdict:
    """Each tag held by one of the user's items (every word of it); each explanation true of
    the tag's items: numbers they hold, actions done on them, no word naming the user's other
    items, the prompts' example products or a known entity (``entities``: stems of brand and
    category words the deployment knows, as ``term``s) that the items do not show."""
    vocabulary = view.vocabulary()
    items = [e for e in view.evidence if e.kind != "signal"]
    findings, scores = [], []
    for t in tags:
        held = holding(t.tag, items)
        scores.append(1.0 if held else grounding(t.tag, vocabulary) / 2)
        if not held:
            findings.append(f"tag {t.tag!r} has a word that none of the shopper's items holds")
        cited = held or tag_evidence(t.tag, view) or view.evidence
        own = frozenset(w for e in cited for w in terms(e.described))
        try:
            check_sentence(t.explanation, cited, foreign_words(view, cited) | (entities - own))
        except ValueError as exc:
            findings.append(f"explanation of {t.tag!r}: {exc}")
    score = sum(scores) / len(scores) if scores else 0.0
    return SubVerdict("grounding", score, not findings, tuple(findings))


def check_timeliness(tags: Sequence[Explained], view: UserView) -> SubVerdict:
    """Share of tags shown by a recent item, a signal in force or an interest with real
    weight (``weighty``: what the shopper does a good deal lasts), not only by a one-off of
    old history."""
    lasting = {e.id for kind in weighty(view) for e in kind}
    timely = [
        any(e.kind in ("recent", "signal") or e.id in lasting for e in tag_evidence(t.tag, view))
        for t in tags
    ]
    score = sum(timely) / len(timely) if timely else 0.0
    stale = [t.tag for t, ok in zip(tags, timely, strict=True) if not ok]
    findings = (f"not shown by recent behaviour, a signal or a lasting interest: {stale}",) if stale else ()
    return SubVerdict("timeliness", score, score >= 0.5, findings)


def check_diversity(tags: Sequence[Explained], embedder: TextEmbedder) -> SubVerdict:
    """One minus the largest pairwise similarity of the tags."""
    if len(tags) < 2:
        return SubVerdict("diversity", 1.0, True)
    sims = similarity(embedder, [t.tag.casefold() for t in tags])
    worst, pair = 0.0, ("", "")
    for i in range(len(tags)):
        for j in range(i + 1, len(tags)):
            if sims[i, j] > worst:
                worst, pair = float(sims[i, j]), (tags[i].tag, tags[j].tag)
    passed = worst < DIVERSITY_MAX_SIMILARITY
    findings = () if passed else (f"{pair[0]!r} and {pair[1]!r} say nearly the same",)
    return SubVerdict("diversity", 1.0 - max(worst, 0.0), passed, findings)


def check_safety_format(tags: Sequence[Explained]) -> SubVerdict:
    """Plain text within limits, 2 to 5 words per tag, nothing that reads as an instruction,
    markup or a link."""
    findings = []
    for t in tags:
        if plain_text(t.tag, TAG_MAX_CHARS) != t.tag or not 2 <= len(t.tag.split()) <= 5:
            findings.append(f"tag {t.tag[:60]!r} is not a plain phrase of 2 to 5 words")
        if len(t.explanation) > EXPLANATION_MAX_CHARS or plain_text(
            t.explanation, 10**4
        ) != unicodedata.normalize("NFKC", t.explanation):
            findings.append(f"explanation of {t.tag[:40]!r} is not plain text within limits")
        for text in (t.tag, t.explanation):
            if INSTRUCTION_LIKE.search(text):
                findings.append(f"{text[:60]!r} reads like an instruction, markup or link")
    return SubVerdict("safety_format", 0.0 if findings else 1.0, not findings, tuple(findings))


def hard_floor(sub: dict[str, SubVerdict]) -> str | None:
    """Why the plan is bad whatever any LLM judge says, or None: unsafe, or untrue (a tag no
    item holds, an explanation stating what the data does not show)."""
    if not sub["safety_format"].passed:
        return "safety/format check failed"
    if not sub["grounding"].passed:
        return "grounding check failed: " + "; ".join(sub["grounding"].findings)[:300]
    return None


def apply_floors(senior: Verdict, sub: dict[str, SubVerdict]) -> tuple[Verdict, str | None]:
    """The hard rules over the senior judge's verdict."""
    if (floor := hard_floor(sub)) is not None:
        return "bad", floor
    if "relevance" in sub and sub["relevance"].score == 0.0:
        return "bad", "no tag is relevant"
    failed = [name for name, s in sub.items() if not s.passed]
    if failed and senior == "good":
        return "average", f"failed checks: {failed}"
    if not failed and senior == "bad":  # "bad" must point at something a check found
        return "average", "judged bad with every check passed"
    return senior, None


# ---- the LLM judges ---------------------------------------------------------------------


class _Senior(BaseModel):
    defects: list[str]
    strengths: list[str]
    verdict: Verdict


def parse_ratings(text: str, n_tags: int) -> SubVerdict:
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"answer is not JSON: {exc}") from None
    wanted = [f"t{i + 1}" for i in range(n_tags)]
    if not isinstance(answer, dict) or any(answer.get(t) not in RATINGS for t in wanted):
        raise ValueError(f"relevance answer does not rate every tag: {text[:200]}")
    score = sum(RATINGS[answer[t]] for t in wanted) / n_tags
    unrelated = [t for t in wanted if answer[t] == "unrelated"]
    return SubVerdict(
        "relevance", score, not unrelated, (f"unrelated tags: {unrelated}",) if unrelated else ()
    )


class Judge:
    """The sub-judges and the senior judge."""

    def __init__(
        self,
        llm: LLM,
        embedder: TextEmbedder,
        max_tags: int,
        retries: int = 2,
        entities: Collection[str] = (),
    ) -> None:
        """``entities``: brand and category words known beyond this user (a catalog's, which
        may grow while the judge works), which an explanation may name only where the tag's
        items do."""
        self.llm = llm
        self.embedder = embedder
        self.retries = retries
        self.entities = entities
        self.senior = replace(senior_stage(), retries=retries)

    async def judge(self, tags: Sequence[Explained], view: UserView, cost: PlanCost) -> Judgement:
        """Raises :class:`StageFailed` when an LLM judge gives no valid answer."""
        if not tags:
            return Judgement("bad", ("no tags",), ())
        sub = {
            "grounding": check_grounding(tags, view, frozenset(term(w) for w in self.entities)),
            "timeliness": check_timeliness(tags, view),
            "diversity": check_diversity(tags, self.embedder),
            "safety_format": check_safety_format(tags),
        }
        if (floor := hard_floor(sub)) is not None:  # no LLM judge can lift it: none is asked
            return Judgement("bad", tuple(f for s in sub.values() for f in s.findings)[:3], (), sub, floor)
        relevance_data = {
            "tags": [
                {"id": f"t{n + 1}", "tag": t.tag, "shown_by": [shown(e) for e in tag_evidence(t.tag, view)]}
                for n, t in enumerate(tags)
            ]
        }  # fmt: skip
        sub["relevance"] = await ask(
            self.llm, replace(relevance_stage(len(tags)), retries=self.retries), data_block(relevance_data),
            lambda text: parse_ratings(text, len(tags)), cost, view.user_id,
        )  # fmt: skip
        senior_data = {
            "tags": [{"tag": t.tag, "explanation": t.explanation} for t in tags],
            "sub_judges": {name: s.as_data() for name, s in sub.items()},
        }
        answer = await ask(
            self.llm,
            self.senior,
            data_block(senior_data),
            lambda text: parse_model(_Senior, text),
            cost,
            view.user_id,
        )
        verdict, floor = apply_floors(answer.verdict, sub)
        return Judgement(
            verdict,
            tuple(plain_text(d, 100) for d in answer.defects),
            tuple(plain_text(s, 100) for s in answer.strengths),
            sub,
            floor,
        )
