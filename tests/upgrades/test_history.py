"""History pages (R-HIST-1: every run, paginated and filterable) and a run's own page (its
batches on a timeline, every instance's outcome, rollback and error details, the event log),
each in a number of queries that does not grow with runs or instances."""

from __future__ import annotations

import datetime as dt
import html
import json
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from fleet.models import ScaleSet
from tests import factories
from upgrades import services
from upgrades.models import Kind, OutcomeStatus, RunEvent, RunStatus, StartedBy, UpgradeRun
from upgrades.planner import GATE_AFTER_BATCH

pytestmark = pytest.mark.django_db

NEW_KEY = factories.NEW_KEY
OLD_KEY = f"platform:Canonical/UbuntuServer/18.04-LTS:{factories.OLD_VERSION}"
DAY = dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(factories.user("vera", "viewers"))
    return client


def finished_run(
    scale_set: ScaleSet,
    *,
    started_at: dt.datetime = DAY,
    status: str = RunStatus.COMPLETED,
    kind: str = Kind.MANUAL_OS,
    started_by: str = StartedBy.USER,
    actor: User | None = None,
    error_code: str = "",
    succeeded: int = 5,
    failed: int = 0,
) -> UpgradeRun:
    """A finished run as history keeps it (rows only: history reads nothing else)."""
    return UpgradeRun.objects.create(
        scale_set=scale_set,
        kind=kind,
        started_by=started_by,
        actor=actor,
        status=status,
        phase="done",
        last_action_at=started_at,
        started_at=started_at,
        ended_at=started_at + dt.timedelta(minutes=12, seconds=5),
        target_image=NEW_KEY,
        target_model_version=1,
        policy={},
        successful_count=succeeded,
        failed_count=failed,
        error_code=error_code,
        error_message="It went wrong." if error_code else "",
    )


def run_ids(response) -> list[int]:
    return [int(n) for n in re.findall(r'<td><a href="/runs/(\d+)/">#', response.content.decode())]


def text_of(response) -> str:
    return html.unescape(response.content.decode())


# --- the history pages -------------------------------------------------------------------------


def test_fleet_history_lists_every_run_newest_first_with_what_an_operator_asks(viewer):
    web = factories.scale_set("web", capacity=5, zones=[])
    api = factories.scale_set("api", capacity=5, zones=[])
    olga = factories.user("olga", "operators")
    older = finished_run(web, started_at=DAY, actor=olga)
    newer = finished_run(
        api,
        started_at=DAY + dt.timedelta(hours=2),
        status=RunStatus.FAULTED,
        kind=Kind.AUTOMATIC_OS,
        started_by=StartedBy.PLATFORM,
        error_code=GATE_AFTER_BATCH,
        succeeded=3,
        failed=2,
    )
    response = viewer.get("/history/")
    assert response.status_code == 200
    assert run_ids(response) == [newer.pk, older.pk]
    rows = re.findall(r"<tr>(.*?)</tr>", re.search(r"<tbody>(.*?)</tbody>", text_of(response), re.S)[1], re.S)
    first, second = rows
    assert ">api</a>" in first
    assert "Automatic OS upgrade" in first
    assert "Platform" in first
    assert "2026-05-01 11:30:00" in first
    assert "12 min 5 s" in first
    assert f"<code>{factories.NEW_VERSION}</code>" in first
    assert "3/5 succeeded, 2 failed" in first
    assert 's-Faulted">Faulted<' in first
    assert GATE_AFTER_BATCH in first
    assert "User" in second
    assert '<div class="sub">olga</div>' in second


def test_a_scale_sets_history_lists_only_its_runs(viewer):
    web = factories.scale_set("web", capacity=2, zones=[])
    api = factories.scale_set("api", capacity=2, zones=[])
    mine = [finished_run(web, started_at=DAY + dt.timedelta(hours=n)) for n in range(3)]
    finished_run(api)
    response = viewer.get(f"/scale-sets/{web.pk}/history/")
    assert response.status_code == 200
    assert run_ids(response) == [r.pk for r in reversed(mine)]
    assert "Upgrade history of web" in text_of(response)
    assert viewer.get("/scale-sets/424242/history/").status_code == 404


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=Faulted", {"faulted"}),
        ("status=Cancelled", {"cancelled"}),
        ("kind=AutomaticOSUpgrade", {"platform"}),
        ("kind=ManualUpgrade", {"manual"}),
        ("started_by=Platform", {"platform"}),
        ("started_by=User", {"faulted", "cancelled", "manual", "plain"}),
        ("status=Completed&started_by=User", {"manual", "plain"}),
        ("", {"faulted", "cancelled", "platform", "manual", "plain"}),
    ],
)
def test_history_filters_by_status_kind_and_who_started_it(viewer, query, expected):
    scale_set = factories.scale_set(capacity=2, zones=[])
    runs = {
        "faulted": finished_run(scale_set, status=RunStatus.FAULTED, error_code=GATE_AFTER_BATCH),
        "cancelled": finished_run(scale_set, status=RunStatus.CANCELLED),
        "platform": finished_run(scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM),
        "manual": finished_run(scale_set, kind=Kind.MANUAL),
        "plain": finished_run(scale_set),
    }
    response = viewer.get(f"/history/?{query}")
    assert response.status_code == 200
    assert set(run_ids(response)) == {runs[name].pk for name in expected}


