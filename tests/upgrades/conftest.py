import datetime as dt
from collections.abc import Callable

import pytest
from django.db.models import Min

from fleet import clock
from fleet.clock import FrozenClock
from fleet.drivers import simulator
from fleet.models import Instance
from upgrades import engine
from upgrades.models import TERMINAL, UpgradeRun


@pytest.fixture(autouse=True)
def no_enqueue(monkeypatch):
    """Engine tests drive runs themselves; tasks enqueued on commit are recorded, not sent."""
    sent: list[int] = []
    monkeypatch.setattr("upgrades.tasks.run_advance_task.delay", sent.append)
    return sent


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
