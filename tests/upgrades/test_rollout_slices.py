"""A rollout starts a region of many sets a slice at a time (rollouts.START_SLICE): each step
stays short, each slice's runs can begin as soon as it commits, and the next slice follows at
once rather than at the rollout's poll."""

from __future__ import annotations

import pytest

from fleet import clock
from tests import factories
from tests.upgrades.test_rollouts import auto_set, publish_new
from upgrades import rollouts
from upgrades.models import Kind, Rollout, RolloutStatus, RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db


def test_more_due_sets_than_a_slice_are_started_a_slice_per_step_then_all_complete(
    drive_fleet, frozen_clock, settings, monkeypatch
):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 0
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    monkeypatch.setattr(rollouts, "START_SLICE", 2)
    east = factories.region("eastus", zones=[])
    sets = [auto_set(f"web-{n}", east, capacity=2) for n in range(5)]
    publish_new(east)
    rollouts.automatic_upgrades_scan(clock.now())
    rollout = Rollout.objects.get()

    started, due_at_once = [], []
    for _ in range(3):
        assert rollouts.rollout_advance(rollout.pk)
        rollout.refresh_from_db()
        started.append(UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS).count())
        due_at_once.append(rollout.next_action_at is not None and rollout.next_action_at <= clock.now())

    assert started == [2, 4, 5]
    assert due_at_once == [True, True, False]  # then only the poll, should a run's wake-up be lost

    drive_fleet()
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.COMPLETED
    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS)
    assert sorted(r.scale_set_id for r in runs) == sorted(s.pk for s in sets)
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
