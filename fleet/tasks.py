"""Celery tasks of the fleet: thin, short, idempotent."""

from __future__ import annotations

import datetime as dt
import logging
import os

import redis
from celery import shared_task
from django.conf import settings

from fleet import clock, services

log = logging.getLogger(__name__)

# A simulated step due sooner than this (real seconds) gets a tick of its own, on time; later
# ones are left to the beat, whose ticks come closer meanwhile (so with a beat interval under
# this window, every step is applied on time). Never a long countdown.
TICK_WINDOW_SECONDS = 2.0


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=30)
def simulator_advance_task() -> int:
    """Apply the simulator's due state changes (beat, every second, and the precise ticks
    asked by simulator_tick_at). Idempotent: a step is applied once because it leaves the
    plan in the same transaction. Then asks for a tick at the next due step if it is near."""
    from fleet.drivers import simulator

    applied = services.simulator_advance()
    simulator_tick_at(simulator.next_due_at())
    return applied


def simulator_tick_at(due: dt.datetime | None) -> None:
    """Enqueue simulator_advance_task for the moment `due`, if it comes within the window.

    One tick per due moment however many ask (the beat, every tick, the driver's action): the
    first to claim the moment in Redis sends it. Only an acceleration: a tick lost with a
    worker leaves the step to the beat's next tick."""
    if due is None:
        return
    delay = (due - clock.now()).total_seconds()
    if delay > TICK_WINDOW_SECONDS:
        return
    key = f"{settings.CELERY_TASK_DEFAULT_QUEUE}:simulator-tick:{round(due.timestamp() * 1000)}"
    try:
        if not redis_client().set(key, 1, nx=True, px=round((max(delay, 0) + 60) * 1000)):
            return  # someone already asked for this moment
        simulator_advance_task.apply_async(countdown=max(delay, 0))
    except Exception:  # never fail the caller (a driver action, a tick) over an acceleration
        log.warning("could not schedule a simulator tick; the beat will apply the step", exc_info=True)


_clients: dict[int, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """One client per process (pool children fork: a client is never shared across them)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return _clients[pid]
