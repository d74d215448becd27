"""What must hold after any fault, written once and checked after each one.

Each checker returns a list of problems (empty when the invariant holds), so one failure
report names every broken invariant at once; `assert_invariants` runs them all. They read
only what the engine and the simulator record: the run row, its InstanceOutcome rows, its
RunEvent log, and the instances' disks and driver operation ids.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass

from fleet import clock
from fleet.models import DataDisk, Instance, PowerState, ProvisioningState, ScaleSet
from upgrades.models import TERMINAL, InstanceOutcome, OutcomeStatus, Phase, RunEvent, UpgradeRun

# States an instance passes through; one left in them with no driver step due never leaves.
TRANSITIONAL_PROVISIONING = {ProvisioningState.CREATING, ProvisioningState.UPDATING}
TRANSITIONAL_POWER = {PowerState.STARTING, PowerState.STOPPING, PowerState.DEALLOCATING}
# Outcome statuses an instance event may move between, in the order the engine moves them.
OUTCOME_STATES = {s.value for s in OutcomeStatus}
# Phases in which outcomes may be InProgress (the batch in flight), or Failed awaiting rollback.
IN_FLIGHT_PHASES = {Phase.DISPATCHING, Phase.UPGRADING, Phase.HEALTH_WAIT}


@dataclass(frozen=True)
class Baseline:
    """The fleet as it was before the fault: data disks and each instance's OS disk."""

    disks: dict[int, tuple[int, int, str, str]]  # pk -> (instance pk, lun, content seed, checksum)
    os_disks: dict[int, str]  # instance pk -> OS disk id


def baseline_of(*scale_sets: ScaleSet) -> Baseline:
    ids = [s.pk for s in scale_sets]
    disks = DataDisk.objects.filter(instance__scale_set_id__in=ids)
    return Baseline(
        disks={
            pk: (instance, lun, seed, checksum)
            for pk, instance, lun, seed, checksum in disks.values_list(
                "pk", "instance_id", "lun", "content_seed", "checksum"
            )
        },
        os_disks=dict(Instance.objects.filter(scale_set_id__in=ids).values_list("pk", "os_disk")),
    )


def _disk_number(os_disk: str) -> int:
    """OS disks are named <set>_<id>_OsDisk_<n>: n counts every disk the instance had."""
    number = os_disk.rpartition("_")[2]
    return int(number) if number.isdigit() else 1


# --- the checkers ----------------------------------------------------------------------------


def terminal_or_progressing(run: UpgradeRun, *, within: dt.timedelta, now: dt.datetime | None = None) -> list[str]:
    """A run is over, or it has a next action due within `within` (the reconciler finds it)."""
    if run.status in TERMINAL:
        return []
    if run.next_action_at is None:
        return [f"run {run.pk} is {run.status} at {run.phase} with nothing due"]
    late = run.next_action_at - (now or clock.now())
    if late > within:
        return [f"run {run.pk} at {run.phase} is next due in {late.total_seconds():.1f}s, beyond {within}"]
    return []


def upgraded_at_most_once(run: UpgradeRun, baseline: Baseline) -> list[str]:
    """No instance was upgraded twice by this run: the driver acted at most once per operation
    id, the log starts each instance at most once, and each got at most one new OS disk."""
    problems = []
    operation = f"run-{run.pk}-upgrade"
    rows = Instance.objects.filter(pk__in=run.outcomes.values("instance_id")).values_list(
        "pk", "instance_id", "os_disk", "driver_operations"
    )
    for pk, number, os_disk, operations in rows:
        if operations.count(operation) > 1:
            problems.append(f"instance {number}: the driver applied {operation} {operations.count(operation)} times")
        before = baseline.os_disks.get(pk)
        if before is not None and _disk_number(os_disk) - _disk_number(before) not in (0, 1):
            problems.append(f"instance {number}: OS disk went from {before} to {os_disk}")
    started = Counter(
        RunEvent.objects.filter(run=run, to_state=OutcomeStatus.IN_PROGRESS).values_list(
            "instance_id_number", flat=True
        )
    )
    problems += [f"instance {n}: started {count} times in the log" for n, count in started.items() if count > 1]
    batches = Counter(RunEvent.objects.filter(run=run, to_state="batch_started").values_list("batch_index", flat=True))
    problems += [f"batch {index}: started {count} times" for index, count in batches.items() if count > 1]
    return problems