def test_history_filters_by_date_range_with_both_days_included(viewer):
    scale_set = factories.scale_set(capacity=2, zones=[])
    by_day = {
        day: finished_run(scale_set, started_at=dt.datetime(2026, 5, day, 23, 59, tzinfo=dt.UTC))
        for day in (1, 2, 3, 4)
    }
    first_of_may = finished_run(scale_set, started_at=dt.datetime(2026, 5, 2, 0, 0, tzinfo=dt.UTC))
    response = viewer.get("/history/?started_from=2026-05-02&started_to=2026-05-03")
    assert set(run_ids(response)) == {by_day[2].pk, by_day[3].pk, first_of_may.pk}
    assert set(run_ids(viewer.get("/history/?started_from=2026-05-04"))) == {by_day[4].pk}
    assert set(run_ids(viewer.get("/history/?started_to=2026-05-01"))) == {by_day[1].pk}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=Exploded", "Status: Select a valid choice. Exploded is not one of the available choices."),
        ("kind=Teleport", "Kind: Select a valid choice. Teleport is not one of the available choices."),
        ("started_by=Robot", "Started by: Select a valid choice. Robot is not one of the available choices."),
        ("started_from=2026-13-01", "From: Enter a valid date."),
        ("started_to=yesterday", "To: Enter a valid date."),
        ("started_from=2026-05-03&started_to=2026-05-01", "To: 'To' (2026-05-01) is before 'From' (2026-05-03)."),
    ],
)
def test_invalid_history_filters_are_a_form_error_not_a_500(viewer, query, message):
    scale_set = factories.scale_set(capacity=2, zones=[])
    finished_run(scale_set)
    for path in ("/history/", f"/scale-sets/{scale_set.pk}/history/"):
        response = viewer.get(f"{path}?{query}")
        assert response.status_code == 400
        assert message in text_of(response)
        assert run_ids(response) == []


def test_history_is_paginated_fifty_runs_a_page_and_keeps_the_filters(viewer):
    scale_set = factories.scale_set(capacity=2, zones=[])
    runs = [finished_run(scale_set, started_at=DAY + dt.timedelta(minutes=n)) for n in range(120)]
    newest_first = [r.pk for r in reversed(runs)]
    first = viewer.get("/history/?status=Completed")
    assert run_ids(first) == newest_first[:50]
    assert "120 runs, page 1 of 3." in text_of(first)
    assert 'href="?status=Completed&amp;page=2" rel="next"' in first.content.decode()
    assert run_ids(viewer.get("/history/?status=Completed&page=2")) == newest_first[50:100]
    assert run_ids(viewer.get("/history/?page=3")) == newest_first[100:]
    # A page number that is not one gives a page, not an error.
    assert run_ids(viewer.get("/history/?page=99")) == newest_first[100:]
    assert run_ids(viewer.get("/history/?page=abc")) == newest_first[:50]


def test_history_with_no_match_says_so(viewer):
    response = viewer.get("/history/?status=Cancelled")
    assert response.status_code == 200
    assert "No run matches." in text_of(response)


def test_history_pages_cost_the_same_queries_for_3_and_50_runs(viewer, django_assert_num_queries):
    scale_set = factories.scale_set(capacity=2, zones=[])
    olga = factories.user("olga", "operators")
    for n in range(3):
        finished_run(scale_set, started_at=DAY + dt.timedelta(minutes=n), actor=olga)
    # session, user, the viewer's groups (the page frame), the count, the page of runs with
    # their sets and actors
    with django_assert_num_queries(5):
        assert len(run_ids(viewer.get("/history/"))) == 3
    with django_assert_num_queries(6):  # and the set
        assert len(run_ids(viewer.get(f"/scale-sets/{scale_set.pk}/history/"))) == 3
    other = factories.scale_set("other", capacity=2, zones=[])
    for n in range(47):
        finished_run(other if n % 2 else scale_set, started_at=DAY + dt.timedelta(hours=1, minutes=n), actor=olga)
    with django_assert_num_queries(5):
        assert len(run_ids(viewer.get("/history/"))) == 50
    with django_assert_num_queries(6):
        assert len(run_ids(viewer.get(f"/scale-sets/{scale_set.pk}/history/"))) == 27


def test_history_needs_login(client):
    assert client.get("/history/")["Location"].startswith("/login/")
    assert client.get("/runs/1/")["Location"].startswith("/login/")


def test_the_nav_links_to_history(viewer):
    assert '<a href="/history/">History</a>' in viewer.get("/").content.decode()


# --- a run's page --------------------------------------------------------------------------------


