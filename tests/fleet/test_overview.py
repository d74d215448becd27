"""The fleet overview (the scale-set list): columns, filters, sorting, the fleet heatmap, the
JSON rows the live page re-fetches, and a fixed number of queries whatever the fleet's size."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from fleet import clock, services
from fleet.drivers import PowerAction
from fleet.heatmap import STATE_KEYS
from fleet.models import Instance, ScaleSet
from tests import factories
from upgrades import services as upgrade_services
from upgrades.models import RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(factories.user("vera", "viewers"))
    return client


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Runs started here are not sent to a Celery worker (there is none)."""
    sent: list[int] = []
    monkeypatch.setattr("upgrades.tasks.run_advance_task.delay", sent.append)
    return sent


def names(response: Any) -> list[str]:
    return re.findall(r'<a href="/scale-sets/\d+/">([^<]+)</a>', response.content.decode())


def heatmap_data(response: Any) -> dict[str, Any]:
    found = re.search(
        r'<script id="fleet-heatmap-data" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert found is not None
    return dict(json.loads(found[1]))


def row_html(response: Any, scale_set: ScaleSet) -> str:
    found = re.search(rf'<tr data-id="{scale_set.pk}".*?</tr>', response.content.decode(), re.S)
    assert found is not None
    return found[0]


def queries(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


# --- columns --------------------------------------------------------------------------------


def test_each_row_shows_group_region_zones_capacity_mode_and_automatic_upgrades(viewer: Client) -> None:
    scale_set = factories.scale_set("web", capacity=4, zones=["1", "2"], upgrade_mode="Rolling")
    row = row_html(viewer.get("/"), scale_set)
    cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[:7] == [["web"], ["rg-test"], ["eastus"], ["1,", "2"], ["4"], ["Rolling"], ["off"]]


def test_the_health_bar_counts_each_health_state_in_text_and_on_hover(viewer: Client) -> None:
    scale_set = factories.scale_set("web", capacity=6, zones=[])
    services.instances_power(scale_set=scale_set, instance_ids=[0], action=PowerAction.POWER_OFF)
    Instance.objects.filter(scale_set=scale_set, instance_id=1).update(health_state="Unhealthy")
    Instance.objects.filter(scale_set=scale_set, instance_id=2).update(health_state="Initializing")
    Instance.objects.filter(scale_set=scale_set, instance_id=3).update(health_state="Unknown")
    row = row_html(viewer.get("/"), scale_set)
    assert '<div class="sub">2 healthy, 1 unhealthy, 1 initializing, 1 unknown, 1 stopped</div>' in row
    assert 'aria-label="Health: 2 healthy, 1 unhealthy, 1 initializing, 1 unknown, 1 stopped"' in row
    assert 'title="1 stopped"' in row


def test_the_version_bar_shares_instances_per_image_and_marks_the_latest(viewer: Client) -> None:
    scale_set = factories.scale_set("web", capacity=5, zones=[])
    factories.publish(factories.NEW_VERSION, factories.region())
    Instance.objects.filter(scale_set=scale_set, instance_id__lt=2).update(os_image=factories.NEW_KEY)
    row = row_html(viewer.get("/"), scale_set)
    assert f"2 of 5 on latest → {factories.NEW_VERSION}" in row
    assert f'title="3 {factories.OLD_VERSION}"' in row
    assert f'<span class="part latest" style="flex-grow: 2;" title="2 {factories.NEW_VERSION} (latest)">' in row


def test_a_rolling_run_shows_its_batch_and_phase_and_a_finished_one_its_status_and_time(
    viewer: Client, no_worker: list[int]
) -> None:
    scale_set = factories.outdated_scale_set(capacity=10)
    run = upgrade_services.os_upgrade_now(scale_set=scale_set)
    row = row_html(viewer.get("/"), scale_set)
    assert f'<a href="/runs/{run.pk}/"' in row
    assert f"batch 1/{run.batch_count} · 0/10" in row
    assert '<div class="sub phase">Checking the set&#x27;s health before the next batch</div>' in row

    UpgradeRun.objects.filter(pk=run.pk).update(status=RunStatus.FAULTED, ended_at=run.started_at)
    row = row_html(viewer.get("/"), scale_set)
    assert '<span class="status s-Faulted">faulted</span>' in row
    assert f'<time datetime="{run.started_at.isoformat()}">' in row


# --- filters and sorting --------------------------------------------------------------------


def test_text_matches_the_name_or_the_resource_group(viewer: Client) -> None:
    factories.scale_set("web", capacity=1)
    other = factories.scale_set("api", capacity=1)
    ScaleSet.objects.filter(pk=other.pk).update(resource_group="rg-payments")
    assert names(viewer.get("/?q=PAY")) == ["api"]
    assert names(viewer.get("/?q=we")) == ["web"]


def test_the_run_state_filter_finds_sets_upgrading_failed_last_not_on_latest_or_never_upgraded(
    viewer: Client, no_worker: list[int]
) -> None:
    upgrading = factories.scale_set("upgrading", capacity=3, zones=[])
    failed = factories.scale_set("failed", capacity=3, zones=[])
    factories.scale_set("never", capacity=3, zones=[])
    factories.publish(factories.NEW_VERSION, factories.region(), at=clock.now() - dt.timedelta(seconds=1))
    upgrade_services.os_upgrade_now(scale_set=upgrading)
    run = upgrade_services.os_upgrade_now(scale_set=failed)
    UpgradeRun.objects.filter(pk=run.pk).update(status=RunStatus.FAULTED, ended_at=run.started_at)
    Instance.objects.filter(scale_set=failed).update(os_image=factories.NEW_KEY)
    assert names(viewer.get("/?state=upgrading")) == ["upgrading"]
    assert names(viewer.get("/?state=failed")) == ["failed"]
    assert names(viewer.get("/?state=none")) == ["never"]
    assert names(viewer.get("/?state=outdated")) == ["never", "upgrading"]
    assert names(viewer.get("/?state=bogus")) == ["failed", "never", "upgrading"]


def test_sorting_by_a_column_orders_rows_and_says_so_with_aria_sort(viewer: Client) -> None:
    for name, capacity in [("b", 3), ("a", 5), ("c", 1)]:
        factories.scale_set(name, capacity=capacity, zones=[])
    assert names(viewer.get("/")) == ["a", "b", "c"]
    response = viewer.get("/?sort=capacity&dir=desc")
    assert names(response) == ["a", "b", "c"]
    assert names(viewer.get("/?sort=capacity")) == ["c", "b", "a"]
    html = response.content.decode()
    assert '<th scope="col" data-key="capacity" aria-sort="descending"><button type="button" class="sort">' in html
    assert '<th scope="col" data-key="name" aria-sort="none">' in html
    assert names(viewer.get("/?sort=nonsense")) == ["a", "b", "c"]


def test_nothing_matching_shows_the_empty_state_with_a_way_back(viewer: Client) -> None:
    factories.scale_set("web", capacity=1)
    html = viewer.get("/?q=nothing").content.decode()
    assert '<p class="empty" id="fleet-empty">No scale set matches.' in html
    assert '<a href="/">Clear the filters</a>' in html


# --- the fleet heatmap ----------------------------------------------------------------------


def test_the_heatmap_has_a_row_per_set_in_table_order_and_a_column_per_update_domain(viewer: Client) -> None:
    big = factories.scale_set("big", capacity=30, zones=[])
    small = factories.scale_set("small", capacity=3, zones=[])
    data = heatmap_data(viewer.get("/?sort=capacity"))
    assert [row["name"] for row in data["rows"]] == ["small", "big"]
    assert [s["key"] for s in data["states"]] == STATE_KEYS
    by_name = {row["name"]: row for row in data["rows"]}
    assert len(by_name["big"]["cells"]) == 20
    up_to_date = STATE_KEYS.index("up_to_date")
    domains_of_big = set(Instance.objects.filter(scale_set=big).values_list("update_domain", flat=True))
    assert {ud for ud, cell in enumerate(by_name["big"]["cells"]) if cell is not None} == domains_of_big
    assert {cell for cell in by_name["big"]["cells"] if cell is not None} == {up_to_date}
    assert sum(c["up_to_date"] for c in by_name["small"]["counts"] if c) == small.capacity
    assert data["detail_url"] == "/scale-sets/0/"


def test_a_cell_takes_the_state_that_most_needs_attention_and_counts_every_state(viewer: Client) -> None:
    scale_set = factories.scale_set("web", capacity=10, zones=[])
    domain = Instance.objects.filter(scale_set=scale_set, instance_id=0).values_list("update_domain", flat=True)[0]
    in_domain = Instance.objects.filter(scale_set=scale_set, update_domain=domain).order_by("instance_id")
    ids = list(in_domain.values_list("pk", flat=True))
    assert len(ids) >= 2
    Instance.objects.filter(pk=ids[0]).update(last_upgrade_outcome="Failed")
    Instance.objects.filter(pk=ids[1]).update(health_state="Unhealthy")
    row = heatmap_data(viewer.get("/"))["rows"][0]
    assert row["cells"][domain] == STATE_KEYS.index("failed")
    expected = {"unhealthy": 1, "failed": 1}
    if len(ids) > 2:
        expected["up_to_date"] = len(ids) - 2
    assert row["counts"][domain] == expected


# --- the JSON rows of the live page ---------------------------------------------------------


def test_the_json_rows_are_those_asked_for_whatever_the_filters_with_missing_ones_named(viewer: Client) -> None:
    web = factories.scale_set("web", capacity=2, zones=[])
    api = factories.scale_set("api", capacity=2, zones=[])
    answer = viewer.get(f"/?format=json&q=web&ids={api.pk},{web.pk},999999,x").json()
    assert [row["id"] for row in answer["rows"]] == [api.pk, web.pk]
    assert answer["missing"] == [999999]
    first = answer["rows"][0]
    assert first["html"].startswith(f'<tr data-id="{api.pk}" data-name="api"')
    assert '<a href="/scale-sets/' in first["html"]
    assert first["heatmap"]["name"] == "api"


def test_the_json_rows_without_ids_follow_the_filters(viewer: Client) -> None:
    factories.scale_set("web", capacity=1)
    factories.scale_set("api", capacity=1, upgrade_mode="Rolling")
    answer = viewer.get("/?format=json&mode=Rolling").json()
    assert [row["heatmap"]["name"] for row in answer["rows"]] == ["api"]


def test_the_overview_and_its_json_require_login(client: Client) -> None:
    assert client.get("/?format=json&ids=1").status_code == 302


# --- queries --------------------------------------------------------------------------------


def _fleet(count: int, no_worker: list[int]) -> None:
    """`count` sets, some with runs (one rolling, one faulted), a new image published."""
    existing = ScaleSet.objects.count()
    for n in range(existing, count):
        factories.scale_set(f"set-{n:03d}", capacity=4, zones=[])
    factories.publish(factories.NEW_VERSION, factories.region())
    for scale_set in ScaleSet.objects.order_by("pk")[:2]:
        if not scale_set.runs.exists():
            upgrade_services.os_upgrade_now(scale_set=scale_set)
    UpgradeRun.objects.filter(pk=UpgradeRun.objects.order_by("pk").values("pk")[:1]).update(status=RunStatus.FAULTED)


def test_the_page_and_its_json_cost_the_same_queries_for_5_and_50_sets(
    viewer: Client, no_worker: list[int], django_assert_num_queries: Any
) -> None:
    _fleet(5, no_worker)
    ids = ",".join(str(pk) for pk in ScaleSet.objects.values_list("pk", flat=True))
    # session, user, groups; the sets, one aggregate over their instances, their target
    # images, their latest runs; the regions filter; the open rollouts
    with django_assert_num_queries(9):
        viewer.get("/")
    # session, user; the same four; no groups (no page frame), regions or rollouts
    with django_assert_num_queries(6):
        viewer.get(f"/?format=json&ids={ids}")
    _fleet(50, no_worker)
    ids = ",".join(str(pk) for pk in ScaleSet.objects.values_list("pk", flat=True))
    assert ScaleSet.objects.count() == 50
    with django_assert_num_queries(9):
        response = viewer.get("/")
    assert len(heatmap_data(response)["rows"]) == 50
    with django_assert_num_queries(6):
        assert len(viewer.get(f"/?format=json&ids={ids}").json()["rows"]) == 50
    assert queries(viewer, "/?state=upgrading&sort=health&dir=desc") == 9


def test_the_heatmap_reads_instances_in_one_grouped_query(viewer: Client) -> None:
    for n in range(6):
        factories.scale_set(f"set-{n}", capacity=5, zones=[])
    with CaptureQueriesContext(connection) as captured:
        viewer.get("/")
    over_instances = [q["sql"] for q in captured if 'FROM "fleet_instance"' in q["sql"]]
    assert len(over_instances) == 1
    assert "GROUP BY" in over_instances[0]
