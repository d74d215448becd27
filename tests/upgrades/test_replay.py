"""The run page's replay (issue 6): replay.json rebuilds every instance's state at any moment
of a run from its event log, agrees with the log folded independently here and, at the end,
with the instances' final outcomes; its query count does not grow with the run; unknown runs
are 404 and anonymous visitors are sent to log in."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from fleet.models import Instance
from tests import factories
from upgrades import services
from upgrades.models import InstanceOutcome, Kind, OutcomeStatus, RunEvent, StartedBy, UpgradeRun
from upgrades.replay import STATE_KEYS, run_replay

pytestmark = pytest.mark.django_db


def viewer() -> Client:
    client = Client()
    client.force_login(factories.user("vera", "viewers"))
    return client


def replay_json(client: Client, run: UpgradeRun) -> dict[str, Any]:
    response = client.get(reverse("upgrades:run-replay", args=[run.pk]))
    assert response.status_code == 200
    return response.json()


def automatic_run_with_rollbacks(drive: Any, capacity: int) -> UpgradeRun:
    """An automatic OS upgrade where 30% never become healthy: failures, rollbacks, and (at
    100% allowed unhealthy) every batch runs, so the log holds every kind of change."""
    scale_set = factories.outdated_scale_set(capacity, bad_share=0.3, max_unhealthy_upgraded_instance_percent=100)
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
    return drive(run)


# --- the two sides compared -----------------------------------------------------------------


def replayed_states(data: dict[str, Any], ms: int) -> dict[int, str]:
    """What the browser does: the states at the start, then every change up to `ms`."""
    columns = data["instance_columns"]
    states = {row[columns.index("id")]: row[columns.index("state")] for row in data["instances"]}
    for at, number, state in data["changes"]:
        if at > ms:
            break
        states[number] = state
    return states


def logged_states(run: UpgradeRun, moment: dt.datetime) -> dict[int, str]:
    """The event log folded independently: targeted instances start Pending, skipped ones
    Skipped; each instance event up to `moment` sets its instance's state."""
    states: dict[int, str] = {
        o.instance_id_number: OutcomeStatus.SKIPPED if o.batch_id is None else OutcomeStatus.PENDING
        for o in InstanceOutcome.objects.filter(run=run)
    }
    logged = RunEvent.objects.filter(run=run, instance_id_number__isnull=False, at__lte=moment).order_by("at", "pk")
    for number, to_state in logged.values_list("instance_id_number", "to_state"):
        assert number is not None
        states[number] = to_state
    return states


def moment_of(run: UpgradeRun, ms: int) -> dt.datetime:
    return run.started_at + dt.timedelta(milliseconds=ms)


def marks(data: dict[str, Any], what: str) -> list[int]:
    return [ms for ms, _batch, to_state, _message in data["marks"] if to_state == what]


def interesting_moments(data: dict[str, Any]) -> dict[str, int]:
    """Start, mid-batch (between a batch's start and its health wait), after a gate (the
    health wait's verdict: rollback begun), just after each change, and the end."""
    started, waiting, rolling_back = (
        marks(data, "batch_started"),
        marks(data, "health_wait"),
        marks(data, "rolling_back"),
    )
    assert started, "the run started batches"
    assert waiting, "the run waited for health"
    assert rolling_back, "the run rolled back"
    moments = {
        "start": 0,
        "mid-batch": (started[1] + waiting[1]) // 2,
        "after a gate": rolling_back[0],
        "just after a gate": rolling_back[0] + 1,
        "end": data["duration_ms"],
    }
    moments.update({f"change at {ms}": ms for ms in {c[0] for c in data["changes"]}})
    return moments


# --- the tests ------------------------------------------------------------------------------


def test_replayed_states_equal_the_event_log_at_every_moment_and_the_final_outcomes_at_the_end(frozen_clock, drive):
    run = automatic_run_with_rollbacks(drive, 20)
    data = replay_json(viewer(), run)

    for name, ms in interesting_moments(data).items():
        assert replayed_states(data, ms) == logged_states(run, moment_of(run, ms)), f"at {name} ({ms} ms)"

    final = dict(InstanceOutcome.objects.filter(run=run).values_list("instance_id_number", "status"))
    assert replayed_states(data, data["duration_ms"]) == final
    assert {OutcomeStatus.SUCCEEDED, OutcomeStatus.ROLLED_BACK} <= set(final.values())
    mid = replayed_states(data, interesting_moments(data)["mid-batch"])
    assert OutcomeStatus.IN_PROGRESS in mid.values(), "mid-batch, the batch is being upgraded"


