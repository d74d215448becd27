"""The beat stopped for a while, and two beats at once for a whole run."""

from __future__ import annotations

import datetime as dt
import random
import time

import pytest
import redis
from django.conf import settings

from fleet import clock
from tests.faults.conftest import events_of, finished, outdated_set, progressed_after, seeds, start_run, wait_seconds
from tests.faults.invariants import baseline_of, terminal_or_progressing
from tests.processes import wait_for
from upgrades.engine import WAKE_WINDOW_SECONDS
from upgrades.models import Phase, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

# A pause longer than the engine's wake window (at TIME_SCALE 200, PT8M is 2.4 s): nothing but
# the beat's reconciler ends it, so a run paused while the beat is down must wait for it.
LONG_PAUSE = "PT8M"
assert WAKE_WINDOW_SECONDS < 8 * 60 / 200


@pytest.mark.parametrize("seed", seeds(full=5, reduced=1))
def test_a_run_waits_while_the_beat_is_stopped_and_completes_when_it_is_back(seed, processes, check_and_record):
    chance = random.Random(seed)
    overdue = round(chance.uniform(1.0, 3.0), 2)  # how long past the pause's end the beat stays down
    print(f"seed {seed}: the beat stays down until {overdue} s after the pause ended")
    scale_set = outdated_set(2, pause=LONG_PAUSE)  # two batches: one pause, the one the beat misses
    baseline = baseline_of(scale_set)
    processes.start_beat()
    processes.start_worker("worker", concurrency=2)
    run = start_run(scale_set)

    def pausing() -> bool:
        run.refresh_from_db()
        return run.phase == Phase.PAUSE

    wait_for(pausing, timeout=120, what="the first pause", logs=processes.log_tail)
    processes.kill("beat")
    # The sweeps it already queued go too (no run task is queued in a long pause): only the
    # few the worker holds may still run, and they run long before the pause ends.
    redis.Redis.from_url(settings.REDIS_URL).delete(processes.queue)
    run.refresh_from_db()
    paused = (run.phase, run.current_batch, run.next_action_at)
    seen = events_of(run)
    wait_seconds(max((run.next_action_at - clock.now()).total_seconds(), 0) + overdue)
    run.refresh_from_db()
    # Due, but nothing moved it: only the reconciler ends a long pause.
    assert (run.phase, run.current_batch, run.next_action_at) == paused
    assert events_of(run) == seen
    assert run.next_action_at <= clock.now()
    assert terminal_or_progressing(run, within=dt.timedelta(0)) == []
    processes.start_beat()
    back = time.monotonic()
    progressed_after([run], seen, processes)
    recovery = time.monotonic() - back  # the new beat's boot included
    run = finished(run, processes)
    check_and_record("beat stopped", seed, run, baseline, faults=1, recovery=[recovery])
    assert run.status == RunStatus.COMPLETED, run.error_message


@pytest.mark.parametrize("seed", seeds(full=5, reduced=1))
def test_two_beats_for_a_whole_run_upgrade_no_instance_twice(seed, processes, check_and_record):
    scale_set = outdated_set(4, pause="PT0S")
    baseline = baseline_of(scale_set)
    processes.start_beat("beat")
    processes.start_beat("beat2")
    processes.start_worker("worker", concurrency=2)
    run = finished(start_run(scale_set), processes)
    assert all(child.poll() is None for child in processes.children.values()), processes.log_tail()
    check_and_record("two beats", seed, run, baseline, faults=1, recovery=[])
    assert run.status == RunStatus.COMPLETED, run.error_message
