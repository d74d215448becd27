"""The simulator's fast paths (docs/PERFORMANCE.md): grouped row writes, the steps-applied
hook, precise ticks, and the SIMULATOR_DURATIONS setting."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import clock, services
from fleet import tasks as fleet_tasks
from fleet.drivers import simulator as sim
from fleet.drivers.simulator import Durations, SimulatorDriver
from fleet.models import Instance, PowerState
from fleet.selectors import target_image
from tests import factories

pytestmark = pytest.mark.django_db

DEFAULTS = Durations()


def _rows(scale_set) -> list[Instance]:
    return list(Instance.objects.filter(scale_set=scale_set).order_by("pk"))


def test_save_writes_equal_values_in_one_update_and_distinct_ones_per_row():
    scale_set = factories.scale_set(capacity=6)
    rows = _rows(scale_set)
    due = clock.now() + dt.timedelta(seconds=5)
    for n, row in enumerate(rows):
        row.power_state = PowerState.STOPPING  # equal in every row
        row.driver_plan = [{"at": due.isoformat(), "set": {"power_state": "running"}}]
        row.driver_due_at = due
        row.os_disk = f"disk-{n}"  # a value of its own
        row.extension_states = {"A": {"state": "Succeeded"}} if n < 3 else {"B": {"state": "Failed"}}  # two groups
    fields = ["power_state", "driver_plan", "driver_due_at", "os_disk", "extension_states"]
    with CaptureQueriesContext(connection) as queries:
        sim._save(rows, fields)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) <= 4  # the equal fields, two groups, one executemany for the rest
    for n, row in enumerate(_rows(scale_set)):
        assert row.power_state == PowerState.STOPPING
        assert row.driver_plan == [{"at": due.isoformat(), "set": {"power_state": "running"}}]
        assert row.driver_due_at == due
        assert row.os_disk == f"disk-{n}"
        assert row.extension_states == ({"A": {"state": "Succeeded"}} if n < 3 else {"B": {"state": "Failed"}})


def test_save_of_nothing_writes_nothing():
    with CaptureQueriesContext(connection) as queries:
        sim._save([], ["power_state"])
    assert not queries.captured_queries


def test_advance_writes_back_only_what_steps_change(time_scale_1, frozen_clock):
    scale_set = factories.scale_set(capacity=3)
    factories.publish(factories.NEW_VERSION, scale_set.region)
    image = target_image(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(_rows(scale_set), image, operation="op-1")
    disks = {row.pk: row.os_disk for row in _rows(scale_set)}
    frozen_clock.advance_simulated(DEFAULTS.reimage)
    with CaptureQueriesContext(connection) as queries:
        assert sim.advance(clock.now()) == 3
    sql = " ".join(q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE"))
    assert "os_disk" not in sql
    assert "driver_operations" not in sql
    assert {row.power_state for row in _rows(scale_set)} == {PowerState.STARTING}
    assert {row.pk: row.os_disk for row in _rows(scale_set)} == disks


def test_simulator_advance_tells_the_registered_callbacks_which_sets_changed(
    time_scale_1, frozen_clock, django_capture_on_commit_callbacks
):
    web = factories.scale_set(name="web", capacity=2)
    api = factories.scale_set(name="api", capacity=2)
    factories.publish(factories.NEW_VERSION, web.region)
    image = target_image(web)
    SimulatorDriver(web, durations=DEFAULTS).reimage(_rows(web), image, operation="op-1")
    heard: list[list[int]] = []
    with mock.patch.object(services, "_steps_applied_callbacks", [heard.append]):
        frozen_clock.advance_simulated(DEFAULTS.reimage)
        with django_capture_on_commit_callbacks(execute=True):
            assert services.simulator_advance() == 2
        with django_capture_on_commit_callbacks(execute=True):
            assert services.simulator_advance() == 0  # nothing due: nobody is told
    assert heard == [[web.pk]]
    assert api.pk not in heard[0]


def test_a_failing_callback_does_not_fail_the_tick(time_scale_1, frozen_clock, django_capture_on_commit_callbacks):
    scale_set = factories.scale_set(capacity=1)
    factories.publish(factories.NEW_VERSION, scale_set.region)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(_rows(scale_set), target_image(scale_set), operation="o")

    def broken(scale_set_ids):
        raise RuntimeError("listener bug")

    with mock.patch.object(services, "_steps_applied_callbacks", [broken]):
        frozen_clock.advance_simulated(DEFAULTS.reimage)
        with django_capture_on_commit_callbacks(execute=True):
            assert services.simulator_advance() == 1


def test_registering_a_callback_twice_keeps_one():
    def listener(scale_set_ids):
        return None

    with mock.patch.object(services, "_steps_applied_callbacks", []):
        services.on_simulator_steps_applied(listener)
        services.on_simulator_steps_applied(listener)
        assert services._steps_applied_callbacks == [listener]


def test_a_near_step_gets_one_tick_of_its_own_however_many_ask(settings):
    settings.CELERY_TASK_DEFAULT_QUEUE = f"test-ticks-{clock.now().timestamp()}"
    due = clock.now() + dt.timedelta(seconds=0.5)
    with mock.patch.object(fleet_tasks.simulator_advance_task, "apply_async") as send:
        fleet_tasks.simulator_tick_at(due)
        fleet_tasks.simulator_tick_at(due)
        fleet_tasks.simulator_tick_at(due + dt.timedelta(seconds=0.1))  # another moment
    assert send.call_count == 2
    assert 0 < send.call_args_list[0].kwargs["countdown"] <= 0.5


def test_a_far_step_is_left_to_the_beat_and_none_is_ignored():
    with mock.patch.object(fleet_tasks.simulator_advance_task, "apply_async") as send:
        fleet_tasks.simulator_tick_at(clock.now() + dt.timedelta(seconds=fleet_tasks.TICK_WINDOW_SECONDS + 1))
        fleet_tasks.simulator_tick_at(None)
    send.assert_not_called()


def test_a_tick_never_fails_its_caller_when_redis_is_away():
    with (
        mock.patch.object(fleet_tasks, "redis_client", side_effect=ConnectionError("no redis")),
        mock.patch.object(fleet_tasks.simulator_advance_task, "apply_async") as send,
    ):
        fleet_tasks.simulator_tick_at(clock.now())
    send.assert_not_called()


def test_the_driver_asks_for_a_tick_at_its_first_step_on_commit(
    time_scale_1, frozen_clock, django_capture_on_commit_callbacks
):
    scale_set = factories.scale_set(capacity=2)
    factories.publish(factories.NEW_VERSION, scale_set.region)
    with (
        mock.patch("fleet.tasks.simulator_tick_at") as tick,
        django_capture_on_commit_callbacks(execute=True),
    ):
        SimulatorDriver(scale_set, durations=DEFAULTS).reimage(_rows(scale_set), target_image(scale_set), operation="o")
    tick.assert_called_once_with(clock.after(DEFAULTS.reimage))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("x", "is not JSON"),
        ("[1]", "is not a JSON object"),
        ('{"reboot": 1}', "unknown step 'reboot'"),
        ('{"boot": -1}', "boot must be a number of seconds"),
        ('{"boot": true}', "boot must be a number of seconds"),
    ],
)
def test_a_bad_simulator_durations_setting_stops_the_process(raw, problem):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={"PATH": "/usr/bin:/bin", "SIMULATOR_DURATIONS": raw},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert problem in result.stderr


def test_simulator_durations_are_read_from_the_environment():
    zero = {"reimage": 0, "boot": 0, "extension": 0, "stop": 0, "deallocate": 0}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup(); "
            "from fleet.drivers.simulator import configured_durations; print(configured_durations())",
        ],
        env={"PATH": "/usr/bin:/bin", "SIMULATOR_DURATIONS": json.dumps(zero)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Durations(reimage=0.0, boot=0.0, extension=0.0, stop=0.0, deallocate=0.0)"
