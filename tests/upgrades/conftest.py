import datetime as dt
from collections.abc import Callable

import pytest
from django.db.models import Min

from fleet import clock
from fleet import services as fleet_services
from fleet.clock import FrozenClock
from fleet.drivers import simulator
from fleet.models import GalleryImageReplica, Instance, ReplicationState
from upgrades import engine, rollouts
from upgrades.models import TERMINAL, Rollout, RunStatus, UpgradeRun


@pytest.fixture(autouse=True)
def no_enqueue(monkeypatch):
    """Engine tests drive runs themselves; tasks enqueued on commit are recorded, not sent."""
    sent: list[int] = []
    monkeypatch.setattr("upgrades.tasks.run_advance_task.delay", sent.append)
    monkeypatch.setattr("upgrades.tasks.rollout_advance_task.delay", lambda rollout_id: None)
    monkeypatch.setattr("upgrades.tasks.rollout_advance_task.apply_async", woken_rollouts.append)
    return sent


# Rollouts a run woke when it ended (engine._wake_rollouts_of), as apply_async's arguments.
woken_rollouts: list[tuple] = []


@pytest.fixture
def drive(frozen_clock: FrozenClock, settings):
    """Run a run to its end in simulated time, exactly: apply the simulator's due steps,
    advance the run, jump the clock to the next due moment. `until` stops early."""
    settings.TIME_SCALE = 1.0

    def run_to_end(run: UpgradeRun, *, until: Callable[[UpgradeRun], bool] | None = None, check=None) -> UpgradeRun:
        for _ in range(20_000):
            now = clock.now()
            simulator.advance(now)
            engine.run_advance(run.pk)
            run.refresh_from_db()
            if check:
                check(run)
            if run.status in TERMINAL or (until and until(run)):
                return run
            due = [run.next_action_at, Instance.objects.aggregate(t=Min("driver_due_at"))["t"]]
            upcoming = min(t for t in due if t is not None)
            if upcoming > now:
                frozen_clock.advance((upcoming - now).total_seconds())
        raise AssertionError(f"run {run.pk} did not finish: {run.status} {run.phase}")

    return run_to_end


@pytest.fixture
def drive_fleet(frozen_clock: FrozenClock, settings, monkeypatch):
    """Everything the beat and the workers do, in simulated time, exactly: apply the
    simulator's due steps, scan for automatic upgrades, advance due rollouts and runs (and the
    runs the simulator woke), then jump the clock to the next due moment. Stops when `until()`
    holds or nothing is left to do; returns the steps taken."""
    settings.TIME_SCALE = 1.0
    settings.ENGINE_POLL_SECONDS = 30.0  # runs are woken by their instances' changes instead
    woken_runs: list[int] = []
    monkeypatch.setattr(
        "upgrades.tasks.run_advance_task.apply_async", lambda args, kwargs=None, **_: woken_runs.append(args[0])
    )

    def run(*, until: Callable[[], bool] | None = None, limit: int = 50_000) -> int:
        for step in range(limit):
            now = clock.now()
            fleet_services.simulator_advance(now)  # and gallery replication
            rollouts.automatic_upgrades_scan(now)
            for rollout_id in rollouts.due_rollout_ids(now):
                rollouts.rollout_advance(rollout_id)
            for run_id in engine.due_run_ids(now):
                engine.run_advance(run_id)
            while woken_runs:
                engine.run_advance(woken_runs.pop(), wake=True)
            while woken_rollouts:
                rollouts.rollout_advance(woken_rollouts.pop()[0], wake=True)
            if until and until():
                return step
            due = [
                Instance.objects.aggregate(t=Min("driver_due_at"))["t"],
                UpgradeRun.objects.filter(status=RunStatus.ROLLING_FORWARD).aggregate(t=Min("next_action_at"))["t"],
                Rollout.objects.aggregate(t=Min("next_action_at"))["t"],
                GalleryImageReplica.objects.filter(state=ReplicationState.REPLICATING).aggregate(t=Min("completes_at"))[
                    "t"
                ],
            ]
            upcoming = [t for t in due if t is not None]
            if not upcoming:
                if until is None:
                    return step
                raise AssertionError("nothing left to do, and the condition never held")
            if min(upcoming) > now:
                frozen_clock.advance((min(upcoming) - now).total_seconds())
        raise AssertionError("the fleet did not settle")

    return run


@pytest.fixture
def later():
    return lambda seconds: clock.now() + dt.timedelta(seconds=seconds)


@pytest.fixture(scope="session", autouse=True)
def _no_stray_sessions_at_teardown(django_db_setup, django_db_blocker):
    """Worker processes started by the end-to-end tests here may leave a PostgreSQL session behind for
    a moment; end them before the test database is dropped, so the next run can create it."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )
