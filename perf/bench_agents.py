"""``intentstream bench agents``: the HMAS chain against the V1-style baseline, on the same
real users (REES46 and Online Retail) and the same vLLM server, judged by the same judge.

Each user's history (their last ``HISTORY_CAP`` events) is folded into a compressed context
for HMAS and written out line by line for V1. Generation cost excludes the judge (it judges
both alike); the judge's own cost is reported beside it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from intentstream.agents.arbiter import scorer_for
from intentstream.agents.audit import LogItems, PlanAudit, audit_plan, entity_words
from intentstream.agents.chain import JUDGE_STAGES, IntentChain, PlanFailed, PlanRejected
from intentstream.agents.embedding import MiniLMEmbedder
from intentstream.agents.evidence import season, user_view
from intentstream.agents.explainer import Explained
from intentstream.agents.judge import Judge, Judgement
from intentstream.agents.llm import OpenAICompatibleLLM, wait_until_ready
from intentstream.agents.stage import PlanCost, StageFailed
from intentstream.agents.v1 import V1Baseline, raw_line
from intentstream.deploy import stack
from intentstream.deploy.model import ensure_model
from intentstream.perf.bench_context import LOGS, load_tokenizer
from intentstream.perf.diversity import distinct_n, self_bleu
from intentstream.perf.logs import load_events
from intentstream.schemas.events import BehaviorEvent
from intentstream.schemas.record import IntentRecord, ReplanRequest
from intentstream.settings import Settings
from intentstream.stream.batch import shape_of
from intentstream.stream.context import ContextShape, UserContext, apply_event, replan_request
from intentstream.stream.entities import EntityCache

HISTORY_CAP = 100  # events per user: V1's raw history must fit the served 4,096-token window
V1_PROMPT_TOKEN_BUDGET = 3_200  # raw history lines beyond this are dropped, oldest first
MIN_EVENTS = 20
SEED = 20_261_201  # the prompts were shaped on users of seed 20_261_122, never on these
SHAPED_ON_SEED = 20_261_122
DELTA_NEW_SHARE = 0.3  # the newest events a delta plan is made for (``--delta``)


@dataclass
class Outcome:
    """One user's result under one system."""

    user_id: str
    dataset: str
    valid: bool
    tags: list[Explained] = field(default_factory=list)
    verdict: str = "none"
    cost: PlanCost = field(default_factory=PlanCost)
    judge_cost: PlanCost = field(default_factory=PlanCost)
    latency_s: float = 0.0
    repaired: bool = False
    reasons: list[str] = field(default_factory=list)  # the judge's defects, and any floor applied
    audit: PlanAudit | None = None  # the fact audit of its tags against the raw events


@dataclass(frozen=True)
class Chosen:
    """One benchmark user: their log, their last HISTORY_CAP events, and the entity words
    (brands, category words) of their whole log, for the audit."""

    dataset: str
    events: list[BehaviorEvent]
    known: frozenset[str]
    log_items: LogItems | None = None  # the whole log's items, for the item-name figure


def pick_users(settings: Settings, per_log: int, seed: int = SEED) -> list[Chosen]:
    """``per_log`` users of each shared log with at least MIN_EVENTS described events,
    sampled with a fixed seed; each with their last HISTORY_CAP events."""
    rng = random.Random(seed)
    chosen: list[Chosen] = []
    for name, (path, fmt) in LOGS.items():
        by_user: dict[str, list[BehaviorEvent]] = defaultdict(list)
        events = list(load_events(settings.datasets_dir / path, fmt))
        for e in events:
            by_user[e.user_id].append(e)
        known = entity_words(events)
        log_items = LogItems(events)
        eligible = sorted(u for u, es in by_user.items() if sum(1 for e in es if e.item_text) >= MIN_EVENTS)
        for user in rng.sample(eligible, min(per_log, len(eligible))):
            chosen.append(Chosen(name, by_user[user][-HISTORY_CAP:], known, log_items))
    return chosen


def audited(
    tags: list[Explained],
    events: list[BehaviorEvent],
    known: frozenset[str],
    max_tags: int,
    log_items: LogItems | None = None,
) -> PlanAudit:
    """The fact audit of ``tags`` against the raw ``events`` they were planned from (the
    moment an explanation may name: the season of the newest event)."""
    pairs = [(t.tag, t.explanation) for t in tags]
    moment = season(events[-1].ts)
    return audit_plan(pairs, events, max_tags=max_tags, known=known, moment=moment, log_items=log_items)


