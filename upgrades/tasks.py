"""Celery tasks of the engine: thin, short and idempotent (arguments are ids)."""

from celery import shared_task
from django.db import OperationalError

from upgrades import engine, rollouts

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
    return engine.run_advance(run_id, wake=wake)


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=30)
def reconcile_task() -> int:
    """The beat's sweep: enqueue every run whose next action fell due — waits that ended,
    and runs whose worker died mid-step (their lease ran out)."""
    due = engine.due_run_ids()
    for run_id in due:
        run_advance_task.delay(run_id)
    return len(due)


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
