"""Celery tasks of the engine: thin, short and idempotent (arguments are ids)."""

from celery import shared_task
from django.db import OperationalError

from upgrades import engine


@shared_task(
    acks_late=True,
    ignore_result=True,
    soft_time_limit=30,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
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
