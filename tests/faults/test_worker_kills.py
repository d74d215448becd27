"""SIGKILL of the worker (its whole process group, pool children included) at random points
of runs, then a new worker: nothing lost, nothing done twice."""

from __future__ import annotations

import random
import time

import pytest

from tests.faults.conftest import (
    FULL,
    events_of,
    finished,
    is_over,
    outdated_set,
    progressed_after,
    seeds,
    start_run,
    wait_seconds,
)
from tests.faults.invariants import baseline_of
from tests.processes import wait_for
from upgrades.models import RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

RUNS_PER_CASE = 2  # at once, on two sets: one kill lands at a different point of each
KILLS_PER_CASE = 3 if FULL else 2
# Two 10-instance runs log about 60 events (batches, each instance started and ended,
# rollbacks): a kill comes after a random number of them plus a random delay, so kills land
# in every phase (and while the new worker boots, takes its first task, or is mid-step).
EVENT_POINTS = range(2, 55)


@pytest.mark.parametrize("seed", seeds(full=10, reduced=1))
def test_worker_killed_at_random_points_loses_nothing_and_doubles_nothing(seed, processes, check_and_record):
    chance = random.Random(seed)
    points = sorted(chance.sample(EVENT_POINTS, KILLS_PER_CASE))
    delays = [round(chance.uniform(0.0, 0.8), 2) for _ in points]
    print(f"seed {seed}: kill after {points} events, each {delays} s later")
    scale_sets = [outdated_set(10, name=f"web{n}") for n in range(RUNS_PER_CASE)]
    baseline = baseline_of(*scale_sets)
    processes.start_beat()
    processes.start_worker("worker", concurrency=2)
    runs = [start_run(scale_set) for scale_set in scale_sets]
    phases, recovery = [], []
    for point, delay in zip(points, delays, strict=True):
        wait_for(
            lambda p=point: events_of(*runs) >= p or is_over(*runs),
            timeout=120,
            what=f"{point} events",
            logs=processes.log_tail,
        )
        wait_seconds(delay)
        if is_over(*runs):
            break
        phases.append([run.phase for run in runs])
        seen = events_of(*runs)
        processes.kill("worker")
        killed = time.monotonic()
        processes.start_worker("worker", concurrency=2)
        progressed_after(runs, seen, processes)
        recovery.append(time.monotonic() - killed)  # the new worker's boot included
    print(f"seed {seed}: killed in phases {phases}; moved on again after {[round(s, 1) for s in recovery]} s")
    for run in runs:
        finished(run, processes)
        check_and_record("worker SIGKILL", seed, run, baseline, faults=len(phases), recovery=recovery)
    assert phases, "the runs ended before the first kill"
    for run in runs:
        assert run.status == RunStatus.COMPLETED, run.error_message
        assert run.rolled_back_count == run.failed_count > 0