def none_stuck(run: UpgradeRun) -> list[str]:
    """No outcome in flight outside the phases that own it, and no instance of the set in a
    transitional state with no driver step due (it would stay there for ever)."""
    problems = []
    in_progress = run.outcomes.filter(status=OutcomeStatus.IN_PROGRESS).count()
    if in_progress and (run.status in TERMINAL or run.phase not in IN_FLIGHT_PHASES):
        problems.append(f"run {run.pk} ({run.status}, {run.phase}): {in_progress} outcomes still InProgress")
    stranded = Instance.objects.filter(scale_set_id=run.scale_set_id, driver_due_at__isnull=True).filter(
        provisioning_state__in=TRANSITIONAL_PROVISIONING
    ) | Instance.objects.filter(
        scale_set_id=run.scale_set_id, driver_due_at__isnull=True, power_state__in=TRANSITIONAL_POWER
    )
    problems += [
        f"instance {number} stuck {provisioning}/{power} with nothing due"
        for number, provisioning, power in stranded.values_list("instance_id", "provisioning_state", "power_state")
    ]
    return problems


def disks_unchanged(baseline: Baseline) -> list[str]:
    """The same data disk rows as before, each with its checksum, and that checksum still the
    digest of the disk's content (R-UPG-1: no upgrade or rollback touches data disks)."""
    problems = []
    now = {
        pk: (instance, lun, seed, checksum)
        for pk, instance, lun, seed, checksum in DataDisk.objects.filter(
            instance_id__in={row[0] for row in baseline.disks.values()}
        ).values_list("pk", "instance_id", "lun", "content_seed", "checksum")
    }
    gone, new = sorted(set(baseline.disks) - set(now)), sorted(set(now) - set(baseline.disks))
    if gone or new:
        problems.append(f"data disks changed: gone {gone}, new {new}")
    for pk, row in now.items():
        if pk in baseline.disks and row != baseline.disks[pk]:
            problems.append(f"data disk {pk}: {baseline.disks[pk]} became {row}")
        if row[3] != DataDisk.checksum_of(row[2]):
            problems.append(f"data disk {pk}: checksum {row[3][:12]}… is not the digest of its content")
    return problems


def counts_consistent(run: UpgradeRun) -> list[str]:
    """The run's progress counts agree with its outcome rows, and each outcome with the event
    log: an instance's events chain (each from-state is the previous to-state, from Pending)
    and end at the outcome's status; skipped instances have no events."""
    problems = []
    statuses = Counter(run.outcomes.values_list("status", flat=True))
    failed = (
        statuses[OutcomeStatus.FAILED] + statuses[OutcomeStatus.ROLLED_BACK] + statuses[OutcomeStatus.ROLLBACK_FAILED]
    )
    expected = {
        "successful_count": statuses[OutcomeStatus.SUCCEEDED],
        "failed_count": failed,
        "in_progress_count": statuses[OutcomeStatus.IN_PROGRESS],
        "pending_count": statuses[OutcomeStatus.PENDING],
        "skipped_count": statuses[OutcomeStatus.SKIPPED],
        "rolled_back_count": statuses[OutcomeStatus.ROLLED_BACK],
        "rollback_failed_count": statuses[OutcomeStatus.ROLLBACK_FAILED],
    }
    for field, count in expected.items():
        if getattr(run, field) != count:
            problems.append(f"run {run.pk}: {field} is {getattr(run, field)}, the outcomes say {count}")
    chains: dict[int, list[tuple[str, str]]] = defaultdict(list)
    events = RunEvent.objects.filter(run=run, instance_id_number__isnull=False, to_state__in=OUTCOME_STATES)
    for number, from_state, to_state in events.order_by("at", "pk").values_list(
        "instance_id_number", "from_state", "to_state"
    ):
        chains[number].append((from_state, to_state))
    outcomes = dict(InstanceOutcome.objects.filter(run=run).values_list("instance_id_number", "status"))
    for number, status in outcomes.items():
        state = OutcomeStatus.PENDING.value
        for from_state, to_state in chains.get(number, []):
            if from_state != state:
                problems.append(f"instance {number}: logged {from_state} → {to_state} while it was {state}")
            state = to_state
        if status == OutcomeStatus.SKIPPED:
            if chains.get(number):
                problems.append(f"instance {number}: skipped, yet the log moves it")
        elif state != status:
            problems.append(f"instance {number}: the log ends at {state}, the outcome says {status}")
    problems += [f"instance {n}: in the log but not an outcome of run {run.pk}" for n in set(chains) - set(outcomes)]
    return problems


def problems_after(run: UpgradeRun, baseline: Baseline, *, within: dt.timedelta) -> list[str]:
    run.refresh_from_db()
    return (
        terminal_or_progressing(run, within=within)
        + upgraded_at_most_once(run, baseline)
        + none_stuck(run)
        + disks_unchanged(baseline)
        + counts_consistent(run)
    )


def assert_invariants(
    runs: list[UpgradeRun], baseline: Baseline, *, within: dt.timedelta = dt.timedelta(seconds=30)
) -> None:
    problems = [p for run in runs for p in problems_after(run, baseline, within=within)]
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
