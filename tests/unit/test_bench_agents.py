"""The agents benchmark's pure parts: V1's history budget and the per-system summary."""

from __future__ import annotations

from datetime import timedelta

from intentstream.agents.explainer import Explained
from intentstream.agents.stage import PlanCost, StageCost
from intentstream.perf.bench_agents import (
    V1_PROMPT_TOKEN_BUDGET,
    Outcome,
    _delta_summary,
    _summary,
    v1_history,
)
from intentstream.schemas.events import BehaviorEvent
from tests.helpers import NOW


def test_v1_history_keeps_the_newest_lines_within_the_token_budget() -> None:
    events = [
        BehaviorEvent(
            event_id=f"e{n}",
            user_id="u",
            action="view",
            ts=NOW + timedelta(seconds=n),
            item_id="i",
            item_text="x",
        )
        for n in range(500)
    ]
    kept = v1_history(events, lambda line: 10)  # every line costs 10 tokens (+1 for its newline)
    assert len(kept) == V1_PROMPT_TOKEN_BUDGET // 11
    assert kept[-1] is events[-1]
    assert kept == events[-len(kept) :]


def outcome(verdict: str, tags: list[str], prompt: int, valid: bool = True) -> Outcome:
    cost = PlanCost({"planner": StageCost(calls=1, prompt_tokens=prompt, cached_prompt_tokens=prompt // 2)})
    return Outcome("u", "rees46", valid, [Explained(t, "x", ()) for t in tags], verdict, cost)


def test_summary_counts_rates_diversity_and_tokens() -> None:
    summary = _summary(
        [
            outcome("good", ["rain boots", "garden hose"], 1000),
            outcome("average", ["rain boots"], 2000),
            outcome("none", [], 600, valid=False),
        ]
    )
    assert summary["valid_output_rate"] == round(2 / 3, 3)
    assert summary["judge_good_rate"] == 0.5  # of the judged ones
    assert summary["prompt_tokens_per_user"] == 1200.0
    assert summary["uncached_prompt_tokens_per_user"] == 600.0
    assert summary["tags_per_user"] == 1.0
    assert summary["distinct_tag_ratio"] == round(2 / 3, 3)
    assert summary["stages"]["planner"]["calls_per_user"] == 1.0


def test_delta_plans_are_set_against_full_ones_and_fallbacks_counted() -> None:
    deltas = [
        {"dataset": "rees46", "made": True, "delta": True, "prompt_tokens": 1000, "stages": []},
        {"dataset": "rees46", "made": True, "delta": True, "prompt_tokens": 2000, "stages": []},
        {"dataset": "online_retail", "made": True, "delta": False, "prompt_tokens": 2600, "stages": []},
        {"dataset": "online_retail", "made": False, "reason": "judged bad"},
    ]
    summary = _delta_summary(deltas, 2500.0)
    assert (summary["delta_plans_made"], summary["fell_back_to_full"], summary["failed"]) == (2, 1, 1)
    assert summary["prompt_tokens_per_delta_plan"] == 1500
    assert summary["delta_over_full"] == 0.6
    assert _delta_summary([], 2500.0)["delta_over_full"] is None


def test_the_audit_summary_rates_tags_and_users_and_repeats_over_what_the_gate_passed() -> None:
    from intentstream.agents.audit import LogItems, audit_plan

    events = [
        BehaviorEvent(
            event_id=f"e{n}", user_id="u", action="view", ts=NOW + timedelta(seconds=n), item_id="k",
            item_text="bosch kettle", brand="bosch",
        )
        for n in range(3)
    ]  # fmt: skip
    true = outcome("good", ["bosch kettle"], 100)
    true.tags = [Explained("bosch kettle", "You viewed the bosch kettle 3 times.", ())]
    false = outcome("bad", ["bosch toaster"], 100)
    false.tags = [Explained("bosch toaster", "You bought the bosch toaster.", ())]
    for o in (true, false):
        o.audit = audit_plan([(t.tag, t.explanation) for t in o.tags], events, max_tags=3)
    assert _summary([true, false])["item_name_tag_rate"] is None  # not asked: no log given
    log = LogItems(events)  # one kettle in the whole log: "bosch kettle" is its name
    for o in (true, false):
        o.audit = audit_plan([(t.tag, t.explanation) for t in o.tags], events, max_tags=3, log_items=log)
    summary = _summary([true, false])
    assert summary["item_name_tag_rate"] == 0.5  # the toaster is no item of the log at all
    assert summary["tag_grounded_rate"] == 0.5
    assert summary["explanation_factual_rate"] == 0.5
    assert summary["heaviest_interest_covered_rate"] == 0.5
    assert summary["audit_passed_rate"] == 0.5
    assert summary["gate_passed"]["audit_passed_rate"] == 1.0  # the judge turned the false one down
    assert 0.0 < summary["explanation_distinct_2"] <= 1.0


def test_distinct_n_and_self_bleu_see_repetition() -> None:
    from intentstream.perf.diversity import distinct_n, self_bleu

    same = ["You viewed the kettle three times."] * 3
    varied = ["You viewed the kettle.", "Rain boots for a wet week.", "A watch you carted twice."]
    assert distinct_n(same) < distinct_n(varied)
    assert self_bleu(same) > 0.99
    assert self_bleu(varied) < 0.3  # add-one smoothing keeps unrelated texts above 0
    assert self_bleu(["one text only"]) == 0.0
    assert distinct_n([]) == 0.0
