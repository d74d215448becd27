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


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=60)
def local_steps_task() -> int:
    """Carry out the local-process driver's due steps (beat, every second, and at once after an
    action). Idempotent: rows are claimed for a lease, and every step may be carried out again."""
    from fleet.drivers.local.driver import next_probe_at, next_step_at

    applied = services.local_driver_steps()
    _tick_soon("local-steps", local_steps_task, next_step_at())
    _tick_soon("local-probe", local_probe_task, next_probe_at())  # processes just started
    return applied


@shared_task(acks_late=True, ignore_result=True, soft_time_limit=60)
def local_probe_task() -> int:
    """Probe the local-process driver's due processes (beat, every second). One round at a
    time: a round still probing when the next tick comes makes that tick do nothing."""
    # A round lasts about its slowest probe (5 s at most); a worker killed mid-round leaves the
    # lock to expire soon after.
    lock = redis_client().lock(f"{settings.CELERY_TASK_DEFAULT_QUEUE}:local-probe-round", timeout=15)
    if not lock.acquire(blocking=False):
        return 0
    try:
        changed = services.local_driver_probes()
    finally:
        try:
            lock.release()
        except Exception:  # expired meanwhile: the next round takes it
            log.warning("local probe round lock expired before release", exc_info=True)
    from fleet.drivers.local.driver import next_probe_at

    # Probes fall due on their own slots (interval after boot): the round comes on time, not
    # at the beat's next tick.
    _tick_soon("local-probe", local_probe_task, next_probe_at())
    return changed


def _tick_soon(name: str, task: object, due: dt.datetime | None) -> None:
    """Ask for one run of `task` at `due` if it comes within TICK_WINDOW_SECONDS (once per
    moment however many ask); later ones are left to the beat."""
    if due is None:
        return
    delay = (due - clock.now()).total_seconds()
    if delay > TICK_WINDOW_SECONDS:
        return
    key = f"{settings.CELERY_TASK_DEFAULT_QUEUE}:{name}:{round(due.timestamp() * 1000)}"
    try:
        if redis_client().set(key, 1, nx=True, px=round((max(delay, 0) + 60) * 1000)):
            task.apply_async(countdown=max(delay, 0))  # type: ignore[attr-defined]
    except Exception:  # an acceleration only
        log.warning("could not schedule a %s tick; the beat will", name, exc_info=True)


_clients: dict[int, redis.Redis] = {}


def redis_client() -> redis.Redis:
    """One client per process (pool children fork: a client is never shared across them)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients.clear()
        _clients[pid] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return _clients[pid]
