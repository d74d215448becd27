"""The database unavailable mid-run, again and again.

On PostgreSQL the workers' connections are dropped: every backend of the worker processes
(named by application_name) is terminated (pg_terminate_backend), in bursts, while the run goes on.
On SQLite the equivalent is a database that cannot be written: another connection holds the
write lock (BEGIN EXCLUSIVE) for longer than the workers' busy timeout (1 s here, see
short_busy_timeout.py), so their writes fail with "database is locked".

Either way a step that fails is retried (run_advance_task retries OperationalError with
backoff) or found again by the beat's reconciler, and the run completes."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest
from django.db import connection

from tests.faults.conftest import FULL, events_of, finished, is_over, outdated_set, seeds, start_run, wait_seconds
from tests.faults.invariants import baseline_of
from tests.processes import WORKER_APPLICATION_NAME, wait_for
from upgrades.models import RunStatus, UpgradeRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

OUTAGES_PER_RUN = 3 if FULL else 2
TERMINATIONS_PER_BURST = 3  # PostgreSQL: a burst catches the connections a retry just opened


class Outages(threading.Thread):
    """Makes the database unavailable OUTAGES_PER_RUN times at random moments, each time
    waiting until the run moves again (that wait is the recovery time)."""

    def __init__(self, upgrade_run: UpgradeRun, chance: random.Random, *, spared_backend: int | None) -> None:
        super().__init__(daemon=True)
        self.upgrade_run, self.chance, self.spared_backend = upgrade_run, chance, spared_backend
        self.held: list[float] = []
        self.recovery: list[float] = []
        self.terminated = 0
        self.error: BaseException | None = None

    def run(self) -> None:  # noqa: D102 (threading's entry point)
        try:
            for _ in range(OUTAGES_PER_RUN):
                wait_seconds(self.chance.uniform(0.3, 1.5))
                if is_over(self.upgrade_run):
                    return
                seen = events_of(self.upgrade_run)
                self._outage()
                ended = time.monotonic()
                wait_for(
                    lambda s=seen: events_of(self.upgrade_run) > s or is_over(self.upgrade_run),
                    timeout=120,
                    what="the run to move again after an outage",
                )
                self.recovery.append(time.monotonic() - ended)
        except BaseException as error:  # reported by the test, not lost with the thread
            self.error = error
        finally:
            connection.close()

    def _outage(self) -> None:
        if connection.vendor == "postgresql":
            for _ in range(TERMINATIONS_PER_BURST):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s"
                        " AND application_name = %s",  # the workers' only: the test process's stay
                        [self.spared_backend, WORKER_APPLICATION_NAME],
                    )
                    self.terminated += cursor.fetchone()[0]
                wait_seconds(0.2)
            return
        held = round(self.chance.uniform(2.0, 3.5), 2)  # longer than the workers' 1 s busy timeout
        self.held.append(held)
        lock = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            wait_seconds(held)
            lock.execute("COMMIT")
        finally:
            lock.close()


@pytest.mark.parametrize("seed", seeds(full=5, reduced=1))
def test_the_database_unavailable_mid_run_delays_the_run_and_breaks_nothing(seed, start_processes, check_and_record):
    chance = random.Random(seed)
    postgres = connection.vendor == "postgresql"
    print(f"seed {seed}: {OUTAGES_PER_RUN} outages on {connection.vendor}")
    processes = (
        start_processes() if postgres else start_processes(DJANGO_SETTINGS_MODULE="tests.faults.short_busy_timeout")
    )
    scale_set = outdated_set(10)
    baseline = baseline_of(scale_set)
    processes.start_beat()
    processes.start_worker("worker", concurrency=2)
    spared = None
    if postgres:
        with connection.cursor() as cursor:  # this process's own connection reads the run meanwhile
            cursor.execute("SELECT pg_backend_pid()")
            spared = cursor.fetchone()[0]
    run = start_run(scale_set)
    outages = Outages(run, chance, spared_backend=spared)
    outages.start()
    run = finished(run, processes)
    outages.join(timeout=180)
    assert outages.error is None, outages.error
    worker_log = (processes.logs / "worker.log").read_text(errors="replace")
    errors = worker_log.count("OperationalError")
    print(
        f"seed {seed}: locks held {outages.held} s, backends terminated {outages.terminated},"
        f" {errors} OperationalErrors in the worker log, moved again after {[round(s, 1) for s in outages.recovery]} s"
    )
    faults = outages.terminated if postgres else len(outages.held)
    check_and_record("database unavailable", seed, run, baseline, faults=faults, recovery=outages.recovery)
    assert outages.recovery, "the run ended before the first outage"
    # On PostgreSQL a terminated connection that was idle is replaced without an error (Django
    # checks a connection before a task uses it): a terminated worker backend is the hit then.
    hit = errors > 0 or (postgres and outages.terminated > 0)
    assert hit, "no step met the outage: the fault did not hit"
    assert run.status == RunStatus.COMPLETED, run.error_message
