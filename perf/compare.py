"""``intentstream bench compare``: two ``bench replay`` reports, before and after, in one
picture: event → Redis record freshness over the run, and what the LLM is asked for per
1,000 events (plans and prompt tokens).

Figures are read from the reports as they are; nothing is measured here. Where the *before*
run made no plan (so it has no prompt size of its own), its tokens are its decided re-plans
times the *after* run's prompt tokens per plan, and the output says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def demand(report: dict[str, Any], fallback_prompt: float | None) -> dict[str, Any]:
    """LLM plans and prompt tokens per 1,000 events that ``report``'s run asked for."""
    plans = report.get("llm_plans_requested_per_1000_events", report.get("replans_decided_per_1000_events"))
    prompt = report.get("prompt_tokens_per_replan")
    borrowed = prompt is None
    prompt = fallback_prompt if borrowed else prompt
    tokens = report.get("llm_prompt_tokens_per_1000_events")
    if tokens is None and plans is not None and prompt is not None:
        tokens = round(plans * prompt)
    return {
        "llm_plans_requested_per_1000_events": plans,
        "llm_prompt_tokens_per_1000_events": tokens,
        "prompt_tokens_per_plan": prompt,
        "prompt_size_from_the_other_run": borrowed and prompt is not None,
    }


def compare(before: dict[str, Any], after: dict[str, Any], plot_dir: Path | None = None) -> dict[str, Any]:
    """The two runs side by side (and the picture, when ``plot_dir`` is given)."""
    after_demand = demand(after, None)
    result: dict[str, Any] = {
        "benchmark": "compare",
        "before": {
            "log": before.get("log"),
            "pacing": before.get("pacing"),
            "record_freshness_s": before.get("record_freshness_s"),
            "users_with_fresh_record_ratio": before.get("users_with_fresh_record_ratio"),
            **demand(before, after_demand["prompt_tokens_per_plan"]),
        },
        "after": {
            "log": after.get("log"),
            "pacing": after.get("pacing"),
            "record_freshness_s": after.get("record_freshness_s"),
            "users_with_fresh_record_ratio": after.get("users_with_fresh_record_ratio"),
            "plan_cache_hit_rate": after.get("plan_cache_hit_rate"),
            **after_demand,
        },
    }
    if plot_dir is not None:
        result["plot"] = plot(before, after, result, plot_dir)
    return result


def plot(before: dict[str, Any], after: dict[str, Any], result: dict[str, Any], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, (fresh, cost) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120, gridspec_kw={"width_ratios": [2, 1]})
    for name, report, colour in (("before", before, "tab:gray"), ("after", after, "tab:blue")):
        series = report.get("series", {}).get("record_freshness_s")
        if series and series["t"]:
            fresh.plot(series["t"], series["p50"], color=colour, label=f"{name}: p50")
            fresh.plot(series["t"], series["p99"], color=colour, linestyle="--", label=f"{name}: p99")
        else:
            written = (report.get("record_freshness_s") or {}).get("events") or 0
            fresh.plot([], [], color=colour, label=f"{name}: no record over time ({written} event refreshes)")
    fresh.set_yscale("log")
    fresh.set_xlabel("seconds since the replay began")
    fresh.set_ylabel("event → Redis record, seconds (log)")
    fresh.set_title("Record freshness over the run (5 s bins)")
    fresh.grid(alpha=0.3)
    fresh.legend(fontsize=8)
    names = ["before", "after"]
    tokens = [result[n]["llm_prompt_tokens_per_1000_events"] or 0 for n in names]
    bars = cost.bar(names, tokens, color=["tab:gray", "tab:blue"])
    for bar, n in zip(bars, names, strict=True):
        plans = result[n]["llm_plans_requested_per_1000_events"]
        note = f"{bar.get_height():,.0f} tokens\n{plans} plans"
        if result[n]["prompt_size_from_the_other_run"]:
            note += "\n(prompt size: after's)"
        cost.annotate(
            note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8
        )
    cost.set_ylabel("LLM prompt tokens per 1,000 events")
    cost.set_title("What the LLM is asked for")
    cost.margins(y=0.25)
    fig.text(
        0.01,
        0.01,
        f"{after.get('machine', '')}; model {after.get('model', '')}; {after.get('log', '')}",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = out / "replay-before-after.png"
    fig.savefig(path)
    plt.close(fig)
    return str(path)
