"""How the engine avoids waiting for nothing (docs/PERFORMANCE.md): steps that leave the run
due go on at once, the next step is enqueued on commit, the driver's changes wake the runs
watching them, and what a step changed is published once, after the driver call."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest

from fleet import clock
from fleet.drivers.simulator import Durations
from tests import factories
from upgrades import engine, services
from upgrades.models import Phase, UpgradeRun

pytestmark = pytest.mark.django_db

ZERO = {"reimage": 0, "boot": 0, "extension": 0, "stop": 0, "deallocate": 0}


def fleet(capacity: int = 10, **model):
    """A set on the old image; `newer()` then publishes the image to upgrade to."""
    model.setdefault("zones", [])
    return factories.scale_set(capacity=capacity, **model)


def newer(scale_set) -> None:
    factories.publish(factories.NEW_VERSION, scale_set.region, at=clock.now() - dt.timedelta(seconds=1))


def outdated(capacity: int = 10, **model):
    scale_set = fleet(capacity, **model)
    newer(scale_set)
    return scale_set


@pytest.fixture
def enqueued():
    """The engine's _enqueue calls (run id, countdown, wake), recorded instead of sent."""
    calls: list[tuple[int, float, bool]] = []

    def record(run_id: int, countdown: float = 0.0, *, wake: bool = False) -> None:
        calls.append((run_id, countdown, wake))

    with mock.patch.object(engine, "_enqueue", record):
        yield calls


def test_without_durations_or_pause_one_advance_finishes_a_batch_and_starts_the_next(settings, frozen_clock):
    settings.SIMULATOR_DURATIONS = ZERO
    scale_set = outdated(10)  # no health source: healthy as soon as booted
    run = services.os_upgrade_now(scale_set=scale_set)
    engine.run_advance(run.pk)  # batch 0 dispatched: every step applied at once
    run.refresh_from_db()
    assert (run.phase, run.current_batch) == (Phase.UPGRADING, 0)
    engine.run_advance(run.pk)  # upgraded → health wait → healthy → no pause → batch 1 dispatched
    run.refresh_from_db()
    assert (run.phase, run.current_batch) == (Phase.UPGRADING, 1)
    assert run.batches.get(index=0).status == "Succeeded"


def test_a_step_leaving_the_run_due_enqueues_the_next_on_commit(
    settings, frozen_clock, enqueued, django_capture_on_commit_callbacks
):
    settings.SIMULATOR_DURATIONS = ZERO
    run = services.os_upgrade_now(scale_set=outdated(10))
    with django_capture_on_commit_callbacks(execute=True):
        engine.run_advance(run.pk)
    assert (run.pk, 0.0, False) in enqueued  # the dispatch was confirmed: look at the batch now


def test_a_short_pause_gets_a_countdown_and_a_long_one_is_the_reconcilers(
    settings, frozen_clock, enqueued, django_capture_on_commit_callbacks
):
    settings.SIMULATOR_DURATIONS = ZERO
    settings.TIME_SCALE = 60.0
    sets = {
        name: fleet(10, name=name, pause_time_between_batches=pause)
        for name, pause in [("short", "PT1M"), ("long", "PT10M")]
    }
    newer(sets["short"])
    for name, expected in (("short", 1.0), ("long", None)):  # pauses of 1 s and 10 s real
        run = services.os_upgrade_now(scale_set=sets[name])
        engine.run_advance(run.pk)
        enqueued.clear()
        with django_capture_on_commit_callbacks(execute=True):
            engine.run_advance(run.pk)
        run.refresh_from_db()
        assert run.phase == Phase.PAUSE
        countdowns = [countdown for run_id, countdown, _ in enqueued if run_id == run.pk]
        assert countdowns == ([] if expected is None else [pytest.approx(expected, abs=0.01)])


def test_wake_looks_now_only_in_the_phases_that_watch_instances(frozen_clock):
    scale_set = outdated(10, extensions=[factories.APP_HEALTH_HTTP])
    run = services.os_upgrade_now(scale_set=scale_set)
    engine.run_advance(run.pk)  # dispatched: upgrading, instances busy
    engine.run_advance(run.pk)
    run.refresh_from_db()
    assert run.phase == Phase.UPGRADING
    later = clock.now() + dt.timedelta(hours=1)
    UpgradeRun.objects.filter(pk=run.pk).update(next_action_at=later)
    assert engine.run_advance(run.pk) is False  # not due
    assert engine.run_advance(run.pk, wake=True) is True  # woken: looks, still busy, polls again
    for phase in (Phase.PAUSE, Phase.DISPATCHING, Phase.BEFORE_BATCH):
        UpgradeRun.objects.filter(pk=run.pk).update(phase=phase, next_action_at=later)
        assert engine.run_advance(run.pk, wake=True) is False  # a pause or a lease is not cut short


def test_wake_runs_watching_wakes_rolling_forward_runs_of_those_sets_only(frozen_clock, enqueued):
    web = fleet(5, name="web")
    api = fleet(5, name="api")
    newer(web)
    web_run = services.os_upgrade_now(scale_set=web)
    api_run = services.os_upgrade_now(scale_set=api)
    UpgradeRun.objects.filter(pk__in=[web_run.pk, api_run.pk]).update(phase=Phase.HEALTH_WAIT)
    assert engine.wake_runs_watching([web.pk]) == [web_run.pk]
    assert enqueued == [(web_run.pk, 0.0, True)]
    UpgradeRun.objects.filter(pk=web_run.pk).update(phase=Phase.PAUSE)
    assert engine.wake_runs_watching([web.pk]) == []
    assert engine.wake_runs_watching([]) == []


def test_the_upgrades_app_listens_to_the_simulator():
    from fleet import services as fleet_services

    assert engine.wake_runs_watching in fleet_services._steps_applied_callbacks


def test_a_step_is_published_once_after_the_driver_call(settings, frozen_clock):
    settings.SIMULATOR_DURATIONS = ZERO
    run = services.os_upgrade_now(scale_set=outdated(10))
    order: list[str] = []
    real_dispatch = engine._dispatch

    def dispatch(*args, **kwargs):
        order.append("dispatch")
        return real_dispatch(*args, **kwargs)

    with (
        mock.patch.object(engine, "_dispatch", dispatch),
        mock.patch.object(engine.events, "run_changed", lambda run_id: order.append(f"run {run_id}")),
        mock.patch.object(engine.fleet_events, "instances_changed", lambda sid, pks: order.append(f"cells {len(pks)}")),
    ):
        engine.run_advance(run.pk)
    # The driver publishes its own change; the engine's step is published after the driver
    # call, once: one heatmap delta, one run summary (not one per sub-step).
    assert order == ["dispatch", "cells 2", "cells 2", f"run {run.pk}"]


def test_durations_setting_reaches_the_simulator(settings):
    settings.SIMULATOR_DURATIONS = {"boot": 5.0}
    from fleet.drivers.simulator import configured_durations

    assert configured_durations() == Durations(boot=5.0)
