"""The what-if (upgrades.whatif): a plan played forward against assumed failures, without
touching the fleet. Pure rules first (R-GATE-1, R-GATE-2, R-GATE-3, R-ROLLBACK-1,
R-PAUSE-1), then the proof that matters: the real engine, driven through the simulator with
the same failure share, ends where the what-if said it would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from fleet.drivers.simulator import SimulatorDriver
from fleet.models import FaultProfile, Instance, ScaleSet
from tests import factories
from upgrades import engine, preview, services
from upgrades.models import Kind, OutcomeStatus, RunStatus, UpgradeRun
from upgrades.planner import (
    GATE_AFTER_BATCH,
    GATE_BEFORE_FIRST,
    GATE_BEFORE_LATER,
    Batch,
    Plan,
    Policy,
)
from upgrades.whatif import Overrides, Timing, failing_instances, what_if

TIMING = Timing(upgrade_seconds=85, settle_seconds=5, rollback_seconds=60, health_wait_seconds=300, pause_seconds=0)


def plan_of(*sizes: int) -> Plan:
    """Batches of these sizes over consecutive ids, one update domain each."""
    batches, start = [], 0
    for domain, size in enumerate(sizes):
        batches.append(Batch(update_domain=domain, zone="", instance_ids=tuple(range(start, start + size))))
        start += size
    return Plan(batches=tuple(batches))


def run_what_if(plan: Plan, policy: Policy, kind: str = Kind.MANUAL_OS, **kwargs: Any) -> Any:
    ids = kwargs.pop("set_instance_ids", plan.targeted_ids)
    return what_if(
        plan=plan,
        policy=policy,
        kind=kind,
        set_instance_ids=ids,
        unhealthy_ids=kwargs.pop("unhealthy_ids", set()),
        failing_ids=kwargs.pop("failing_ids", set()),
        timing=kwargs.pop("timing", TIMING),
    )


# --- pure rules ----------------------------------------------------------------------------


def test_with_no_failure_every_batch_runs_and_the_total_is_batches_plus_pauses() -> None:
    policy = Policy(pause_seconds=60)
    result = run_what_if(plan_of(4, 4, 4), policy)
    assert result.completed
    assert (result.upgraded, result.hit, result.rolled_back) == (12, 0, 0)
    assert result.total_seconds == 3 * (85 + 5) + 2 * 60  # R-PAUSE-1: between batches only
    assert [b.ends_at for b in result.batches] == [90, 240, 390]


def test_r_gate_3_stops_after_the_batch_whose_failures_exceed_the_upgraded_share() -> None:
    # 20 %: one failure in the first 4 is 25 %, more than 20 %.
    result = run_what_if(plan_of(4, 4, 4), Policy(), failing_ids={1})
    assert (result.stop_code, result.stop_batch, result.stop_before) == (GATE_AFTER_BATCH, 1, False)
    assert (result.upgraded, result.hit) == (4, 1)
    assert [b.tolerated_upgraded for b in result.batches] == [0]
    # The chart's gate line over every planned batch: 20 % of 4, 8 and 12 upgraded.
    assert (result.planned_upgraded, result.planned_tolerated) == ((4, 8, 12), (0, 1, 2))


def test_r_gate_3_counts_every_instance_upgraded_so_far() -> None:
    # 1 failure in batch 2: 1 of 8 upgraded = 12.5 % ≤ 20 %: goes on; 2 of 12 = 16.7 %: goes on.
    result = run_what_if(plan_of(4, 4, 4), Policy(), failing_ids={4, 11})
    assert result.completed
    assert [b.unhealthy_upgraded_so_far for b in result.batches] == [0, 1, 2]
    assert result.total_seconds == (85 + 5) + (85 + 300) + (85 + 300)  # a failure waits out the health wait


def test_r_gate_1_a_set_already_too_unhealthy_does_not_start() -> None:
    result = run_what_if(plan_of(2, 2, 2, 2, 2), Policy(), set_instance_ids=range(10), unhealthy_ids={7, 8, 9})
    assert (result.stop_code, result.stop_batch, result.stop_before) == (GATE_BEFORE_FIRST, 1, True)
    assert (result.upgraded, result.batches, result.total_seconds) == (0, (), 0)


def test_r_gate_2_failures_left_unhealthy_stop_a_later_batch_before_it_starts() -> None:
    # R-GATE-3 lets everything pass (100 %); the whole set's health (20 %) does not.
    policy = Policy(max_unhealthy_upgraded_instance_percent=100)
    result = run_what_if(plan_of(2, 2, 2, 2, 2), policy, failing_ids={0, 1, 2})
    assert (result.stop_code, result.stop_batch, result.stop_before) == (GATE_BEFORE_LATER, 3, True)
    assert [b.set_unhealthy_before for b in result.batches] == [0, 2]


def test_r_gate_2_upgrading_an_unhealthy_instance_heals_it() -> None:
    policy = Policy(max_unhealthy_instance_percent=10)  # at most 1 of 10
    result = run_what_if(plan_of(2, 2, 2, 2, 2), policy, unhealthy_ids={0})
    assert result.completed
    assert [b.set_unhealthy_before for b in result.batches] == [1, 0, 0, 0, 0]


def test_r_rollback_1_an_automatic_os_upgrade_rolls_back_each_batchs_failures() -> None:
    policy = Policy(max_unhealthy_upgraded_instance_percent=100)
    result = run_what_if(plan_of(4, 4), policy, kind=Kind.AUTOMATIC_OS, failing_ids={1, 6})
    assert result.completed
    assert (result.rolled_back, result.rollback_seconds) == (2, 2 * 60)
    assert result.total_seconds == 2 * (85 + 300 + 60)


def test_r_rollback_1_disable_automatic_rollback_and_manual_os_upgrades_roll_nothing_back() -> None:
    for kind, policy in [
        (Kind.AUTOMATIC_OS, Policy(disable_automatic_rollback=True)),
        (Kind.MANUAL_OS, Policy()),
        (Kind.MANUAL, Policy(all_at_once=True)),
    ]:
        assert run_what_if(plan_of(5), policy, kind=kind, failing_ids={0}).rolled_back == 0


def test_r_rollback_1_a_rolling_model_upgrade_rolls_back_only_the_breaching_batch() -> None:
    policy = Policy(rollback_failed_instances_on_policy_breach=True)
    result = run_what_if(plan_of(10, 10, 10), policy, kind=Kind.ROLLING_MODEL, failing_ids={0, 10, 11, 12, 13})
    # Batch 1: 1 of 10, no breach, no rollback; batch 2: 5 of 20 = 25 % > 20 %: breach, its 4 back.
    assert [b.rolled_back for b in result.batches] == [0, 4]
    assert (result.stop_code, result.stop_batch) == (GATE_AFTER_BATCH, 2)


def test_an_all_at_once_upgrade_never_stops_on_health() -> None:
    result = run_what_if(plan_of(10), Policy(all_at_once=True), kind=Kind.MANUAL, failing_ids=set(range(10)))
    assert result.completed
    assert (result.upgraded, result.hit) == (10, 10)


def test_without_a_health_source_failures_go_unnoticed_as_in_the_simulator() -> None:
    blind = Timing(**{**TIMING.__dict__, "detects_failures": False})
    result = run_what_if(plan_of(4, 4), Policy(), failing_ids={0, 1, 2}, timing=blind)
    assert result.completed
    assert result.hit == 0


def test_an_upgrade_slower_than_the_timeout_fails_every_instance() -> None:
    slow = Timing(**{**TIMING.__dict__, "upgrade_seconds": 5000, "upgrade_timeout_seconds": 3600})
    result = run_what_if(plan_of(4, 4), Policy(), timing=slow)
    assert (result.stop_code, result.stop_batch, result.hit) == (GATE_AFTER_BATCH, 1, 4)


# --- the same picks as the simulator -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("share", [0.1, 0.3, 0.55, 1.0])
def test_the_what_if_fails_exactly_the_instances_the_simulator_would(share: float) -> None:
    scale_set = factories.outdated_scale_set(capacity=23)
    FaultProfile.objects.create(target=factories.NEW_KEY, never_healthy_share=share)
    simulator_picks = SimulatorDriver(scale_set)._chosen(factories.NEW_KEY, "never_healthy")
    ids = list(scale_set.instances.values_list("instance_id", flat=True))
    ours = failing_instances(
        set_instance_ids=ids, share=share, resource_id=scale_set.resource_id, target_key=factories.NEW_KEY
    )
    assert ours == simulator_picks
    assert len(ours) == round(share * 23)


@pytest.mark.django_db
def test_the_gate_count_of_unhealthy_instances_is_the_engines() -> None:
    scale_set = factories.outdated_scale_set(capacity=12)
    changes = [
        (0, {"health_state": "Unhealthy"}),
        (1, {"health_state": "Unknown"}),
        (2, {"health_state": "Initializing"}),  # booting: not held against the set
        (3, {"power_state": "stopped"}),
        (4, {"provisioning_state": "failed"}),
    ]
    for number, fields in changes:
        Instance.objects.filter(scale_set=scale_set, instance_id=number).update(**fields)
    ours = sum(preview.unhealthy_for_gates(i) for i in Instance.objects.filter(scale_set=scale_set))
    assert (ours, 12) == engine._set_health(scale_set.pk)
    assert ours == 4


# --- the engine ends where the what-if said ----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "share", "rollback_on_breach"),
    [
        (Kind.MANUAL_OS, 0.0, False),
        (Kind.MANUAL_OS, 0.3, False),
        (Kind.AUTOMATIC_OS, 0.15, False),
        (Kind.AUTOMATIC_OS, 0.5, False),
        (Kind.ROLLING_MODEL, 0.25, True),
        (Kind.ROLLING_MODEL, 0.1, False),
    ],
)
def test_the_engine_driven_through_the_simulator_ends_where_the_what_if_said(
    drive: Any, kind: str, share: float, rollback_on_breach: bool
) -> None:
    scale_set = factories.outdated_scale_set(
        capacity=20,
        enable_automatic_os_upgrade=False,
        rollback_failed_instances_on_policy_breach=rollback_on_breach,
        pause_time_between_batches="PT30S",
    )
    scale_set = ScaleSet.objects.select_related("region").get(pk=scale_set.pk)
    planned = services.plan_for(scale_set=scale_set, kind=kind)
    predicted = preview.preview_of(
        planned, action="rolling", title="Plan", overrides=Overrides(failure_share=share)
    ).whatif
    FaultProfile.objects.create(target=factories.NEW_KEY, never_healthy_share=share)
    run = drive(services.run_start(scale_set=scale_set, kind=kind))

    assert run.status == (RunStatus.COMPLETED if predicted.completed else RunStatus.FAULTED)
    assert (run.error_code or None) == predicted.stop_code
    started = run.batches.exclude(status__in=["Pending", "NotStarted"]).count()
    assert started == len(predicted.batches)
    upgraded = run.outcomes.exclude(status__in=[OutcomeStatus.PENDING, OutcomeStatus.SKIPPED]).count()
    assert upgraded == predicted.upgraded
    assert run.failed_count == predicted.hit
    assert run.rolled_back_count == predicted.rolled_back
    outcomes = dict(run.outcomes.values_list("instance_id_number", "status"))
    failed = {n for n, status in outcomes.items() if status in (OutcomeStatus.FAILED, OutcomeStatus.ROLLED_BACK)}
    touched = {n for n, status in outcomes.items() if status not in (OutcomeStatus.PENDING, OutcomeStatus.SKIPPED)}
    assert failed == set(predicted.failing_ids) & touched  # the same instances fail
    took = (run.ended_at - run.started_at).total_seconds()  # TIME_SCALE 1: simulated = real
    # The engine looks every ENGINE_POLL_SECONDS (1 s): at most a few seconds late per batch.
    assert predicted.total_seconds <= took <= predicted.total_seconds + 3 * max(1, len(predicted.batches))


# --- the JSON endpoint -----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_what_if_endpoint_redraws_with_a_stop_for_a_higher_failure_share() -> None:
    scale_set = factories.outdated_scale_set(capacity=20)
    client = Client()
    client.force_login(factories.user("olga", "operators"))
    url = f"/scale-sets/{scale_set.pk}/os-upgrade/"
    calm = client.post(url, {"preview": "whatif", "whatif-failure_percent": "0"}).json()
    assert calm["completed"]
    assert calm["stopBatch"] is None
    assert calm["summary"].startswith("Completes: all 5 batches run; 20 instances upgraded, 0 of them unhealthy")
    rough = client.post(url, {"preview": "whatif", "whatif-failure_percent": "40", "whatif-boot_seconds": "90"}).json()
    assert (rough["failureShare"], rough["bootSeconds"]) == (0.4, 90)
    assert rough["stopCode"] == GATE_AFTER_BATCH
    assert rough["stopBatch"] >= 1
    assert rough["summary"].startswith(f"Stops after batch {rough['stopBatch']} of 5")
    assert not UpgradeRun.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("fields", [{"whatif-failure_percent": "140"}, {"whatif-boot_seconds": "-1"}])
def test_a_bad_what_if_is_a_400_with_the_reason(fields: dict[str, str]) -> None:
    scale_set = factories.outdated_scale_set(capacity=5)
    client = Client()
    client.force_login(factories.user("olga", "operators"))
    response = client.post(f"/scale-sets/{scale_set.pk}/os-upgrade/", {"preview": "whatif", **fields})
    assert response.status_code == 400
    assert json.loads(response.content)["error"].startswith("What if: ")
