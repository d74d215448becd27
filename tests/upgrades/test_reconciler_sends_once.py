"""The beat's reconciler sends a due run one task, not one per sweep while the first waits in a
busy queue; the task, once started, lets the next due moment be sent (ARCHITECTURE: waits are
due times found by the reconciler)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from tests import factories
from tests.processes import wait_for
from upgrades import services, tasks
from upgrades.models import UpgradeRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The run ids the reconciler enqueues (the queue itself is not what is tested)."""
    calls: list[int] = []
    monkeypatch.setattr(tasks.run_advance_task, "delay", lambda run_id, *a, **k: calls.append(run_id))
    monkeypatch.setattr(settings, "CELERY_TASK_DEFAULT_QUEUE", f"test-reconciler-{id(calls)}")
    return calls


REGIONS = ["eastus", "westus", "northeurope"]


def due_run() -> UpgradeRun:
    n = UpgradeRun.objects.count()  # a region each: a set made after the new image is on it already
    scale_set = factories.outdated_scale_set(4, name=f"set-{n}", where=factories.region(REGIONS[n]))
    return services.os_upgrade_now(scale_set=scale_set)  # due at once: next_action_at = now


def test_a_run_waiting_in_the_queue_is_not_sent_again(sent: list[int]) -> None:
    run = due_run()
    assert tasks.reconcile_task() == 1
    assert tasks.reconcile_task() == 0
    assert tasks.reconcile_task() == 0
    assert sent == [run.pk]


def test_once_its_task_starts_the_next_due_moment_is_sent(sent: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    run = due_run()
    tasks.reconcile_task()
    monkeypatch.setattr(tasks.engine, "run_advance", lambda run_id, wake=False: False)  # a step that did nothing
    tasks.run_advance_task(run.pk)
    assert tasks.reconcile_task() == 1
    assert sent == [run.pk, run.pk]


def test_each_due_run_gets_its_own_task(sent: list[int]) -> None:
    runs = [due_run() for _ in range(3)]
    assert tasks.reconcile_task() == 3
    assert sorted(sent) == sorted(run.pk for run in runs)


def test_a_lost_task_is_sent_again_after_a_dispatch_lease(sent: list[int], settings: Any) -> None:
    settings.ENGINE_DISPATCH_LEASE_SECONDS = 0.001  # the claim lapses at once
    run = due_run()
    tasks.reconcile_task()
    wait_for(lambda: not tasks.redis_client().exists(tasks._sent_key(run.pk)), timeout=5, what="the claim to lapse")
    assert tasks.reconcile_task() == 1
    assert sent == [run.pk, run.pk]


def test_without_redis_the_reconciler_still_sends(sent: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    class Down:
        def set(self, *args: Any, **kwargs: Any) -> bool:
            raise ConnectionError("Redis is down")

    monkeypatch.setattr(tasks, "redis_client", Down)
    run = due_run()
    assert tasks.reconcile_task() == 1
    assert tasks.reconcile_task() == 1  # a duplicate costs a look; a missing task, a stall
    assert sent == [run.pk, run.pk]
