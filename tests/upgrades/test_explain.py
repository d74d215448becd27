"""Why is it waiting? The run panel's and the rollout pages' words for each gate and wait
(upgrades.explain), with the exact numbers the engine decides by, driven in simulated time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.html import escape

from fleet import clock
from fleet import services as fleet_services
from fleet.drivers import simulator
from fleet.models import HealthState, Instance, PowerState, ProvisioningState, Region, ScaleSet
from tests import factories
from tests.factories import APP_HEALTH_HTTP, NEW_VERSION
from upgrades import rollouts, services
from upgrades.explain import allowed, span_words
from upgrades.models import Kind, Rollout, RolloutStatus, RolloutTarget, RunStatus, StartedBy, TargetStatus, UpgradeRun
from upgrades.rollout_selectors import rollout_grid, scale_set_rollout_notices
from upgrades.selectors import run_detail, run_panel, run_summary

pytestmark = pytest.mark.django_db

BATCH_0 = [0, 5, 10, 15]  # update domain 0 of a 20-instance set (instance id % 5)


def explain(run: UpgradeRun) -> dict[str, Any]:
    run.refresh_from_db()
    found = run_summary(run)["explain"]
    assert found is not None, f"no explanation for a run in {run.phase}"
    return found


def left(until: dt.datetime | None) -> str:
    assert until is not None
    return span_words((until - clock.now()).total_seconds())


def settle() -> None:
    """Apply what the simulator has due now (maintenance turning instances unhealthy)."""
    simulator.advance(clock.now())


def healthy_in_batch(run: UpgradeRun) -> int:
    """The engine's own test of health, instance by instance (the test's independent count)."""
    ids = run.outcomes.filter(batch__index=run.current_batch, status="InProgress").values_list("instance_id", flat=True)
    return sum(
        1
        for i in Instance.objects.filter(pk__in=list(ids))
        if (i.health_state, i.provisioning_state, i.power_state)
        == (HealthState.HEALTHY, ProvisioningState.SUCCEEDED, PowerState.RUNNING)
    )


# --- the pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "percent", "most"), [(20, 20, 4), (4, 20, 0), (5, 20, 1), (10, 0, 0), (7, 100, 7), (21, 20, 4)]
)
def test_allowed_is_the_largest_count_the_planner_does_not_call_exceeding(total, percent, most):
    from upgrades.planner import exceeds

    assert allowed(total, percent) == most
    assert not exceeds(most, total, percent)
    assert most == total or exceeds(most + 1, total, percent)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 s"), (0.2, "1 s"), (45, "45 s"), (60, "1 m"), (252, "4 m 12 s"), (720, "12 m"), (7500, "2 h 5 m")],
)
def test_time_left_reads_like_the_browser_counts_it(seconds, words):
    assert span_words(seconds) == words


# --- the run panel ---------------------------------------------------------------------------


def test_the_pre_batch_gate_says_how_many_are_unhealthy_and_how_many_the_policy_allows(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[1, 2, 3, 4, 6], on=True)
    settle()
    run = services.os_upgrade_now(scale_set=scale_set)
    why = explain(run)
    assert why["kind"] == "gate_before_batch"
    assert why["headline"] == (
        "Waiting before batch 1: 5 of 20 instances are unhealthy; the policy allows at most 4 "
        "(maxUnhealthyInstancePercent 20 %)."
    )
    assert why["unblock"] == (
        "It goes on only if at most 4 are unhealthy when the check runs; otherwise the run stops (Faulted). "
        "Bring instances back (end maintenance, start stopped ones) — or cancel."
    )
    assert why["countdown_until"] is None
    assert why["detail"] == "Before the first batch the whole set's health is checked (R-GATE-1)."

    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[6], on=False)
    settle()
    why = explain(run)
    assert why["kind"] == "before_batch"
    assert why["headline"] == (
        "Starting batch 1 of 5 (4 instances): 4 of 20 instances are unhealthy; the policy allows at most 4 "
        "(maxUnhealthyInstancePercent 20 %)."
    )


def test_a_pause_counts_down_and_warns_when_the_gate_would_stop_the_run(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20, pause_time_between_batches="PT2M")
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "pause")
    why = explain(run)
    assert why["kind"] == "pause"
    assert why["headline"] == f"Pause between batches: batch 2 of 5 (4 instances) starts in {left(run.next_action_at)}."
    assert why["countdown_until"] == run.next_action_at.isoformat()
    assert why["before"] + why["left"] + why["after"] == why["headline"]
    assert why["detail"] == (
        "Before batch 2 the whole set's health is checked (R-GATE-2): now 0 of 20 instances are unhealthy; "
        "the policy allows at most 4 (maxUnhealthyInstancePercent 20 %)."
    )

    # Maintenance elsewhere in the set (R-GATE-2): the gate would stop the run when the pause ends.
    frozen_clock.advance(30)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[1, 2, 3, 4, 6], on=True)
    settle()
    why = explain(run)
    assert why["kind"] == "gate_before_batch"
    assert why["headline"] == (
        "Waiting before batch 2: 5 of 20 instances are unhealthy; the policy allows at most 4 "
        "(maxUnhealthyInstancePercent 20 %); the check runs in 1 m 30 s, when the pause ends."
    )
    assert why["before"] + why["left"] + why["after"] == why["headline"]
    assert why["detail"] == "Before batch 2 the whole set's health is checked (R-GATE-2)."
    assert why["countdown_until"] == run.next_action_at.isoformat()
    assert "at most 4 are unhealthy" in why["unblock"]
    # … and it does (the engine's verdict matches the words).
    assert drive(run).error_code == "MaxUnhealthyInstancePercentExceededInRollingUpgrade"


def test_while_upgrading_it_counts_the_batch_done_and_booting(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "upgrading")
    assert explain(run)["headline"] == "Reimaging batch 1 of 5 (4 instances: 0 done, 4 reimaging)."
    Instance.objects.filter(scale_set=scale_set, instance_id=0).update(
        provisioning_state=ProvisioningState.SUCCEEDED, power_state=PowerState.STARTING
    )
    Instance.objects.filter(scale_set=scale_set, instance_id=5).update(
        provisioning_state=ProvisioningState.SUCCEEDED, power_state=PowerState.RUNNING
    )
    why = explain(run)
    assert why["headline"] == "Reimaging batch 1 of 5 (4 instances: 1 done, 2 reimaging, 1 booting)."
    assert why["detail"] == "The health wait starts once the driver has finished with every instance of the batch."


def test_a_health_wait_counts_the_healthy_and_down_to_the_deadline(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    # Instance 0 (batch 1) stays unhealthy after its upgrade: maintenance holds it down.
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    run = drive(
        services.os_upgrade_now(scale_set=scale_set),
        until=lambda r: r.phase == "health_wait" and healthy_in_batch(r) == 3,
    )
    why = explain(run)
    assert why["kind"] == "health_wait"
    assert why["countdown_until"] == run.phase_deadline.isoformat()
    assert why["headline"] == (
        f"Health wait: 3 of 4 upgraded instances healthy; waiting up to {left(run.phase_deadline)} "
        "for the rest (it ends early once all are healthy)."
    )
    assert why["detail"] == (
        "The run stops (Faulted) if more than 0 of the 4 stay unhealthy (maxUnhealthyUpgradedInstancePercent 20 %)."
    )
    assert why["before"] + why["left"] + why["after"] == why["headline"]
    frozen_clock.advance(48)
    assert explain(run)["left"] == left(run.phase_deadline)
    # The words were right: instance 0 stays down, the run stops on R-GATE-3.
    assert drive(run).error_code == "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"


def test_a_later_health_wait_counts_every_instance_upgraded_so_far(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20, max_unhealthy_upgraded_instance_percent=40)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    run = drive(
        services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "health_wait" and r.current_batch == 1
    )
    assert (run.successful_count, run.failed_count, run.in_progress_count) == (3, 1, 4)
    assert explain(run)["detail"] == (
        "The run stops (Faulted) if more than 3 of the 8 instances upgraded so far end unhealthy: 1 already did, "
        "so more than 2 of these 4 staying unhealthy stops it (maxUnhealthyUpgradedInstancePercent 40 %)."
    )


def test_rolling_back_names_the_instances_and_counts_down(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
    run = drive(run, until=lambda r: r.phase == "rolling_back")
    why = explain(run)
    assert why["kind"] == "rolling_back"
    assert why["countdown_until"] == run.phase_deadline.isoformat()
    assert why["headline"] == (
        "Rolling back batch 1: 1 instance (0) gets its previous OS disk back; 0 of 1 healthy again; "
        f"waiting up to {left(run.phase_deadline)} (it ends early once all are)."
    )
    assert why["detail"] == "Instances healthy again end RolledBack, the others RollbackFailed."


def test_a_cancel_request_says_the_batch_in_flight_finishes_first(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20, pause_time_between_batches="PT2M")
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "upgrading")
    services.run_cancel(scale_set=scale_set)
    assert explain(run)["unblock"] == (
        "Cancel requested: no new batch will start; batch 1 finishes first (its health wait and any rollback), "
        "then the run ends Cancelled."
    )
    run = drive(run, until=lambda r: r.phase == "health_wait")
    assert explain(run)["unblock"].startswith("Cancel requested: no new batch will start; batch 1 finishes first")
    assert drive(run).status == RunStatus.CANCELLED


def test_a_cancel_request_in_a_pause_says_no_batch_starts(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20, pause_time_between_batches="PT1H")
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "pause")
    services.run_cancel(scale_set=scale_set)
    why = explain(run)
    assert (why["kind"], why["headline"]) == (
        "cancel_requested",
        "Cancel requested: no new batch will start; the run ends Cancelled before batch 2.",
    )


def test_a_finished_run_has_nothing_to_explain(frozen_clock, drive):
    run = drive(services.os_upgrade_now(scale_set=factories.outdated_scale_set(10)))
    assert run_summary(run)["explain"] is None


def test_the_run_page_and_the_panel_say_the_same(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "health_wait")
    panel = run_panel(scale_set.pk)
    assert panel is not None
    assert run_detail(run.pk).summary["explain"] == panel["explain"]


def test_the_explainer_is_drawn_on_first_paint(frozen_clock, drive, client):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    run = drive(
        services.os_upgrade_now(scale_set=scale_set),
        until=lambda r: r.phase == "health_wait" and healthy_in_batch(r) == 3,
    )
    client.force_login(factories.user("vera"))
    html = client.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    assert (
        '<p class="explain-headline">Health wait: 3 of 4 upgraded instances healthy; waiting up to '
        f'<span class="explain-countdown" data-until="{run.phase_deadline.isoformat()}">{left(run.phase_deadline)}'
        "</span> for the rest (it ends early once all are healthy).</p>"
    ) in html
    assert "maxUnhealthyUpgradedInstancePercent 20 %" in html


@pytest.mark.parametrize("capacity", [20, 200])
def test_a_set_in_a_health_wait_costs_no_query_more_whatever_its_size(frozen_clock, drive, client, capacity):
    scale_set = factories.outdated_scale_set(capacity, name=f"web{capacity}")
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "health_wait")
    client.force_login(factories.user(f"vera{capacity}"))
    # session + user + groups, the set, its target image, its instances, its extensions, the
    # latest run, its batches (the explainer's counts ride on that query), the audit entries:
    # as for any run
    with CaptureQueriesContext(connection) as queries:
        html = client.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    assert len(queries) == 10, "\n".join(q["sql"] for q in queries.captured_queries)
    assert "explain-countdown" in html


# --- rollouts --------------------------------------------------------------------------------


def paired_regions() -> tuple[Region, Region]:
    east, west = factories.region("eastus", zones=[]), factories.region("westus", zones=[])
    fleet_services.region_pair(region=east, partner=west)
    return east, west


def auto_set(name: str, where: Region) -> ScaleSet:
    return factories.scale_set(
        name, 4, where=where, zones=[], extensions=[APP_HEALTH_HTTP], enable_automatic_os_upgrade=True
    )


def test_a_rollout_in_its_trigger_delay_and_a_phase_waiting_on_its_pair(frozen_clock, drive_fleet, settings, client):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 1800
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    east, west = paired_regions()
    first, second = auto_set("web-east", east), auto_set("web-west", west)
    factories.publish(NEW_VERSION, east, west, at=clock.now())
    drive_fleet(until=lambda: Rollout.objects.exists())
    rollout = Rollout.objects.get()
    assert rollout.status == RolloutStatus.WAITING
    assert rollout.not_before == clock.now() + dt.timedelta(seconds=1800)

    (notice,) = scale_set_rollout_notices(first, extensions=list(first.extensions.all()), run=None)
    starts = f"{rollout.not_before.astimezone(dt.UTC):%H:%M} UTC"
    assert notice.message == (
        f"Scheduled: starts at {starts} (in 30 m), the trigger delay after the version was published."
    )
    assert notice.explanation is not None
    assert notice.explanation.countdown_until == rollout.not_before.isoformat()
    assert notice.due_at == rollout.not_before

    waiting = "Waiting for phase 1 (eastus) to finish: R-AVAIL-1, never two paired regions at once"
    (later,) = scale_set_rollout_notices(second, extensions=list(second.extensions.all()), run=None)
    assert later.message == f"{waiting} (westus and eastus are a geo pair)."
    assert later.due_at is None

    grid = rollout_grid(rollout)
    by_region = {step.region_name: step for step in grid.steps}
    assert by_region["eastus"].explanation is not None
    assert by_region["eastus"].explanation.headline == notice.message
    assert by_region["westus"].explanation is not None
    assert by_region["westus"].explanation.headline == later.message

    client.force_login(factories.user("vera"))
    page = client.get(f"/rollouts/{rollout.pk}/").content.decode()
    assert f"{waiting} (westus and eastus are a geo pair)." in page
    assert 'class="explain-countdown"' in page
    assert later.message in client.get(f"/scale-sets/{second.pk}/").content.decode()

    # Phase 1 runs: the paired region still waits for it.
    drive_fleet(until=lambda: RolloutTarget.objects.filter(status=TargetStatus.RUNNING).exists())
    (still,) = scale_set_rollout_notices(second, extensions=list(second.extensions.all()), run=None)
    assert still.message == f"{waiting} (westus and eastus are a geo pair)."
    (running,) = scale_set_rollout_notices(first, extensions=list(first.extensions.all()), run=None)
    assert running.is_running
    assert running.explanation is None


def test_a_first_automatic_upgrade_after_enabling_waits_the_longer_delay(frozen_clock, drive_fleet, settings, client):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 0
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 3 * 3600
    east = factories.region("eastus", zones=[])
    scale_set = auto_set("web", east)
    frozen_clock.advance(600)
    factories.publish(NEW_VERSION, east, at=clock.now())
    drive_fleet(until=lambda: RolloutTarget.objects.exists())
    target = RolloutTarget.objects.get()
    assert target.status == TargetStatus.SCHEDULED
    assert target.due_at - clock.now() == dt.timedelta(hours=3) - dt.timedelta(seconds=600)

    (notice,) = scale_set_rollout_notices(scale_set, extensions=list(scale_set.extensions.all()), run=None)
    when = f"{target.due_at.astimezone(dt.UTC):%H:%M} UTC"
    assert notice.message == (
        f"Scheduled: starts at {when} (in 2 h 50 m), the longer wait of a set's first automatic OS upgrade "
        "after it enabled them."
    )
    assert notice.explanation is not None
    assert notice.explanation.countdown_until == target.due_at.isoformat()
    grid = rollout_grid(Rollout.objects.get())
    assert grid.steps[0].targets[0].explanation == notice.explanation
    client.force_login(factories.user("vera"))
    # the page's queries and the set's rollouts, one query (tests/upgrades/test_rollout_pages.py)
    with CaptureQueriesContext(connection) as queries:
        html = client.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    assert len(queries) == 10
    why = notice.explanation
    ticking = f'<span class="explain-countdown" data-until="{why.countdown_until}"'
    assert escape(why.before) in html  # the words, with the time left ticking in between
    assert ticking in html
    assert escape(why.after) in html


def test_a_set_waiting_for_another_run_says_so(frozen_clock, settings):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 0
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    east = factories.region("eastus", zones=[])
    scale_set = auto_set("web", east)
    factories.publish(NEW_VERSION, east, at=clock.now())
    busy = services.os_upgrade_now(scale_set=scale_set)  # left rolling forward: it holds the set (R-ONE-1)
    for _ in range(50):  # the beat's rollout work only: the manual run is left rolling forward
        if RolloutTarget.objects.exclude(message="").exists():
            break
        rollouts.automatic_upgrades_scan(clock.now())
        for rollout_id in rollouts.due_rollout_ids(clock.now()):
            rollouts.rollout_advance(rollout_id)
        frozen_clock.advance(1)
    (notice,) = scale_set_rollout_notices(scale_set, extensions=list(scale_set.extensions.all()), run=None)
    assert notice.message == f"Waiting for run #{busy.pk} on the set to finish: one run at a time per set (R-ONE-1)."


def test_a_set_rolling_back_costs_one_query_more_for_the_instance_ids(frozen_clock, drive, client):
    # A rolling model upgrade rolls back on a breach when asked (R-ROLLBACK-1), and a run a
    # user started has no rollout notice to read: only the rollback's own query is added.
    scale_set = factories.outdated_scale_set(20, rollback_failed_instances_on_policy_breach=True)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    settle()
    drive(services.rolling_upgrade(scale_set=scale_set), until=lambda r: r.phase == "rolling_back")
    client.force_login(factories.user("vera"))
    # the ten of any run (above), and the ids of the instances rolled back (at most 20)
    with CaptureQueriesContext(connection) as queries:
        html = client.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    assert len(queries) == 11, "\n".join(q["sql"] for q in queries.captured_queries)
    assert "Rolling back batch 1: 1 instance (0) gets its previous OS disk back" in html