def test_a_run_page_shows_summary_policy_rollback_error_batches_outcomes_and_events(viewer, frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, bad_share=0.5)
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
    run = drive(run)
    assert run.status == RunStatus.FAULTED  # half of the first batch never got healthy (R-GATE-3)
    response = viewer.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    text = text_of(response)
    assert f"Automatic OS upgrade #{run.pk}" in text
    assert 's-Faulted">Faulted<' in text
    # error and rollback (R-ROLLBACK-1: an automatic OS upgrade rolls failed instances back)
    assert f"<code>{GATE_AFTER_BATCH}</code>" in text
    assert run.error_message in text
    rollback = re.search(r'<dl class="kv" id="rollback">(.*?)</dl>', text, re.S)[1]
    assert f"<dt>Rolled back</dt><dd>{run.rolled_back_count}</dd>" in rollback
    assert run.rolled_back_count + run.rollback_failed_count == run.failed_count > 0
    # the policy snapshot, under ARM's names
    policy = re.search(r'<dl class="kv" id="policy">(.*?)</dl>', text, re.S)[1]
    assert "<dt>maxBatchInstancePercent</dt><dd>20 %</dd>" in policy
    assert "<dt>health wait</dt><dd>300 s</dd>" in policy  # PT5M: no grace period set
    assert "<dt>disableAutomaticRollback</dt><dd>no</dd>" in policy
    # the timeline: one bar per batch that started, coloured by its status
    timeline = json.loads(
        re.search(r'<script id="batch-timeline" type="application/json">(.*?)</script>', text, re.S)[1]
    )
    batches = list(run.batches.order_by("index"))
    assert [row["label"] for row in timeline] == [f"Batch {b.index + 1} · UD {b.update_domain}" for b in batches]
    assert [row["status"] for row in timeline] == [b.status for b in batches]
    assert timeline[0]["start"] == batches[0].started_at.isoformat()
    assert timeline[0]["end"] == batches[0].ended_at.isoformat()
    assert timeline[-1]["start"] is None  # never started: a row, no bar
    assert "/static/vendor/plotly.min.js" in text
    # every instance's outcome, with its images
    outcomes = re.findall(
        r'<td class="num">(\d+)</td>\s*<td class="num">([^<]+)</td>\s*<td><span class="status s-(\w+)">', text
    )
    assert len(outcomes) == 10
    stored = dict(run.outcomes.values_list("instance_id_number", "status"))
    assert {int(n): status for n, _, status in outcomes} == stored
    assert OutcomeStatus.ROLLED_BACK in stored.values() or OutcomeStatus.ROLLBACK_FAILED in stored.values()
    assert f"<code>{factories.OLD_VERSION}</code> → <code>{factories.NEW_VERSION}</code>" in text
    # the event log
    count = RunEvent.objects.filter(run=run).count()
    assert f"{count} events" in text
    assert "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade" in text


def test_a_run_page_of_a_rolling_run_is_live(viewer, frozen_clock):
    scale_set = factories.outdated_scale_set(10)
    run = services.os_upgrade_now(scale_set=scale_set)
    text = text_of(viewer.get(f"/runs/{run.pk}/"))
    assert 'id="live-status"' in text
    assert f'RunPanel.connect("/ws/scale-sets/{scale_set.pk}/"' in text
    assert "still rolling forward" in text


def test_a_run_page_costs_the_same_queries_for_10_and_1000_instances(
    viewer, frozen_clock, drive, django_assert_num_queries
):
    small = factories.outdated_scale_set(10, name="small")
    large = factories.outdated_scale_set(1000, name="large", where=factories.region("westeurope"))
    runs = [drive(services.os_upgrade_now(scale_set=scale_set)) for scale_set in (small, large)]
    assert [r.successful_count for r in runs] == [10, 1000]
    # session, user, groups; the run with its set, region and actor; its batches; its
    # outcomes; the event count and the page of events; its audit entries
    for run in runs:
        with django_assert_num_queries(9):
            response = viewer.get(f"/runs/{run.pk}/")
        assert response.status_code == 200
    assert len(re.findall(r"<tr>\s*<td class=\"num\">", response.content.decode())) == 1000


def test_a_run_pages_event_log_is_paginated(viewer, frozen_clock, drive):
    scale_set = factories.outdated_scale_set(100)
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    count = RunEvent.objects.filter(run=run).count()
    assert count > 200
    first = text_of(viewer.get(f"/runs/{run.pk}/"))
    assert f"{count} events; showing 1–200, oldest first." in first
    last_page = (count - 1) // 200 + 1
    last = text_of(viewer.get(f"/runs/{run.pk}/?events={last_page}"))
    assert f"showing {(last_page - 1) * 200 + 1}–{count}" in last
    assert "Every targeted instance is done." in last
    assert "Every targeted instance is done." not in first


def test_an_unknown_run_is_a_404(viewer):
    assert viewer.get("/runs/424242/").status_code == 404


def test_history_and_run_pages_load_scripts_and_styles_only_from_static(viewer):
    scale_set = factories.scale_set(capacity=2, zones=[])
    run = finished_run(scale_set)
    for path in ["/history/", f"/scale-sets/{scale_set.pk}/history/", f"/runs/{run.pk}/"]:
        page = viewer.get(path).content.decode()
        sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page)
        assert sources, path
        assert all(src.startswith("/static/") for src in sources), sources
