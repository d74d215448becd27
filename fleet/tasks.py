"""Celery tasks of the fleet: thin, short, idempotent."""

from celery import shared_task

from fleet import services


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=30)
def simulator_advance_task() -> int:
    """Apply the simulator's due state changes (beat, every second). Idempotent: a step is
    applied once because it leaves the plan in the same transaction."""
    return services.simulator_advance()
