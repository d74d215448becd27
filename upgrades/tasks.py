"""Celery tasks of the engine: thin, short and idempotent (arguments are ids)."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from fleet.tasks import redis_client
from upgrades import engine, rollouts

log = logging.getLogger(__name__)

# A step of a state machine (a run, a rollout): redelivered if the worker dies, retried when
# the database is briefly unavailable; the row lock makes a repeat harmless.
STEP_TASK = {
    "acks_late": True,
    "ignore_result": True,
    "soft_time_limit": 30,
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "max_retries": 5,
}


@shared_task(**STEP_TASK)
def run_advance_task(run_id: int, wake: bool = False) -> bool:
    """Move one run one step forward if it is due. Safe to run twice or concurrently: the
    run row is locked, and a step that is not due does nothing. `wake`: the driver changed
    the run's instances, so a run watching them looks now (engine.wake_runs_watching)."""
    _sent_by_reconciler_done(run_id)
    return engine.run_advance(run_id, wake=wake)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=30)
def reconcile_task() -> int:
    """The beat's sweep: enqueue every run whose next action fell due — waits that ended,
    and runs whose worker died mid-step (their lease ran out) — unless the sweep already sent
    it one that has not started yet. Without that, every sweep added a copy for every run
    still waiting in a busy queue: 27,000 queued copies at the end of bench.fleet, up to 300
    for one run, each a lock and a look for nothing."""
    sent = 0
    for run_id in engine.due_run_ids():
        if _reconciler_may_send(run_id):
            run_advance_task.delay(run_id)
            sent += 1
    return sent


def _sent_key(run_id: int) -> str:
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}:reconciler-sent:{run_id}"


def _reconciler_may_send(run_id: int) -> bool:
    """Claim the run's one task in the queue. The claim lasts a dispatch lease at most: a task
    lost on its way (it should not be: tasks are acknowledged late) is sent again after that.
    If Redis cannot answer, send anyway: a duplicate costs a look, a missing task a stall."""
    lease_ms = max(1, round(engine.dispatch_lease().total_seconds() * 1000))
    try:
        return bool(redis_client().set(_sent_key(run_id), 1, nx=True, px=lease_ms))
    except Exception:
        log.warning("could not claim run %s's reconciler task; sending it anyway", run_id, exc_info=True)
        return True


def _sent_by_reconciler_done(run_id: int) -> None:
    """The run's task has started: the next due moment may be sent again."""
    try:
        redis_client().delete(_sent_key(run_id))
    except Exception:  # the claim then lapses on its own after the lease
        log.warning("could not release run %s's reconciler claim", run_id, exc_info=True)


@shared_task(**STEP_TASK)
def rollout_advance_task(rollout_id: int, wake: bool = False) -> bool:
    """Move one rollout forward if it is due, or now when `wake` (one of its runs ended).
    Row-locked: safe twice or concurrently."""
    return rollouts.rollout_advance(rollout_id, wake=wake)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=30)
def automatic_upgrades_task() -> int:
    """The beat's sweep for automatic upgrades: cover every set that needs a newly latest
    image or extension version with a rollout (R-AUTO-2, R-EXT-1), then enqueue the rollouts
    that fell due."""
    rollouts.automatic_upgrades_scan()
    due = rollouts.due_rollout_ids()
    for rollout_id in due:
        rollout_advance_task.delay(rollout_id)
    return len(due)