def v1_history(events: list[BehaviorEvent], count_tokens: Any) -> list[BehaviorEvent]:
    """The newest events whose raw lines fit V1_PROMPT_TOKEN_BUDGET."""
    kept: list[BehaviorEvent] = []
    total = 0
    for e in reversed(events):
        total += count_tokens(raw_line(e)) + 1
        if total > V1_PROMPT_TOKEN_BUDGET:
            break
        kept.append(e)
    return kept[::-1]


@contextmanager
def llm_endpoint(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The configured or running vLLM server, or one started for this run; and whether it
    is fresh (its prefix cache holds nothing of earlier runs)."""
    if settings.llm_base_url:
        yield settings.llm_base_url, False
        return
    state = stack.load_state(settings)
    if "llm" in state:
        yield state["llm"].address, False
        return
    print("no vLLM server running: starting one for this benchmark ...", file=sys.stderr)
    service = stack.start_llm(settings, ensure_model(settings), progress=lambda m: print(m, file=sys.stderr))
    try:
        yield service.address, True
    finally:
        stack.stop(service)


async def planning_parts(
    settings: Settings, base_url: str, *, judge: bool
) -> tuple[OpenAICompatibleLLM, MiniLMEmbedder, IntentChain]:
    """The served model once it answers, the embedder, and the worker's HMAS chain over them
    (judged online or not), as the settings make them."""
    await wait_until_ready(base_url, 60)
    llm = OpenAICompatibleLLM(base_url, settings.llm_model_name, concurrency=settings.llm_concurrency)
    embedder = MiniLMEmbedder()
    scorer = scorer_for(embedder, settings.scorer_sharpness, settings.kernel_backend)
    chain = IntentChain(
        llm, embedder, max_tags=settings.tags_per_user, retries=settings.llm_max_retries, judge=judge,
        scorer=scorer,
    )  # fmt: skip
    return llm, embedder, chain


async def _run(
    settings: Settings, base_url: str, users: list[Chosen], with_delta: bool = False, seed: int = SEED
) -> dict[str, Any]:
    llm, embedder, chain = await planning_parts(settings, base_url, judge=True)
    tags = settings.tags_per_user
    v1 = V1Baseline(llm, max_tags=tags, retries=settings.llm_max_retries)
    judge = Judge(llm, embedder, max_tags=tags, retries=settings.llm_max_retries)
    tokenizer = load_tokenizer(settings)
    shape = shape_of(settings)
    in_flight = asyncio.Semaphore(max(1, settings.llm_concurrency // 2))
    done = 0

    def progress(system: str) -> None:
        nonlocal done
        done += 1
        print(f"  {done}/{2 * len(users)} plans ({system})", file=sys.stderr)

    async def hmas(user: Chosen) -> Outcome:
        dataset, events = user.dataset, user.events
        request, now = request_of(events, shape)
        out = Outcome(request.user_id, dataset, valid=False)
        async with in_flight:
            started = time.perf_counter()
            try:
                plan = await chain.plan(request, now)
                out.valid, out.tags, out.cost = True, _explained(plan.record), plan.cost
                out.verdict = plan.record.verdict
                out.reasons = _reasons(plan.judgement)
            except PlanRejected as exc:
                out.valid, out.tags, out.cost, out.verdict = True, exc.tags, exc.cost, "bad"
                out.reasons = _reasons(exc.judgement)
            except PlanFailed as exc:
                out.cost = exc.cost
            out.latency_s = time.perf_counter() - started
        out.judge_cost = PlanCost({k: v for k, v in out.cost.stages.items() if k in JUDGE_STAGES})
        out.repaired = bool(out.cost.repairs)
        out.cost = out.cost.without(*JUDGE_STAGES)
        out.audit = audited(out.tags, events, user.known, tags, user.log_items)
        progress("hmas")
        return out

    async def baseline(user: Chosen) -> Outcome:
        dataset, events = user.dataset, user.events
        request, now = request_of(events, shape)
        view = user_view(request, now)
        history = v1_history(events, lambda text: len(tokenizer.encode(text).ids))
        out = Outcome(request.user_id, dataset, valid=False)
        async with in_flight:
            started = time.perf_counter()
            try:
                result = await v1.plan(history, view, now)
                out.valid, out.tags, out.cost = True, result.tags, result.cost
                out.repaired = bool(result.cost.repairs)
            except StageFailed:
                pass
            out.latency_s = time.perf_counter() - started
            if out.tags:
                try:
                    judgement = await judge.judge(out.tags, view, out.judge_cost)
                    out.verdict, out.reasons = judgement.verdict, _reasons(judgement)
                except StageFailed:
                    out.verdict = "unjudged"
        out.audit = audited(out.tags, events, user.known, tags, user.log_items)
        progress("v1")
        return out

    async def delta_cost(user: Chosen) -> dict[str, Any]:
        """A delta plan for the user (``agents.chain.delta``): their plan of the history
        without its newest ``DELTA_NEW_SHARE``, then a plan of the whole history over it."""
        dataset, events = user.dataset, user.events
        cut = max(1, int(len(events) * (1 - DELTA_NEW_SHARE)))
        earlier, now_earlier = request_of(events[:cut], shape)
        request, now = request_of(events, shape)
        async with in_flight:
            try:
                first = await chain.plan(earlier, now_earlier)
                second = await chain.plan(request, now, first.planned)
            except (PlanFailed, PlanRejected) as exc:
                return {"dataset": dataset, "made": False, "reason": str(exc)[:200]}
        progress("delta")
        return {
            "dataset": dataset,
            "made": True,
            "delta": second.cost.delta,
            "prompt_tokens": second.cost.without(*JUDGE_STAGES).prompt_tokens,
            "stages": sorted(second.cost.stages),
        }

    started = time.perf_counter()
    hmas_out = await asyncio.gather(*(hmas(u) for u in users))
    hmas_wall = time.perf_counter() - started
    deltas = await asyncio.gather(*(delta_cost(u) for u in users)) if with_delta else []
    started = time.perf_counter()
    v1_out = await asyncio.gather(*(baseline(u) for u in users))
    v1_wall = time.perf_counter() - started
    await llm.aclose()
    report = _report(settings, users, hmas_out, v1_out, hmas_wall, v1_wall, embedder.name, seed)
    if with_delta:
        report["delta_plans"] = _delta_summary(deltas, report["hmas"]["prompt_tokens_per_user"])
    return report


def _delta_summary(deltas: list[dict[str, Any]], full_prompt: float) -> dict[str, Any]:
    """Delta plans against full ones (generation cost, judge excluded, as for HMAS)."""
    made = [d for d in deltas if d["made"] and d["delta"]]
    prompt = _mean([d["prompt_tokens"] for d in made]) if made else None
    return {
        "users": len(deltas),
        "delta_plans_made": len(made),
        "fell_back_to_full": sum(1 for d in deltas if d["made"] and not d["delta"]),
        "failed": sum(1 for d in deltas if not d["made"]),
        "prompt_tokens_per_delta_plan": prompt,
        "prompt_tokens_per_full_plan": full_prompt,
        "delta_over_full": round(prompt / full_prompt, 3) if prompt and full_prompt else None,
        "note": (
            f"each user's plan of their history without its newest {DELTA_NEW_SHARE:.0%} of events is "
            "the current plan; the delta plan is of the whole history over it. A user whose newest "
            "events hold no interest the current plan does not cite gets the full chain (fell_back_to_full)."
        ),
    }


def request_of(events: list[BehaviorEvent], shape: ContextShape) -> tuple[ReplanRequest, datetime]:
    ctx = UserContext(events[0].user_id)
    cache = EntityCache()
    for e in events:
        apply_event(ctx, e, shape, cache)
    now = events[-1].ts
    return replan_request(ctx, trigger="bench", signals=[], now=now, shape=shape), now


def _reasons(judgement: Judgement | None) -> list[str]:
    if judgement is None:
        return []
    return [*judgement.defects, *([f"floor: {judgement.floor}"] if judgement.floor else [])]


def _explained(record: IntentRecord) -> list[Explained]:
    return [Explained(t.tag, t.explanation, (), t.wording or "llm") for t in record.tags]


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 2) if values else 0.0


def _summary(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    all_tags = [t.tag.casefold() for o in outcomes for t in o.tags]
    judged = [o for o in outcomes if o.verdict in ("good", "average", "bad")]
    stages: dict[str, dict[str, float]] = {}
    for name in sorted({s for o in outcomes for s in [*o.cost.stages, *o.judge_cost.stages]}):
        spent = [o.cost.stages.get(name) or o.judge_cost.stages.get(name) for o in outcomes]
        stages[name] = {
            "calls_per_user": _mean([s.calls if s else 0 for s in spent]),
            "invalid_answers": sum(s.invalid if s else 0 for s in spent),
            "prompt_tokens_per_user": _mean([s.prompt_tokens if s else 0 for s in spent]),
            "generated_tokens_per_user": _mean([s.completion_tokens if s else 0 for s in spent]),
            "llm_seconds_per_call": round(
                sum(s.latency_s for s in spent if s) / max(1, sum(s.calls for s in spent if s)), 2
            ),
        }
    latencies = [o.latency_s for o in outcomes]
    explanations = [t.explanation for o in outcomes for t in o.tags]
    return {
        **_audit_summary(outcomes),
        "gate_passed": _audit_summary([o for o in outcomes if o.verdict != "bad"]),
        "explanation_distinct_2": round(distinct_n(explanations, 2), 3),
        "explanation_self_bleu": round(self_bleu(explanations), 3),
        "prompt_tokens_per_user": _mean([o.cost.prompt_tokens for o in outcomes]),
        "uncached_prompt_tokens_per_user": _mean(
            [o.cost.prompt_tokens - o.cost.cached_prompt_tokens for o in outcomes]
        ),
        "generated_tokens_per_user": _mean([o.cost.completion_tokens for o in outcomes]),
        "llm_calls_per_user": _mean([o.cost.calls for o in outcomes]),
        "judge_prompt_tokens_per_user": _mean([o.judge_cost.prompt_tokens for o in outcomes]),
        "valid_output_rate": round(sum(o.valid for o in outcomes) / n, 3),
        "repaired_rate": round(sum(o.repaired for o in outcomes) / n, 3),
        # Tags the model named after one item that code cut to the run of words several of
        # the user's items share (agents.arbiter.as_interest).
        "tags_made_interests_per_user": _mean([len(o.cost.generalized) for o in outcomes]),
        # Explanations whose whole sentence is code's (the model's answers failed the checks).
        "explanations_worded_by_code_rate": round(
            sum(t.wording == "code" for o in outcomes for t in o.tags)
            / max(1, sum(len(o.tags) for o in outcomes)),
            3,
        ),
        "judge_good_rate": round(sum(o.verdict == "good" for o in judged) / max(1, len(judged)), 3),
        "judge_verdicts": {
            v: sum(o.verdict == v for o in outcomes) for v in ("good", "average", "bad", "unjudged")
        },
        "latency_s_p50": round(float(np.percentile(latencies, 50)), 1),
        "latency_s_p95": round(float(np.percentile(latencies, 95)), 1),
        "tags_per_user": _mean([len(o.tags) for o in outcomes]),
        "distinct_tag_ratio": round(len(set(all_tags)) / max(1, len(all_tags)), 3),
        "stages": stages,
    }


def _audit_summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """The fact audit's rates: over tags (grounded, factual) and over users (heaviest
    interest covered, share of interests with real weight covered, every tag true). An
    interest is a kind of item (``audit.kinds``); ``heaviest_item_covered_rate`` is the same
    for the single heaviest item description, the definition of the first factual-tags run.
    ``item_name_tag_rate``: the share of tags only one item of the whole log holds every word
    of (``audit.LogItems``): an item's name, not an interest (None when no log was given)."""
    audits = [o.audit for o in outcomes if o.audit is not None]
    tags = [t for a in audits for t in a.tags]
    named = [t for t in tags if t.items_satisfying is not None]

    def rate(hits: int, total: int) -> float | None:
        return round(hits / total, 3) if total else None

    return {
        "users_audited": len(audits),
        "tag_grounded_rate": rate(sum(t.grounded for t in tags), len(tags)),
        "explanation_factual_rate": rate(sum(t.factual for t in tags), len(tags)),
        "heaviest_interest_covered_rate": rate(sum(a.heaviest_covered for a in audits), len(audits)),
        "heaviest_item_covered_rate": rate(sum(a.heaviest_item_covered for a in audits), len(audits)),
        "interest_coverage": round(statistics.fmean(a.coverage for a in audits), 3) if audits else None,
        "audit_passed_rate": rate(sum(a.passed and bool(a.tags) for a in audits), len(audits)),
        # A tag only one item of the log holds every word of is that item's name, not an interest.
        "item_name_tag_rate": rate(sum(t.items_satisfying == 1 for t in named), len(named)),
    }


