"""After a worker outage the simulator's ticks are late (they run on the workers too): a run
that looks at its batch then must see the instances as the driver has them by now, not as the
last tick left them. Found by the worker-kill faults: a worker down longer than the health
wait failed instances that had become healthy meanwhile, and the run faulted."""

from __future__ import annotations

import datetime as dt

import pytest

from fleet import clock
from fleet.models import HealthState, Instance
from tests.faults.conftest import outdated_set, start_run
from upgrades import engine
from upgrades.models import OutcomeStatus, Phase

pytestmark = pytest.mark.django_db


def test_a_health_verdict_after_an_outage_sees_the_steps_that_fell_due_meanwhile(settings, monkeypatch):
    settings.TIME_SCALE = 1.0
    monkeypatch.setattr("upgrades.tasks.run_advance_task.delay", lambda *args, **kwargs: None)
    monkeypatch.setattr("upgrades.tasks.run_advance_task.apply_async", lambda *args, **kwargs: None)
    with clock.frozen(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)) as frozen:
        scale_set = outdated_set(10, pause="PT0S")
        run = start_run(scale_set)
        engine.run_advance(run.pk)  # the first batch: dispatched and confirmed
        run.refresh_from_db()
        assert run.phase == Phase.UPGRADING
        batch = list(
            Instance.objects.filter(pk__in=run.outcomes.filter(status=OutcomeStatus.IN_PROGRESS).values("instance_id"))
        )
        # Every worker is down for an hour: no tick applies the simulator's steps, the run's
        # upgrade timeout and health wait both pass. Then one worker is back, and the run's
        # step comes before any tick.
        frozen.advance(3600 * 2)
        assert {i.health_state for i in batch} != {HealthState.HEALTHY}
        for _ in range(3):
            engine.run_advance(run.pk)
        run.refresh_from_db()
    outcomes = dict(run.outcomes.filter(batch__index=0).values_list("instance_id_number", "status"))
    healthy_by_now = {
        i.instance_id
        for i in Instance.objects.filter(pk__in=[i.pk for i in batch])
        if i.health_state == HealthState.HEALTHY
    }
    assert healthy_by_now, "the simulator's plan makes some of the batch healthy within the hour"
    assert {n for n, status in outcomes.items() if status == OutcomeStatus.SUCCEEDED} == healthy_by_now
