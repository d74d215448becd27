"""Fault injection: real faults in real worker, beat, Redis and database processes while real
runs roll forward, then the invariants of tests/faults/invariants.py.

Two sizes. The suite (`make unit`, `make test`) runs the reduced form: a few runs per fault.
`make faults` sets FAULTS_FULL=1 and runs each fault many times (20 worker kills, …).
Every random choice comes from a seed printed with the test's id (`[seed1123]`); FAULTS_SEED
moves the base seed, and `-k seed1130` re-runs one case.

At the end of the session a table of every run (fault, seed, outcome, recovery time and the
invariant counts) is printed: docs/RELIABILITY.md quotes it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from config.celery import app as celery_app
from fleet.models import ScaleSet
from tests import factories
from tests.faults import invariants
from tests.processes import Processes, wait_for
from upgrades.models import TERMINAL, Kind, RunEvent, UpgradeRun

FULL = os.environ.get("FAULTS_FULL", "").lower() not in ("", "0", "false", "no")
BASE_SEED = int(os.environ.get("FAULTS_SEED", "1123"))

TIME_SCALE = 200.0
WORKER_ENV = {
    "TIME_SCALE": str(TIME_SCALE),
    "ENGINE_POLL_SECONDS": "0.1",
    "ENGINE_DISPATCH_LEASE_SECONDS": "1.5",
    "BEAT_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture(scope="session", autouse=True)
def _no_stray_sessions_at_teardown(django_db_setup, django_db_blocker):
    """A killed worker may leave a PostgreSQL session behind for a moment: end them before the
    test database is dropped, so the next run can create it."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )


def seeds(*, full: int, reduced: int) -> list[object]:
    """Seeds for one fault: `full` cases under `make faults`, `reduced` in the suite."""
    return [pytest.param(BASE_SEED + n, id=f"seed{BASE_SEED + n}") for n in range(full if FULL else reduced)]


@pytest.fixture
def start_processes(settings) -> Iterator[Callable[..., Processes]]:
    """Makes the worker/beat launcher (extra environment for the processes as arguments);
    every process is stopped at the end, and tasks enqueued here reach its queue."""
    settings.TIME_SCALE = TIME_SCALE
    made: list[Processes] = []
    previous_queue = celery_app.conf.task_default_queue

    def start(**env: str) -> Processes:
        processes = Processes(**WORKER_ENV, **env)
        celery_app.conf.task_default_queue = processes.queue
        made.append(processes)
        return processes

    try:
        yield start
    finally:
        for processes in made:
            # Killed, not stopped: a warm shutdown waits for tasks, and nothing here needs them.
            for name in list(processes.children):
                processes.kill(name)
        celery_app.conf.task_default_queue = previous_queue


@pytest.fixture
def processes(start_processes) -> Processes:
    return start_processes()


def outdated_set(capacity: int = 20, *, name: str = "web", pause: str = "PT1M") -> ScaleSet:
    """A set with a newer image published, a tenth of its instances never healthy on it: an
    automatic upgrade rolls those back and completes (at most half may fail). Each set gets a
    region of its own: the newer image is published there only after the set is made."""
    return factories.outdated_scale_set(
        capacity,
        name=name,
        where=factories.region(f"region-{name}"),
        bad_share=0.1,
        max_unhealthy_upgraded_instance_percent=50,
        pause_time_between_batches=pause,
    )


def start_run(scale_set: ScaleSet) -> UpgradeRun:
    from upgrades import services

    return services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS)


def events_of(*runs: UpgradeRun) -> int:
    return RunEvent.objects.filter(run__in=runs).count()


def is_over(*runs: UpgradeRun) -> bool:
    """Every one of the runs has ended."""
    for run in runs:
        run.refresh_from_db()
    return all(run.status in TERMINAL for run in runs)


def finished(run: UpgradeRun, processes: Processes, timeout: float = 180) -> UpgradeRun:
    wait_for(lambda: is_over(run), timeout=timeout, what=f"run {run.pk} to end", logs=processes.log_tail)
    return run