def _report(
    settings: Settings,
    users: list[Chosen],
    hmas: list[Outcome],
    v1: list[Outcome],
    hmas_wall: float,
    v1_wall: float,
    embedder: str,
    seed: int = SEED,
) -> dict[str, Any]:
    h, b = _summary(hmas), _summary(v1)
    by_dataset = {}
    for name in LOGS:
        hs, bs = [o for o in hmas if o.dataset == name], [o for o in v1 if o.dataset == name]
        if hs:
            sh, sb = _summary(hs), _summary(bs)
            by_dataset[name] = {
                "users": len(hs),
                "prompt_token_ratio": round(
                    sh["prompt_tokens_per_user"] / max(1.0, sb["prompt_tokens_per_user"]), 3
                ),
                "hmas_judge_good_rate": sh["judge_good_rate"],
                "v1_judge_good_rate": sb["judge_good_rate"],
            }
    return {
        "benchmark": "agents",
        "users": len(users),
        "history_events_per_user": _mean([len(u.events) for u in users]),
        "hmas_prompt_tokens_per_user": h["prompt_tokens_per_user"],
        "v1_prompt_tokens_per_user": b["prompt_tokens_per_user"],
        "prompt_token_ratio": round(h["prompt_tokens_per_user"] / max(1.0, b["prompt_tokens_per_user"]), 3),
        "uncached_prompt_token_ratio": round(
            h["uncached_prompt_tokens_per_user"] / max(1.0, b["uncached_prompt_tokens_per_user"]), 3
        ),
        "hmas_generated_tokens_per_user": h["generated_tokens_per_user"],
        "v1_generated_tokens_per_user": b["generated_tokens_per_user"],
        "valid_output_rate": h["valid_output_rate"],
        "v1_valid_output_rate": b["valid_output_rate"],
        "judge_good_rate": h["judge_good_rate"],
        "v1_judge_good_rate": b["judge_good_rate"],
        "replan_latency_s_p50": h["latency_s_p50"],
        "replan_latency_s_p95": h["latency_s_p95"],
        "tags_per_user": h["tags_per_user"],
        "distinct_tag_ratio": h["distinct_tag_ratio"],
        "plans_per_minute": {
            "hmas": round(60 * len(hmas) / hmas_wall, 2),
            "v1": round(60 * len(v1) / v1_wall, 2),
        },
        "hmas": h,
        "v1": b,
        "by_dataset": by_dataset,
        "examples": [
            {
                "user": o.user_id,
                "dataset": o.dataset,
                "verdict": o.verdict,
                "judge_reasons": o.reasons,
                "tags": [{"tag": t.tag, "explanation": t.explanation} for t in o.tags],
                "audit": _audit_of(o),
            }
            for o in hmas[:2] + [o for o in hmas if o.dataset != hmas[0].dataset][:2]
        ],
        "audit_failures": [
            {"user": o.user_id, "dataset": o.dataset, "system": system, **_audit_of(o)}
            for system, outcomes in (("hmas", hmas), ("v1", v1))
            for o in outcomes
            if o.audit is not None and not (o.audit.passed and o.audit.heaviest_covered)
        ][:12],
        "model": settings.llm_model_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU vLLM",
        "embedder": embedder,
        "notes": (
            f"users sampled with seed {seed} (the prompts were shaped on seed {SHAPED_ON_SEED}) "
            f"from users with >= {MIN_EVENTS} described events, half per log; "
            f"last {HISTORY_CAP} events each; V1 reads the raw lines of that history (newest within "
            f"{V1_PROMPT_TOKEN_BUDGET} tokens) on each of its 3 paths; HMAS reads the compressed context. "
            "Token counts are the server's usage (judge excluded from generation cost, reported beside it); "
            f"{settings.llm_concurrency} requests in flight; latency is per user, judge included. "
            "The fact audit (agents/audit.py) checks every tag and explanation against the user's raw "
            "events, apart from generation; `gate_passed` repeats it over the plans the judge let through."
        ),
    }


def _audit_of(o: Outcome) -> dict[str, Any]:
    if o.audit is None:
        return {}
    return {
        "heaviest": o.audit.heaviest,
        "heaviest_covered": o.audit.heaviest_covered,
        "problems": [p for t in o.audit.tags for p in t.problems],
    }


def bench_agents(settings: Settings, users: int, *, delta: bool = False, seed: int = SEED) -> dict[str, Any]:
    """Run both systems on ``users`` real users (half from each shared log); with ``delta``,
    also a delta plan for each (``delta_plans`` in the report)."""
    chosen = pick_users(settings, max(1, users // 2), seed)
    with llm_endpoint(settings) as (base_url, fresh):
        result = asyncio.run(_run(settings, base_url, chosen, delta, seed))
    if not fresh:  # earlier runs' prompts may sit in the server's prefix cache
        result["uncached_prompt_token_ratio"] = None
        result["notes"] += (
            " The server was already running, so prefix-cache hits include earlier runs' prompts: "
            "uncached_prompt_token_ratio is left out (run with no server up for a fresh one)."
        )
    return result
