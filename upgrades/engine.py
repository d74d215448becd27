"""The engine: moves one run one step forward, when it is due.

`run_advance(run_id)` is the whole loop body (ARCHITECTURE "the flow of one upgrade"):

1. In a short transaction holding the run row, it reads what is due, asks the planner, records
   the outcome and the next phase, and sets `next_action_at`. When the step needs the driver
   (upgrade or roll back a batch), it records the intent first (phase *_DISPATCHING, with a
   lease) and commits.
2. Outside any lock it calls the driver. Driver calls carry an operation id, and a driver acts
   on an instance at most once per operation id, so a call repeated after a crash is harmless.
3. A compare-and-swap confirms the dispatch (phase UPGRADING / ROLLING_BACK). If the worker died
   before that, the lease runs out and the next tick dispatches again (idempotently).

Waiting is never sleeping: a step that must wait sets `next_action_at` and returns; the beat
reconciler (upgrades.tasks.reconcile_task) picks up every run that fell due.

Not waiting when nothing is to be waited for: a step that leaves the run due at once (batch
upgraded → health wait → next batch …) enqueues the next step on commit, and a short pause
gets a short countdown; the simulator wakes the runs watching a set when it changed that set's
instances (`wake_runs_watching`, registered in UpgradesConfig.ready). The beat reconciler stays
the safety net: a wake-up lost with a worker only costs a poll interval (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q

from fleet import clock
from fleet import events as fleet_events
from fleet.drivers import driver_for
from fleet.images import ImageRef
from fleet.models import HealthState, Instance, PowerState, ProvisioningState, UpgradeOutcome
from upgrades import events
from upgrades.models import (
    TERMINAL,
    BatchStatus,
    InstanceOutcome,
    Kind,
    OutcomeStatus,
    Phase,
    RolloutTarget,
    RunEvent,
    RunStatus,
    UpgradeBatch,
    UpgradeRun,
)
from upgrades.planner import gate_after_batch, gate_before_batch, progress, should_roll_back

log = logging.getLogger(__name__)

GATE_MESSAGES = {
    "MaxUnhealthyInstancePercentExceededBeforeRollingUpgrade": (
        "{unhealthy} of {total} instances are unhealthy, more than maxUnhealthyInstancePercent ({limit}%): "
        "the rolling upgrade did not start."
    ),
    "MaxUnhealthyInstancePercentExceededInRollingUpgrade": (
        "{unhealthy} of {total} instances became unhealthy during the upgrade, more than "
        "maxUnhealthyInstancePercent ({limit}%): the upgrade stopped after the current batch."
    ),
    "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade": (
        "{unhealthy} of {total} upgraded instances are unhealthy, more than "
        "maxUnhealthyUpgradedInstancePercent ({limit}%): the upgrade stopped."
    ),
}


@dataclass(frozen=True)
class DriverCall:
    """A driver action decided under the run lock and made after it is released: a new OS
    disk from `image`, the previous OS disk back, or (extension upgrades) `extensions`
    installed ({name: version}: the new versions, or on rollback the previous ones)."""

    rollback: bool
    instance_pks: tuple[int, ...]
    image: ImageRef | None
    operation: str
    extensions: dict[str, str] | None = None


# A wait shorter than this (real seconds) is ended by a countdown task, not by the reconciler's
# next sweep; longer ones are the reconciler's (never a long countdown).
WAKE_WINDOW_SECONDS = 2.0
# Phases in which a run only watches its instances: a change to them may end the wait.
WATCHING_INSTANCES = (Phase.UPGRADING, Phase.HEALTH_WAIT, Phase.ROLLING_BACK)
# Steps one run_advance may chain when each leaves the run due at once (a bound, not a target:
# upgrading → health wait → pause → next batch is three).
_MORE_STEPS = 4


def poll_interval() -> dt.timedelta:
    return dt.timedelta(seconds=settings.ENGINE_POLL_SECONDS)


def dispatch_lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.ENGINE_DISPATCH_LEASE_SECONDS)


def due_run_ids(now: dt.datetime | None = None, limit: int = 500) -> list[int]:
    """Rolling-forward runs whose next action is due (the reconciler's query)."""
    moment = now or clock.now()
    return list(
        UpgradeRun.objects.filter(status=RunStatus.ROLLING_FORWARD, next_action_at__lte=moment)
        .order_by("next_action_at")
        .values_list("pk", flat=True)[:limit]
    )


def run_advance(run_id: int, *, wake: bool = False) -> bool:
    """Move a run one step forward if it is due; False when there was nothing to do.

    `wake`: the driver just changed the run's instances, so a run that only watches them
    (WATCHING_INSTANCES) looks now even if its next poll is later.

    What the step changed is told to open pages once, after the commit and after the driver
    call (one run summary, one heatmap delta per set): the driver is not kept waiting while
    this worker renders cells for pages."""
    publisher = _Publisher()
    token = _publishing.set(publisher)
    try:
        _driver_catch_up(run_id, wake=wake)
        stepped = _advance(run_id, wake=wake)
        if stepped is None:
            return False
        run, call = stepped
        try:
            if call is not None:
                _dispatch(run, call)
        finally:
            publisher.send()
        return True
    finally:
        _publishing.reset(token)


def _driver_catch_up(run_id: int, *, wake: bool) -> None:
    """Before a run watching its instances looks at them, the driver applies what fell due by
    now. Its own ticks run on the workers too, so after a worker outage they are late: a health
    wait that ended meanwhile must judge the instances as they are by now, not as the last
    tick left them (healthy instances were failed, and the run faulted: tests/faults).
    Outside the run's lock, like every driver call. Not when the driver woke the run: it has
    just applied its steps."""
    if wake:
        return
    run = (
        UpgradeRun.objects.filter(pk=run_id, status=RunStatus.ROLLING_FORWARD, phase__in=WATCHING_INSTANCES)
        .select_related("scale_set")
        .first()
    )
    if run is None:
        return
    now = clock.now()
    if run.next_action_at is not None and run.next_action_at > now:
        return  # not due: the step will not look
    driver_for(run.scale_set).advance(now)


def _advance(run_id: int, *, wake: bool = False) -> tuple[UpgradeRun, DriverCall | None] | None:
    """The locked part of run_advance: the step(s), committed; None when not due."""
    now = clock.now()
    with transaction.atomic():
        follow_up = _FollowUp(run_id)
        transaction.on_commit(follow_up.send)  # first: the next step starts before pages are told
        run = UpgradeRun.objects.select_for_update().select_related("scale_set").filter(pk=run_id).first()
        if run is None or run.status in TERMINAL:
            return None
        waiting = run.next_action_at is not None and run.next_action_at > now
        if waiting and not (wake and run.phase in WATCHING_INSTANCES):
            return None
        call = _step(run, now)
        for _ in range(_MORE_STEPS):
            # A step that leaves the run due at once (batch upgraded → health wait → healthy →
            # no pause → next batch) goes on in this transaction, not in another task.
            if call is not None or not _due(run, now):
                break
            call = _step(run, now)
        if call is None:
            follow_up.after(run)
    return run, call


def _due(run: UpgradeRun, now: dt.datetime) -> bool:
    return run.status not in TERMINAL and run.next_action_at is not None and run.next_action_at <= now


def wake_runs_watching(scale_set_ids: Collection[int]) -> list[int]:
    """The driver changed instances of these sets (and committed): the runs waiting on them
    look now rather than at their next poll. Fleet calls this through its hook
    (fleet.services.on_simulator_steps_applied), so fleet never imports upgrades."""
    if not scale_set_ids:
        return []
    run_ids = list(
        UpgradeRun.objects.filter(
            status=RunStatus.ROLLING_FORWARD, phase__in=WATCHING_INSTANCES, scale_set_id__in=list(scale_set_ids)
        ).values_list("pk", flat=True)
    )
    for run_id in run_ids:
        # Nothing written: should this task be lost, the run's own poll (next_action_at, at
        # most ENGINE_POLL_SECONDS away) still comes.
        _enqueue(run_id, wake=True)
    return run_ids


# --- steps (inside the run's transaction) ---------------------------------------------------


def _step(run: UpgradeRun, now: dt.datetime) -> DriverCall | None:
    if run.phase in (Phase.BEFORE_BATCH, Phase.PAUSE):
        return _before_batch(run, now)
    if run.phase == Phase.DISPATCHING:
        return _lease(run, now, _batch_call(run, rollback=False))
    if run.phase == Phase.UPGRADING:
        _check_upgraded(run, now)
        return None
    if run.phase == Phase.HEALTH_WAIT:
        return _check_health(run, now)
    if run.phase == Phase.ROLLBACK_DISPATCHING:
        return _lease(run, now, _batch_call(run, rollback=True))
    if run.phase == Phase.ROLLING_BACK:
        _check_rollback(run, now)
        return None
    log.error("run %s in unknown phase %s", run.pk, run.phase)
    return None


def _before_batch(run: UpgradeRun, now: dt.datetime) -> DriverCall | None:
    """Cancel, complete, refuse on the health gates (R-GATE-1/2), or start the next batch."""
    if run.cancel_requested:
        _finish(run, now, RunStatus.CANCELLED, "Cancelled by an operator; no new batch started.")
        return None
    index = run.current_batch + 1
    batch = UpgradeBatch.objects.filter(run=run, index=index).first()
    if batch is None:
        _finish(run, now, RunStatus.COMPLETED, "Every targeted instance is done.")
        return None
    unhealthy, total = _set_health(run.scale_set_id)
    policy = run.policy_snapshot
    code = gate_before_batch(first=index == 0, unhealthy=unhealthy, total=total, policy=policy)
    if code:
        message = GATE_MESSAGES[code].format(
            unhealthy=unhealthy, total=total, limit=policy.max_unhealthy_instance_percent
        )
        _finish(run, now, RunStatus.FAULTED, message, error_code=code)
        return None
    UpgradeBatch.objects.filter(pk=batch.pk).update(status=BatchStatus.IN_PROGRESS, started_at=now)
    outcomes = InstanceOutcome.objects.filter(run=run, batch=batch, status=OutcomeStatus.PENDING)
    rows = list(outcomes.values_list("instance_id", "instance_id_number"))
    outcomes.update(status=OutcomeStatus.IN_PROGRESS, started_at=now)
    Instance.objects.filter(pk__in=[pk for pk, _ in rows]).update(last_upgrade_outcome=UpgradeOutcome.NONE)
    RunEvent.objects.bulk_create(
        [RunEvent.of(run, now, "batch_started", batch_index=index, message=f"{len(rows)} instances")]
        + [
            RunEvent.of(run, now, OutcomeStatus.IN_PROGRESS, instance_id_number=n, from_state=OutcomeStatus.PENDING)
            for _, n in rows
        ]
    )
    run.current_batch = index
    run.phase = Phase.DISPATCHING
    run.next_action_at = now + dispatch_lease()
    _save(run)
    _publish_cells(run.scale_set_id, [pk for pk, _ in rows])
    return _batch_call(run, rollback=False)


def _check_upgraded(run: UpgradeRun, now: dt.datetime) -> None:
    """Wait until the driver has finished with every instance of the batch, then start the
    health wait (R-HEALTH-1)."""
    rows = _batch_instances(run, OutcomeStatus.IN_PROGRESS)
    busy = [
        r
        for r in rows
        if r["provisioning_state"] not in (ProvisioningState.SUCCEEDED, ProvisioningState.FAILED)
        or r["power_state"] in (PowerState.STARTING, PowerState.STOPPING)
    ]
    timed_out = bool(busy) and run.phase_deadline is not None and now >= run.phase_deadline
    if busy and not timed_out:
        _reschedule(run, min(now + poll_interval(), run.phase_deadline or now + poll_interval()))
        return
    UpgradeBatch.objects.filter(run=run, index=run.current_batch).update(upgraded_at=now)
    run.phase = Phase.HEALTH_WAIT
    # A driver that never finishes an instance (stopped mid-reimage, a lost host) must not
    # hold the run for ever: past the upgrade timeout the batch gets its verdict at once,
    # and the unfinished instances fail.
    run.phase_deadline = now if timed_out else now + clock.scaled(run.policy_snapshot.health_wait_seconds)
    run.next_action_at = now
    RunEvent.objects.create(
        run=run,
        at=now,
        to_state="health_wait",
        batch_index=run.current_batch,
        message=f"upgrade timed out for {len(busy)} instance(s)" if timed_out else "",
    )
    _save(run)


def _check_health(run: UpgradeRun, now: dt.datetime) -> DriverCall | None:
    """End the health wait when every instance is healthy (or failed to provision), or when
    the wait is over; then record outcomes, check R-GATE-3 and decide rollback."""
    rows = _batch_instances(run, OutcomeStatus.IN_PROGRESS)
    healthy = [r for r in rows if _healthy(r)]
    failed = [r for r in rows if not _healthy(r)]
    settled = all(r["provisioning_state"] == ProvisioningState.FAILED for r in failed)
    assert run.phase_deadline is not None
    if failed and not settled and now < run.phase_deadline:
        _reschedule(run, min(now + poll_interval(), run.phase_deadline))
        return None
    wait = _iso_seconds(run.policy_snapshot.health_wait_seconds)
    _record(
        run,
        now,
        healthy,
        OutcomeStatus.SUCCEEDED,
        UpgradeOutcome.SUCCEEDED,
        # an extension upgrade leaves the model as it is (R-EXT-1: the model names no version)
        model_version=None if run.kind == Kind.EXTENSION else run.target_model_version,
    )
    _record(
        run,
        now,
        failed,
        OutcomeStatus.FAILED,
        UpgradeOutcome.FAILED,
        reason=lambda r: _failure_reason(r, wait),
    )
    UpgradeBatch.objects.filter(run=run, index=run.current_batch).update(
        status=BatchStatus.FAILED if failed else BatchStatus.SUCCEEDED, ended_at=now
    )
    counts = InstanceOutcome.objects.filter(run=run).aggregate(
        upgraded=Count("pk", filter=~Q(status__in=[OutcomeStatus.PENDING, OutcomeStatus.SKIPPED])),
        unhealthy=Count(
            "pk",
            filter=Q(status__in=[OutcomeStatus.FAILED, OutcomeStatus.ROLLED_BACK, OutcomeStatus.ROLLBACK_FAILED]),
        ),
    )
    policy = run.policy_snapshot
    breach = gate_after_batch(upgraded_unhealthy=counts["unhealthy"], upgraded=counts["upgraded"], policy=policy)
    if breach:
        run.pending_error_code = breach
        run.error_message = GATE_MESSAGES[breach].format(
            unhealthy=counts["unhealthy"],
            total=counts["upgraded"],
            limit=policy.max_unhealthy_upgraded_instance_percent,
        )
    if failed and should_roll_back(run.kind, policy, breached=bool(breach)):
        run.phase = Phase.ROLLBACK_DISPATCHING
        run.next_action_at = now + dispatch_lease()
        RunEvent.objects.create(
            run=run, at=now, to_state="rolling_back", batch_index=run.current_batch, message=f"{len(failed)} instances"
        )
        _save(run)
        return _batch_call(run, rollback=True)
    _after_batch(run, now)
    return None


def _check_rollback(run: UpgradeRun, now: dt.datetime) -> None:
    """Rolled-back instances that come back healthy are RolledBack, the rest RollbackFailed."""
    rows = _batch_instances(run, OutcomeStatus.FAILED)
    waiting = [r for r in rows if not _healthy(r) and r["provisioning_state"] != ProvisioningState.FAILED]
    assert run.phase_deadline is not None
    if waiting and now < run.phase_deadline:
        _reschedule(run, min(now + poll_interval(), run.phase_deadline))
        return
    back = [r for r in rows if _healthy(r)]
    stuck = [r for r in rows if not _healthy(r)]
    _record(run, now, back, OutcomeStatus.ROLLED_BACK, UpgradeOutcome.ROLLED_BACK, from_state=OutcomeStatus.FAILED)
    _record(
        run,
        now,
        stuck,
        OutcomeStatus.ROLLBACK_FAILED,
        UpgradeOutcome.ROLLBACK_FAILED,
        from_state=OutcomeStatus.FAILED,
        reason=lambda r: (
            r["last_error"]
            or (
                "Not healthy with the previous extension versions either."
                if run.kind == Kind.EXTENSION
                else "Not healthy on the previous OS disk either."
            )
        ),
    )
    run.rolled_back_count += len(back)
    run.rollback_failed_count += len(stuck)
    if stuck and not run.rollback_error:
        run.rollback_error = f"{len(stuck)} instance(s) were not healthy after rollback."
    _after_batch(run, now)


def _after_batch(run: UpgradeRun, now: dt.datetime) -> None:
    """After a batch: fault (R-GATE-3), cancel (R-CANCEL-1), complete (R-LOOP-1) or pause
    before the next one (R-PAUSE-1)."""
    if run.pending_error_code:
        _finish(run, now, RunStatus.FAULTED, run.error_message, error_code=run.pending_error_code)
        return
    if run.cancel_requested:
        _finish(run, now, RunStatus.CANCELLED, "Cancelled by an operator after the batch in flight finished.")
        return
    if not UpgradeBatch.objects.filter(run=run, index=run.current_batch + 1).exists():
        _finish(run, now, RunStatus.COMPLETED, "Every targeted instance is done.")
        return
    run.phase = Phase.PAUSE
    run.phase_deadline = None
    run.next_action_at = now + clock.scaled(run.policy_snapshot.pause_seconds)
    _save(run)


def _finish(run: UpgradeRun, now: dt.datetime, status: str, message: str, *, error_code: str = "") -> None:
    run.status = status
    run.phase = Phase.DONE
    run.ended_at = now
    run.next_action_at = None
    run.phase_deadline = None
    if error_code:
        run.error_code = error_code
        run.error_message = message
    UpgradeBatch.objects.filter(run=run, status=BatchStatus.PENDING).update(status=BatchStatus.NOT_STARTED)
    RunEvent.objects.create(run=run, at=now, from_state=RunStatus.ROLLING_FORWARD, to_state=status, message=message)
    _save(run)
    run_id = run.pk
    transaction.on_commit(lambda: _wake_rollouts_of(run_id))


def _wake_rollouts_of(run_id: int) -> None:
    """A run a rollout started has ended: the rollout takes its verdict now, not at its poll."""
    from upgrades.tasks import rollout_advance_task

    for rollout_id in set(RolloutTarget.objects.filter(run_id=run_id).values_list("step__rollout_id", flat=True)):
        try:
            rollout_advance_task.apply_async((rollout_id,), {"wake": True})
        except Exception:
            log.warning("could not enqueue rollout %s; the reconciler will pick it up", rollout_id, exc_info=True)


def _lease(run: UpgradeRun, now: dt.datetime, call: DriverCall) -> DriverCall:
    """A dispatch whose confirmation never came (the worker died): dispatch again, under a new
    lease. Safe because the driver acts once per operation id."""
    log.warning("run %s: re-dispatching batch %s after an unconfirmed dispatch", run.pk, run.current_batch)
    _reschedule(run, now + dispatch_lease())
    return call


# --- the driver call (outside the lock) -------------------------------------------------------


def _batch_call(run: UpgradeRun, *, rollback: bool) -> DriverCall:
    status = OutcomeStatus.FAILED if rollback else OutcomeStatus.IN_PROGRESS
    pks = InstanceOutcome.objects.filter(run=run, batch__index=run.current_batch, status=status).values_list(
        "instance_id", flat=True
    )
    suffix = "rollback" if rollback else "upgrade"
    if run.kind == Kind.EXTENSION:
        return DriverCall(
            rollback=rollback,
            instance_pks=tuple(sorted(pks)),
            image=None,
            operation=f"run-{run.pk}-{suffix}",
            extensions=run.previous_extensions if rollback else run.target_extensions,
        )
    return DriverCall(
        rollback=rollback,
        instance_pks=tuple(sorted(pks)),
        image=None if rollback else ImageRef.from_key(run.target_image),
        operation=f"run-{run.pk}-{suffix}",
    )


def _dispatch(run: UpgradeRun, call: DriverCall) -> None:
    driver = driver_for(run.scale_set)
    instances = list(Instance.objects.filter(pk__in=call.instance_pks).order_by("pk"))
    if call.extensions is not None:
        # R-EXT-1: the new versions, or on rollback the previous ones; the OS disk stays.
        driver.install_extensions(instances, call.extensions, operation=call.operation)
    elif call.rollback:
        driver.restore_previous_os_disk(instances, operation=call.operation)
    else:
        assert call.image is not None
        driver.reimage(instances, call.image, operation=call.operation)
    now = clock.now()
    expected, confirmed = (
        (Phase.ROLLBACK_DISPATCHING, Phase.ROLLING_BACK) if call.rollback else (Phase.DISPATCHING, Phase.UPGRADING)
    )
    with transaction.atomic():
        follow_up = _FollowUp(run.pk)
        transaction.on_commit(follow_up.send)
        updated = UpgradeRun.objects.filter(
            pk=run.pk, status=RunStatus.ROLLING_FORWARD, phase=expected, current_batch=run.current_batch
        ).update(
            phase=confirmed,
            next_action_at=now,
            phase_deadline=now
            + clock.scaled(
                run.policy_snapshot.health_wait_seconds if call.rollback else settings.UPGRADE_TIMEOUT_SECONDS
            ),
        )
        if updated:
            follow_up.countdown = 0.0  # confirmed: look at the batch now
            _publish_run(run.pk)


# --- helpers ---------------------------------------------------------------------------------

_INSTANCE_FIELDS = ("pk", "instance_id", "health_state", "provisioning_state", "power_state", "last_error")


def _batch_instances(run: UpgradeRun, status: str) -> list[dict[str, Any]]:
    pks = InstanceOutcome.objects.filter(run=run, batch__index=run.current_batch, status=status).values("instance_id")
    return list(Instance.objects.filter(pk__in=pks).values(*_INSTANCE_FIELDS))


def _healthy(row: dict[str, Any]) -> bool:
    return (
        row["health_state"] == HealthState.HEALTHY
        and row["provisioning_state"] == ProvisioningState.SUCCEEDED
        and row["power_state"] == PowerState.RUNNING
    )


def _set_health(scale_set_id: int) -> tuple[int, int]:
    """(unhealthy, total) over the whole set, for R-GATE-1/2: unhealthy for any reason —
    health Unhealthy or Unknown, not running, or failed provisioning. Booting instances
    (Initializing) are not counted against the set."""
    counts = Instance.objects.filter(scale_set_id=scale_set_id).aggregate(
        total=Count("pk"),
        unhealthy=Count(
            "pk",
            filter=Q(health_state__in=[HealthState.UNHEALTHY, HealthState.UNKNOWN])
            | ~Q(power_state=PowerState.RUNNING)
            | Q(provisioning_state=ProvisioningState.FAILED),
        ),
    )
    return counts["unhealthy"], counts["total"]


def _record(
    run: UpgradeRun,
    now: dt.datetime,
    rows: list[dict[str, Any]],
    status: str,
    instance_outcome: str,
    *,
    from_state: str = OutcomeStatus.IN_PROGRESS,
    model_version: int | None = None,
    reason: Callable[[dict[str, Any]], str] | None = None,
) -> None:
    """Set these instances' outcomes (one UPDATE per distinct reason) and log each change.
    Without a `reason` the outcome keeps the one it had (a rolled-back instance still says
    why it failed)."""
    if not rows:
        return
    pks: list[int] = [r["pk"] for r in rows]
    if reason is None:
        InstanceOutcome.objects.filter(run=run, instance_id__in=pks).update(status=status, ended_at=now)
    else:
        by_reason: dict[str, list[int]] = {}
        for r in rows:
            by_reason.setdefault(reason(r), []).append(r["pk"])
        for text, reason_pks in by_reason.items():
            InstanceOutcome.objects.filter(run=run, instance_id__in=reason_pks).update(
                status=status, ended_at=now, reason=text[:500]
            )
    instance_changes: dict[str, Any] = {"last_upgrade_outcome": instance_outcome}
    if model_version is not None:
        instance_changes["model_version"] = model_version
    Instance.objects.filter(pk__in=pks).update(**instance_changes)
    RunEvent.objects.bulk_create(
        RunEvent.of(
            run, now, status, from_state=from_state, instance_id_number=r["instance_id"], batch_index=run.current_batch
        )
        for r in rows
    )
    _publish_cells(run.scale_set_id, pks)


def _failure_reason(row: dict[str, Any], wait: str) -> str:
    if row["provisioning_state"] in (ProvisioningState.UPDATING, ProvisioningState.CREATING):
        return f"The upgrade did not finish within {_iso_seconds(settings.UPGRADE_TIMEOUT_SECONDS)}."
    return row["last_error"] or f"Not healthy within the health wait ({wait})."


def _reschedule(run: UpgradeRun, at: dt.datetime) -> None:
    """Nothing changed but the time to look again: one UPDATE."""
    run.next_action_at = at
    UpgradeRun.objects.filter(pk=run.pk).update(next_action_at=at)


def _save(run: UpgradeRun, *, publish: bool = True) -> None:
    """Write the run with fresh progress counts (one aggregate query) and tell open pages."""
    counts = dict(InstanceOutcome.objects.filter(run=run).values_list("status").annotate(n=Count("pk")).order_by())
    counted = progress(counts)
    run.successful_count = counted.successful
    run.failed_count = counted.failed
    run.in_progress_count = counted.in_progress
    run.pending_count = counted.pending
    run.skipped_count = counts.get(OutcomeStatus.SKIPPED, 0)
    run.save()
    if publish:
        _publish_run(run.pk)


class _Publisher:
    """What one run_advance tells open pages, coalesced and sent when it is done."""

    def __init__(self) -> None:
        self.run_ids: set[int] = set()
        self.cells: dict[int, set[int]] = {}

    def send(self) -> None:
        for scale_set_id, pks in self.cells.items():
            fleet_events.instances_changed(scale_set_id, pks)
        for run_id in self.run_ids:
            events.run_changed(run_id)
        self.run_ids.clear()
        self.cells.clear()


_publishing: ContextVar[_Publisher | None] = ContextVar("engine_publishing", default=None)


def _publish_run(run_id: int) -> None:
    publisher = _publishing.get()
    if publisher is None:
        events.run_changed(run_id)
    else:
        publisher.run_ids.add(run_id)


def _publish_cells(scale_set_id: int, pks: list[int]) -> None:
    publisher = _publishing.get()
    if publisher is None:
        fleet_events.instances_changed(scale_set_id, pks)
    else:
        publisher.cells.setdefault(scale_set_id, set()).update(pks)


class _FollowUp:
    """The run's next step, enqueued on commit when it is due now or after a short pause.

    Registered as the transaction's first on-commit callback, so the next step is on its way
    before this worker spends time telling open pages; `countdown` is decided later, once the
    step knows where the run went (None: nothing to enqueue, the reconciler will see to it)."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.countdown: float | None = None

    def after(self, run: UpgradeRun) -> None:
        if run.status in TERMINAL or run.next_action_at is None:
            return
        delay = (run.next_action_at - clock.now()).total_seconds()
        if delay <= 0:
            self.countdown = 0.0
        elif run.phase == Phase.PAUSE and delay <= WAKE_WINDOW_SECONDS:
            # A pause ends at a known moment; a poll (UPGRADING, HEALTH_WAIT …) is the
            # reconciler's, or ends early when the driver wakes the run.
            self.countdown = delay

    def send(self) -> None:
        if self.countdown is not None:
            _enqueue(self.run_id, self.countdown)


def _enqueue(run_id: int, countdown: float = 0.0, *, wake: bool = False) -> None:
    """Enqueue run_advance_task; a broker hiccup is logged, not raised (the reconciler will
    find the run due anyway)."""
    from upgrades.tasks import run_advance_task

    try:
        if wake:
            run_advance_task.apply_async((run_id,), {"wake": True})
        elif countdown > 0:
            run_advance_task.apply_async((run_id,), countdown=countdown)
        else:
            run_advance_task.delay(run_id)
    except Exception:
        log.warning("could not enqueue run %s; the reconciler will pick it up", run_id, exc_info=True)


def _iso_seconds(seconds: float) -> str:
    whole = int(seconds)
    return f"PT{whole // 60}M" if whole and whole % 60 == 0 else f"PT{whole}S"


__all__ = ["run_advance", "due_run_ids", "wake_runs_watching"]
