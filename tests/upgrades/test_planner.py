"""The pure planner: batch sizing and cutting, gates, rollback decisions (SPEC 3.2)."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upgrades.planner import (
    GATE_AFTER_BATCH,
    GATE_BEFORE_FIRST,
    GATE_BEFORE_LATER,
    Candidate,
    Policy,
    RunKind,
    batch_size,
    gate_after_batch,
    gate_before_batch,
    plan_batches,
    progress,
    should_roll_back,
)


def fleet(count: int, *, zones: list[str] | None = None, **overrides) -> list[Candidate]:
    zones = zones or [""]
    out = []
    for n in range(count):
        zone = zones[n % len(zones)]
        index = n // len(zones)
        out.append(Candidate(instance_id=n, update_domain=index % 5, zone=zone, **overrides))
    return out


@pytest.mark.parametrize(
    ("count", "percent", "expected"),
    [
        (1, 20, 1),
        (5, 20, 1),
        (5, 100, 1),
        (6, 20, 1),
        (10, 20, 2),
        (99, 20, 19),
        (100, 20, 20),
        (1000, 20, 200),
        (100, 5, 5),
        (100, 100, 100),
        (7, 50, 3),
    ],
)
def test_r_batch_1_batch_size_is_the_percent_rounded_down_at_least_one(count, percent, expected):
    assert batch_size(count, Policy(max_batch_instance_percent=percent)) == expected


def test_r_batch_1_five_instances_or_fewer_go_one_at_a_time():
    assert [len(b.instance_ids) for b in plan_batches(fleet(5), Policy(max_batch_instance_percent=100)).batches] == [
        1
    ] * 5


def test_r_batch_2_100_instances_make_five_batches_of_20_one_per_update_domain():
    plan = plan_batches(fleet(100), Policy())
    assert [(b.update_domain, len(b.instance_ids)) for b in plan.batches] == [(ud, 20) for ud in range(5)]


def test_r_batch_2_update_domains_go_in_ascending_order_and_are_never_mixed():
    plan = plan_batches(fleet(23), Policy(max_batch_instance_percent=50))
    domains = [b.update_domain for b in plan.batches]
    assert domains == sorted(domains)
    for batch in plan.batches:
        assert {n % 5 for n in batch.instance_ids} == {batch.update_domain}


def test_r_batch_2_zonal_sets_go_zone_by_zone():
    plan = plan_batches(fleet(30, zones=["1", "2", "3"]), Policy())
    zones = [b.zone for b in plan.batches]
    assert zones == sorted(zones)
    assert [z for z, _ in Counter(zones).items()] == ["1", "2", "3"]


def test_r_batch_2_cross_zone_upgrade_lets_a_batch_span_zones():
    plan = plan_batches(fleet(30, zones=["1", "2", "3"]), Policy(enable_cross_zone_upgrade=True))
    spans = [len({n % 3 for n in b.instance_ids}) for b in plan.batches]
    assert max(spans) == 3


def test_r_batch_2_prioritize_unhealthy_instances_puts_every_unhealthy_one_first():
    candidates = [Candidate(instance_id=n, update_domain=n % 5, healthy=n not in (7, 13, 21)) for n in range(25)]
    plan = plan_batches(candidates, Policy(prioritize_unhealthy_instances=True))
    first = [i for b in plan.batches[:3] for i in b.instance_ids]
    assert set(first) == {7, 13, 21}
    without = plan_batches(candidates, Policy())
    assert set(without.batches[0].instance_ids) != {7, 13, 21}


def test_r_batch_2_instances_on_target_and_protected_ones_are_skipped():
    candidates = [Candidate(instance_id=n, update_domain=n % 5, on_target=n < 3, protected=n == 9) for n in range(10)]
    plan = plan_batches(candidates, Policy())
    assert plan.skipped == {
        0: "already on the target",
        1: "already on the target",
        2: "already on the target",
        9: "protected from scale-set actions",
    }
    assert sorted(plan.targeted_ids) == [3, 4, 5, 6, 7, 8]


def test_batch_size_counts_the_whole_set_even_when_some_are_skipped():
    candidates = [Candidate(instance_id=n, update_domain=0, on_target=n >= 10) for n in range(100)]
    plan = plan_batches(candidates, Policy())
    assert [len(b.instance_ids) for b in plan.batches] == [10]


def test_an_operators_batch_size_overrides_the_percent():
    plan = plan_batches(fleet(20), Policy(batch_size=2))
    assert {len(b.instance_ids) for b in plan.batches} == {2}


def test_all_at_once_is_one_batch_and_ignores_the_gates():
    policy = Policy(all_at_once=True)
    assert [len(b.instance_ids) for b in plan_batches(fleet(40), policy).batches] == [40]
    assert gate_before_batch(first=True, unhealthy=40, total=40, policy=policy) is None
    assert gate_after_batch(upgraded_unhealthy=40, upgraded=40, policy=policy) is None


@pytest.mark.parametrize(("unhealthy", "expected"), [(20, None), (21, GATE_BEFORE_FIRST)])
def test_r_gate_1_more_than_the_percent_unhealthy_refuses_the_first_batch(unhealthy, expected):
    assert gate_before_batch(first=True, unhealthy=unhealthy, total=100, policy=Policy()) == expected


def test_r_gate_2_later_batches_report_the_in_rolling_upgrade_code():
    assert gate_before_batch(first=False, unhealthy=21, total=100, policy=Policy()) == GATE_BEFORE_LATER
    assert (
        gate_before_batch(first=False, unhealthy=3, total=12, policy=Policy(max_unhealthy_instance_percent=25)) is None
    )


@pytest.mark.parametrize(
    ("unhealthy", "upgraded", "expected"), [(4, 20, None), (5, 20, GATE_AFTER_BATCH), (0, 0, None)]
)
def test_r_gate_3_more_than_the_percent_of_upgraded_instances_unhealthy_stops(unhealthy, upgraded, expected):
    assert gate_after_batch(upgraded_unhealthy=unhealthy, upgraded=upgraded, policy=Policy()) == expected


def test_r_gate_3_zero_percent_tolerates_no_unhealthy_upgrade():
    policy = Policy(max_unhealthy_upgraded_instance_percent=0)
    assert gate_after_batch(upgraded_unhealthy=1, upgraded=100, policy=policy) == GATE_AFTER_BATCH


def test_r_rollback_1_who_rolls_back():
    default = Policy()
    assert should_roll_back(RunKind.AUTOMATIC_OS, default, breached=False)
    assert not should_roll_back(RunKind.AUTOMATIC_OS, Policy(disable_automatic_rollback=True), breached=True)
    assert not should_roll_back(RunKind.MANUAL_OS, default, breached=True)
    assert not should_roll_back(RunKind.ROLLING_MODEL, default, breached=True)
    on_breach = Policy(rollback_failed_instances_on_policy_breach=True)
    assert should_roll_back(RunKind.ROLLING_MODEL, on_breach, breached=True)
    assert not should_roll_back(RunKind.ROLLING_MODEL, on_breach, breached=False)
    assert not should_roll_back(RunKind.MANUAL, on_breach, breached=True)
    assert should_roll_back(RunKind.EXTENSION, default, breached=False)


def test_r_loop_1_progress_counts_add_up_and_skipped_is_not_targeted():
    counts = progress(
        Counter(["Succeeded", "Failed", "RolledBack", "RollbackFailed", "InProgress", "Pending", "Skipped"])
    )
    assert (counts.successful, counts.failed, counts.in_progress, counts.pending) == (1, 3, 1, 1)
    assert counts.total == 6


# --- properties over random fleets and policies ------------------------------------------------

candidates_strategy = st.lists(
    st.builds(
        Candidate,
        instance_id=st.integers(0, 2000),
        update_domain=st.integers(0, 4),
        zone=st.sampled_from(["", "1", "2", "3"]),
        healthy=st.booleans(),
        on_target=st.booleans(),
        protected=st.booleans(),
    ),
    max_size=300,
    unique_by=lambda c: c.instance_id,
)
policy_strategy = st.builds(
    Policy,
    max_batch_instance_percent=st.integers(5, 100),
    enable_cross_zone_upgrade=st.booleans(),
    prioritize_unhealthy_instances=st.booleans(),
    batch_size=st.one_of(st.none(), st.integers(1, 50)),
)


@settings(max_examples=300, deadline=None)
@given(candidates_strategy, policy_strategy)
def test_batches_partition_the_targeted_instances(candidates, policy):
    plan = plan_batches(candidates, policy)
    targeted = plan.targeted_ids
    assert len(targeted) == len(set(targeted))
    assert set(targeted) | set(plan.skipped) == {c.instance_id for c in candidates}
    assert not set(targeted) & set(plan.skipped)
    assert set(targeted) == {c.instance_id for c in candidates if not c.on_target and not c.protected}


@settings(max_examples=300, deadline=None)
@given(candidates_strategy, policy_strategy)
def test_batches_respect_the_size_bound_and_never_mix_update_domains_or_zones(candidates, policy):
    by_id = {c.instance_id: c for c in candidates}
    plan = plan_batches(candidates, policy)
    bound = batch_size(len(candidates), policy)
    zones = {by_id[i].zone for i in plan.targeted_ids}
    for batch in plan.batches:
        assert 1 <= len(batch.instance_ids) <= bound
        assert {by_id[i].update_domain for i in batch.instance_ids} == {batch.update_domain}
        if len(zones) > 1 and not policy.enable_cross_zone_upgrade:
            assert len({by_id[i].zone for i in batch.instance_ids}) == 1


@settings(max_examples=200, deadline=None)
@given(candidates_strategy, policy_strategy)
def test_unhealthy_first_means_no_healthy_instance_before_an_unhealthy_one(candidates, policy):
    by_id = {c.instance_id: c for c in candidates}
    order = plan_batches(candidates, policy).targeted_ids
    if policy.prioritize_unhealthy_instances:
        flags = [by_id[i].healthy for i in order]
        assert flags == sorted(flags)  # all False (unhealthy) before all True


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["Succeeded", "Failed", "RolledBack", "RollbackFailed", "InProgress", "Pending", "Skipped"]),
        max_size=200,
    )
)
def test_progress_always_sums_to_the_targeted_count(statuses):
    assert progress(Counter(statuses)).total == sum(s != "Skipped" for s in statuses)