def test_the_counts_series_counts_the_replayed_states(frozen_clock, drive):
    run = automatic_run_with_rollbacks(drive, 20)
    data = replay_json(viewer(), run)

    assert data["count_columns"] == ["ms", *STATE_KEYS]
    times = [point[0] for point in data["counts"]]
    assert times == sorted(set(times)), "one point per moment, in order"
    assert (times[0], times[-1]) == (0, data["duration_ms"])
    for ms, *counts in data["counts"]:
        tally = Counter(logged_states(run, moment_of(run, ms)).values())
        assert counts == [tally[key] for key in STATE_KEYS], f"counts at {ms} ms"
        assert sum(counts) == 20


def test_instances_carry_their_placement_and_the_times_span_the_run(frozen_clock, drive):
    run = automatic_run_with_rollbacks(drive, 10)
    data = replay_json(viewer(), run)

    columns = data["instance_columns"]
    expected = {
        i.instance_id: [i.instance_id, i.placement_group, i.update_domain, i.fault_domain, i.zone]
        for i in Instance.objects.filter(scale_set=run.scale_set)
    }
    assert {row[0]: row[:5] for row in data["instances"]} == expected
    batches = dict(InstanceOutcome.objects.filter(run=run).values_list("instance_id_number", "batch__index"))
    assert {row[0]: row[columns.index("batch")] for row in data["instances"]} == batches
    assert dt.datetime.fromisoformat(data["start"]) == run.started_at
    assert dt.datetime.fromisoformat(data["end"]) == run.ended_at
    assert data["changes"] == sorted(data["changes"], key=lambda change: change[0])
    # linear in events: one change per instance event, nothing per frame
    assert len(data["changes"]) == RunEvent.objects.filter(run=run, instance_id_number__isnull=False).count()
    assert len(data["marks"]) == RunEvent.objects.filter(run=run, instance_id_number__isnull=True).count()
    assert data["run"] == {"id": run.pk, "status": run.status, "scale_set": run.scale_set.name, "active": False}
    drawn = {s["key"]: s["heatmap_state"] for s in data["states"]}
    assert drawn[OutcomeStatus.SUCCEEDED] == "up_to_date"
    assert drawn[OutcomeStatus.FAILED] == "failed"


def test_a_run_still_rolling_forward_replays_up_to_now(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10)
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "health_wait")
    frozen_clock.advance(1)
    data = replay_json(viewer(), run)

    assert data["run"]["active"] is True
    assert data["duration_ms"] == round((frozen_clock.advance(0) - run.started_at).total_seconds() * 1000)
    now = replayed_states(data, data["duration_ms"])
    assert now == dict(InstanceOutcome.objects.filter(run=run).values_list("instance_id_number", "status"))
    assert OutcomeStatus.IN_PROGRESS in now.values()


@pytest.mark.parametrize("capacity", [10, 200])
def test_replay_json_costs_the_same_queries_for_10_and_200_instances(
    frozen_clock, drive, django_assert_num_queries, capacity
):
    run = automatic_run_with_rollbacks(drive, capacity)
    client = viewer()
    url = reverse("upgrades:run-replay", args=[run.pk])
    client.get(url)  # warm the session

    with django_assert_num_queries(3):  # the run, its outcomes with placement, its events
        data = run_replay(run_id=run.pk)
    # the view adds the session and the user
    with django_assert_num_queries(5):
        assert client.get(url).status_code == 200
    assert len(data["instances"]) == capacity


def test_an_unknown_run_is_404(frozen_clock):
    response = viewer().get(reverse("upgrades:run-replay", args=[999_999]))
    assert response.status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(frozen_clock, drive):
    run = drive(services.os_upgrade_now(scale_set=factories.outdated_scale_set(4)))
    url = reverse("upgrades:run-replay", args=[run.pk])
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")
