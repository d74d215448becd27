"""The invariant checkers find what they are meant to find: a run driven to its end in
simulated time passes them all, and each corruption of that state fails the right one (each
corruption is rolled back before the next, so one driven run serves them all)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.db import transaction
from django.db.models import Min

from fleet import clock
from fleet.drivers import simulator
from fleet.models import DataDisk, Instance, ProvisioningState
from tests.faults import invariants
from tests.faults.conftest import outdated_set, start_run
from upgrades import engine
from upgrades.models import TERMINAL, InstanceOutcome, OutcomeStatus, Phase, RunEvent, RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def ended(settings, monkeypatch):
    """A run driven to its end in simulated time (no worker: the test moves the clock), with
    the baseline taken before it started."""
    settings.TIME_SCALE = 1.0
    settings.ENGINE_POLL_SECONDS = 60.0  # fewer steps through the health wait of the bad instance
    monkeypatch.setattr("upgrades.tasks.run_advance_task.delay", lambda *args, **kwargs: None)
    monkeypatch.setattr("upgrades.tasks.run_advance_task.apply_async", lambda *args, **kwargs: None)
    with clock.frozen(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)) as frozen:
        scale_set = outdated_set(10, pause="PT0S")
        baseline = invariants.baseline_of(scale_set)
        run = start_run(scale_set)
        for _ in range(2_000):
            now = clock.now()
            simulator.advance(now)
            engine.run_advance(run.pk)
            run.refresh_from_db()
            if run.status in TERMINAL:
                break
            due = [run.next_action_at, Instance.objects.aggregate(t=Min("driver_due_at"))["t"]]
            upcoming = min(t for t in due if t is not None)
            frozen.advance(max((upcoming - now).total_seconds(), 0.001))
        yield run, baseline


def all_problems(run: UpgradeRun, baseline: invariants.Baseline) -> list[str]:
    return invariants.problems_after(run, baseline, within=dt.timedelta(seconds=30))


def test_a_run_that_ended_cleanly_breaks_no_invariant(ended):
    run, baseline = ended
    assert run.status == RunStatus.COMPLETED
    assert run.rolled_back_count == 1  # the set's one bad instance: every path of the checks is used
    assert all_problems(run, baseline) == []


def corrupted(run: UpgradeRun, corrupt: Callable[[], object], check: Callable[[], list[str]]) -> list[str]:
    """What `check` finds after `corrupt`, with the corruption rolled back afterwards."""
    with transaction.atomic():
        corrupt()
        run.refresh_from_db()
        found = check()
        transaction.set_rollback(True)
    run.refresh_from_db()
    return found


def test_each_corruption_is_found_by_its_checker(ended):
    run, baseline = ended
    instance = Instance.objects.filter(scale_set=run.scale_set).order_by("pk").first()
    number = instance.instance_id
    operation = f"run-{run.pk}-upgrade"
    prefix, _, disk_number = baseline.os_disks[instance.pk].rpartition("_")
    first_disk, second_disk = DataDisk.objects.filter(instance__scale_set=run.scale_set)[:2]
    succeeded = InstanceOutcome.objects.filter(run=run, status=OutcomeStatus.SUCCEEDED).first()
    upgraded_twice = lambda: invariants.upgraded_at_most_once(run, baseline)  # noqa: E731
    counts = lambda: invariants.counts_consistent(run)  # noqa: E731
    stuck = lambda: invariants.none_stuck(run)  # noqa: E731

    # the driver applied the run's operation twice to one instance
    assert corrupted(
        run, lambda: Instance.objects.filter(pk=instance.pk).update(driver_operations=[operation] * 2), upgraded_twice
    ) == [f"instance {number}: the driver applied {operation} 2 times"]
    # two new OS disks for one instance
    two_disks = lambda: Instance.objects.filter(pk=instance.pk).update(os_disk=f"{prefix}_{int(disk_number) + 2}")  # noqa: E731
    assert len(corrupted(run, two_disks, upgraded_twice)) == 1
    # the log starts an instance a second time: counted twice, and the log no longer chains
    started_again = lambda: RunEvent.objects.create(  # noqa: E731
        run=run, at=clock.now(), instance_id_number=number, from_state="Pending", to_state=OutcomeStatus.IN_PROGRESS
    )
    assert f"instance {number}: started 2 times in the log" in corrupted(run, started_again, upgraded_twice)
    assert corrupted(run, started_again, counts)

    # a data disk rewritten, another gone
    def disks_touched() -> None:
        DataDisk.objects.filter(pk=first_disk.pk).update(checksum="0" * 64)
        DataDisk.objects.filter(pk=second_disk.pk).delete()

    found = corrupted(run, disks_touched, lambda: invariants.disks_unchanged(baseline))
    assert len(found) == 3, found  # one gone; one changed, and no longer its content's digest
    # progress counts that disagree with the outcomes
    one_more = lambda: UpgradeRun.objects.filter(pk=run.pk).update(successful_count=run.successful_count + 1)  # noqa: E731
    assert corrupted(run, one_more, counts) == [
        f"run {run.pk}: successful_count is {run.successful_count + 1}, the outcomes say {run.successful_count}"
    ]
    # an outcome the log does not explain (and the counts no longer match either)
    flipped = lambda: InstanceOutcome.objects.filter(pk=succeeded.pk).update(status=OutcomeStatus.FAILED)  # noqa: E731
    assert f"instance {succeeded.instance_id_number}: the log ends at Succeeded, the outcome says Failed" in corrupted(
        run, flipped, counts
    )
    # an instance left mid-reimage with no driver step due
    updating = lambda: Instance.objects.filter(pk=instance.pk).update(  # noqa: E731
        provisioning_state=ProvisioningState.UPDATING, driver_due_at=None
    )
    assert corrupted(run, updating, stuck) == [f"instance {number} stuck updating/running with nothing due"]
    # an ended run with an outcome still in flight
    in_flight = lambda: InstanceOutcome.objects.filter(pk=succeeded.pk).update(status=OutcomeStatus.IN_PROGRESS)  # noqa: E731
    assert len(corrupted(run, in_flight, stuck)) == 1
    # a rolling run with nothing due, or due too late
    within = dt.timedelta(seconds=30)
    run.status, run.phase, run.next_action_at = RunStatus.ROLLING_FORWARD, Phase.PAUSE, None
    assert invariants.terminal_or_progressing(run, within=within)
    run.next_action_at = clock.now() + dt.timedelta(minutes=5)
    assert invariants.terminal_or_progressing(run, within=within)
    run.next_action_at = clock.now() + dt.timedelta(seconds=5)
    assert invariants.terminal_or_progressing(run, within=within) == []
    # and with every corruption rolled back, nothing is found
    run.refresh_from_db()
    assert all_problems(run, baseline) == []