def progressed_after(runs: list[UpgradeRun], events: int, processes: Processes, timeout: float = 120) -> float:
    """Seconds until the runs log anything after their first `events` events (or all end)."""
    began = time.monotonic()
    wait_for(
        lambda: events_of(*runs) > events or is_over(*runs),
        timeout=timeout,
        what=f"runs {[r.pk for r in runs]} to move on after {events} events",
        logs=processes.log_tail,
    )
    return time.monotonic() - began


def wait_seconds(seconds: float) -> None:
    """Let real time pass: the fault's duration itself, not a stand-in for a condition."""
    deadline = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= deadline, timeout=seconds + 5, what=f"{seconds:.2f}s to pass")


# --- the report --------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: str
    seed: int
    backend: str
    status: str
    faults: int  # kills, outages, terminations …
    recovery: list[float]  # seconds from the end of each fault until the run moved again
    upgraded_twice: int
    stuck: int
    disks_changed: int
    other: int  # counts / log inconsistencies, a run neither over nor due
    seconds: float
    note: str = ""


REPORT: list[Outcome] = []


@pytest.fixture
def check_and_record(request) -> Callable[..., None]:
    """Check every invariant after a fault and add the run to the session's report; fails the
    test with every broken invariant named."""
    from django.db import connection

    began = time.monotonic()

    def check(
        fault: str,
        seed: int,
        run: UpgradeRun,
        baseline: invariants.Baseline,
        *,
        faults: int,
        recovery: list[float],
        note: str = "",
    ) -> None:
        run.refresh_from_db()
        twice = invariants.upgraded_at_most_once(run, baseline)
        stuck = invariants.none_stuck(run)
        disks = invariants.disks_unchanged(baseline)
        other = invariants.counts_consistent(run) + invariants.terminal_or_progressing(
            run, within=dt.timedelta(seconds=30)
        )
        REPORT.append(
            Outcome(
                fault=fault,
                seed=seed,
                backend=connection.vendor,
                status=run.status,
                faults=faults,
                recovery=recovery,
                upgraded_twice=len(twice),
                stuck=len(stuck),
                disks_changed=len(disks),
                other=len(other),
                seconds=time.monotonic() - began,
                note=note,
            )
        )
        problems = twice + stuck + disks + other
        assert not problems, "invariants broken:\n  " + "\n  ".join(problems)

    return check


def pytest_terminal_summary(terminalreporter) -> None:
    if not REPORT:
        return
    write = terminalreporter.write_line
    write("")
    write(f"fault injection ({'full' if FULL else 'reduced'}, base seed {BASE_SEED}):")
    by_fault: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in REPORT:
        by_fault.setdefault((outcome.fault, outcome.backend), []).append(outcome)
        recovery = ", ".join(f"{s:.1f}" for s in outcome.recovery)
        write(
            f"  {outcome.backend:10} {outcome.fault:22} seed {outcome.seed}: {outcome.status}, {outcome.faults} faults,"
            f" recovered in [{recovery}] s, twice {outcome.upgraded_twice}, stuck {outcome.stuck},"
            f" disks {outcome.disks_changed}, other {outcome.other}, {outcome.seconds:.1f} s"
            + (f"; {outcome.note}" if outcome.note else "")
        )
    write("summary (runs, completed, faults, upgraded twice, stuck, disks changed, recovery median / max s):")
    for (fault, backend), outcomes in by_fault.items():
        recovery = sorted(s for o in outcomes for s in o.recovery)
        completed = sum(o.status == "Completed" for o in outcomes)
        median = recovery[len(recovery) // 2] if recovery else 0.0
        write(
            f"  {backend:10} {fault:22} {len(outcomes)} runs, {completed} completed,"
            f" {sum(o.faults for o in outcomes)} faults, {sum(o.upgraded_twice for o in outcomes)} twice,"
            f" {sum(o.stuck for o in outcomes)} stuck, {sum(o.disks_changed for o in outcomes)} disks,"
            f" recovery {median:.1f} / {max(recovery, default=0.0):.1f}"
        )
