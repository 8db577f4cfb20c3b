"""The judge benchmark's challenge set: every mutant of a true plan is false by the audit
(or holds an instruction), and a mutation that happens to stay true is left out."""

from __future__ import annotations

import random
from datetime import timedelta

from intentstream.agents.audit import entity_words
from intentstream.agents.evidence import UserView
from intentstream.agents.explainer import Explained
from intentstream.perf.bench_agents import Chosen, audited
from intentstream.perf.bench_judge import MUTATIONS, Planned, challenge_set, mutate
from intentstream.schemas.events import BehaviorEvent
from tests.helpers import NOW


def events(user: str, *items: tuple[str, str, int]) -> list[BehaviorEvent]:
    out = []
    for brand, kind, times in items:
        for n in range(times):
            out.append(
                BehaviorEvent(
                    event_id=f"{user}-{brand}-{n}", user_id=user, action="view",
                    ts=NOW + timedelta(minutes=n), item_id=f"{brand}-{kind}", item_text=f"{brand} {kind}",
                    brand=brand, category=f"electronics.{kind}",
                )
            )  # fmt: skip
    return out


def planned(user: str, evs: list[BehaviorEvent], *tags: tuple[str, str]) -> Planned:
    chosen = Chosen("rees46", evs, entity_words(evs))
    explained = [Explained(t, x, ()) for t, x in tags]
    view = UserView(user, (), None, {}, NOW)  # the judge's view: not used by the challenge set
    return Planned(chosen, explained, audited(explained, evs, chosen.known, 4), view)


ALICE = planned(
    "alice",
    events("alice", ("apple", "smartphone", 3), ("samsung", "smartphone", 1)),
    ("apple smartphone", "You viewed the apple smartphone 3 times, worth a look."),
)
BOB = planned(
    "bob",
    events("bob", ("bosch", "kettle", 2)),
    ("bosch kettle", "You viewed the bosch kettle twice."),
)


def test_the_good_plans_pass_the_audit() -> None:
    assert ALICE.audit.passed
    assert BOB.audit.passed


def test_each_mutation_makes_a_true_plan_false() -> None:
    rng = random.Random(1)
    for kind in MUTATIONS:
        tags = mutate(kind, ALICE, [BOB], rng)
        assert tags is not None, kind
        assert tags != ALICE.tags, kind
    swapped = mutate("brand_swapped", ALICE, [BOB], rng)
    assert swapped is not None
    assert (
        swapped[0].explanation == "You viewed the samsung smartphone 3 times, worth a look."
    )  # her own brand
    counted = mutate("count_changed", BOB, [ALICE], rng)
    assert counted is not None
    assert counted[0].explanation == "You viewed the bosch kettle 5 times."
    invented = mutate("invented_noun", BOB, [ALICE], rng)
    assert invented is not None
    assert invented[0].tag == "bosch smartphone"


def test_the_challenge_set_keeps_only_mutants_the_audit_finds_false() -> None:
    cases, stayed_true = challenge_set([ALICE, BOB], seed=3, max_tags=4)
    assert sum(c.kind == "good" for c in cases) == 2
    for case in cases:
        if case.kind not in ("good", "instruction"):
            assert not audited(case.tags, case.planned.user.events, case.planned.user.known, 4).passed
    assert {c.kind for c in cases} == {"good", *MUTATIONS}
    assert sum(stayed_true.values()) >= 0


def test_a_plan_failing_the_audit_is_no_good_case() -> None:
    false = planned("carol", events("carol", ("bosch", "kettle", 1)), ("bosch toaster", "You viewed it."))
    cases, _ = challenge_set([false], seed=3, max_tags=4)
    assert cases == []
