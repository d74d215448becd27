"""The rollout pages (SPEC 5, R-AVAIL-1): the list and a rollout's phases × regions, kept live
over the rollouts socket; the fleet overview's banner; and the scale-set page's notices
(R-CRED-1, R-AUTO-4, automatic upgrades scheduled or running). Rollouts come from the beat's
real work, driven in simulated time (`drive_fleet`)."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from config.asgi import application
from fleet import clock
from fleet.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from fleet.models import FaultProfile, Region, UpgradeMode
from tests import factories
from tests.factories import NEW_KEY, NEW_VERSION
from tests.upgrades.test_extension_rollouts import MONITOR_NEW, ext_set, release
from tests.upgrades.test_rollouts import auto_set, fleet_of_twelve, publish_new
from upgrades import events, rollout_selectors, rollouts
from upgrades import services as upgrade_services
from upgrades.models import (
    Rollout,
    RolloutKind,
    RolloutStatus,
    RolloutStep,
    RolloutTarget,
    StepStatus,
    TargetStatus,
    UpgradeRun,
)

pytestmark = pytest.mark.django_db

ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(factories.user("vera", "viewers"))
    return client


def queries_for(client: Client, path: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, path
    return len(queries), response.content.decode()


def region_rows(page: str) -> dict[str, str]:
    """Region name -> the HTML of its row in the grid."""
    rows = re.findall(r'<th scope="row" class="region">([^<]+)</th>(.*?)</tr>', page, re.S)
    return dict(rows)


def zone_names(row: str) -> list[str]:
    return re.findall(r'<span class="zone-name">([^<]+)</span>', row)


# --- login and roles ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/rollouts/", "/rollouts/1/", "/rollouts/?fragment=1"])
def test_rollout_pages_send_anonymous_users_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_an_unknown_rollout_is_a_404(viewer):
    assert viewer.get("/rollouts/424242/").status_code == 404


# --- a real rollout on the pages ------------------------------------------------------------------


def test_viewers_see_a_completed_rollout_in_the_list_and_its_phases_regions_and_zones(viewer, drive_fleet):
    sets = fleet_of_twelve()
    publish_new(*Region.objects.all())
    drive_fleet()
    rollout = Rollout.objects.get()
    assert rollout.status == RolloutStatus.COMPLETED

    listing = viewer.get("/rollouts/")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert '<a href="/rollouts/">Rollouts</a>' in text  # in the nav
    assert f'<a href="/rollouts/{rollout.pk}/">#{rollout.pk}</a>' in text
    assert f"<code>{NEW_VERSION}</code>" in text
    phases = sorted(set(RolloutStep.objects.values_list("phase", flat=True)))
    assert f"phase {len(phases)} of {len(phases)}" in text
    assert "12 of 12 sets succeeded" in text

    page = viewer.get(f"/rollouts/{rollout.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert [f"Phase {n + 1}" for n in phases] == re.findall(r'<th scope="col" class="phase-head">(Phase \d+)', text)
    rows = region_rows(text)
    # regions in the order they were reached, each in its phase's column only
    by_phase = sorted(set(RolloutStep.objects.values_list("phase", "region__name")))
    assert list(rows) == [name for _, name in by_phase]
    for phase, name in by_phase:
        cells = re.findall(r'<td class="cell ([^"]+)">', rows[name])
        assert len(cells) == len(phases)
        assert [n for n, c in enumerate(cells) if c != "none"] == [phase]
        # the sets outside zones, then zone by zone in order
        assert zone_names(rows[name]) == ["not zonal", "zone 1", "zone 2", "zone 3"]
    for scale_set in sets:
        assert f'<a href="/scale-sets/{scale_set.pk}/">{scale_set.name}</a>' in text
    for run in UpgradeRun.objects.all():
        assert f'<a href="/runs/{run.pk}/">run #{run.pk}</a>' in text
    # a regional set's run: every instance of it; a zonal set's: the zone's three
    assert "6 succeeded · 0 failed · 0 in progress · 0 pending" in text
    assert "3 succeeded · 0 failed · 0 in progress · 0 pending" in text
    ended = rollout.ended_at.strftime("%H:%M")
    assert f"Completed at {ended} UTC: 12 sets upgraded in {len(phases)} phases." in text
    assert 'id="halt-reason"' not in text
    # live, and offline: scripts and styles only from static/
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', text)
    assert "/static/js/rollout_live.js" in sources
    assert all(src.startswith("/static/") for src in sources), sources
    assert f'socketPath: "/ws/rollouts/{rollout.pk}/"' in text


def test_a_halted_rollout_shows_its_halt_reason_on_its_page_and_in_the_list(viewer, drive_fleet):
    auto_set("web", factories.region("eastus"))
    FaultProfile.objects.create(target=NEW_KEY, never_healthy_share=1.0)
    publish_new(factories.region("eastus"))
    drive_fleet()
    rollout = Rollout.objects.get()
    assert rollout.status == RolloutStatus.HALTED
    assert rollout.halt_reason.startswith("Phase 1, eastus: web: run #")

    page = viewer.get(f"/rollouts/{rollout.pk}/").content.decode()
    reason = html.escape(rollout.halt_reason)
    halt = re.search(r'<div class="halt" id="halt-reason" role="alert">(.*?)</div>\s*</div>', page, re.S)
    assert halt is not None
    assert reason in halt[1]
    assert "Nothing more starts" in halt[1]
    assert 'id="rollout-explanation"' not in page  # the halt box says it all
    assert '<span class="status s-Failed">Failed</span>' in page  # the set's target

    listing = viewer.get("/rollouts/").content.decode()
    assert '<span class="status s-Halted">Halted</span>' in listing
    assert f"Halted: {html.escape(rollout.halt_reason.rstrip('.'))}; nothing more starts." in listing
    assert "0 of 1 set succeeded, 1 failed" in listing


def test_the_fragment_is_only_the_part_the_page_swaps_in(viewer, drive_fleet):
    auto_set("web", factories.region("eastus"))
    publish_new(factories.region("eastus"))
    drive_fleet()
    rollout = Rollout.objects.get()

    whole = viewer.get(f"/rollouts/{rollout.pk}/").content.decode()
    fragment = viewer.get(f"/rollouts/{rollout.pk}/?fragment=1").content.decode()
    assert "<html" in whole
    assert 'id="rollout-body"' in whole
    assert fragment.startswith('<section class="panel rollout-state')
    for frame in ("<html", "<nav", "<script", 'id="rollout-body"', "<h1"):
        assert frame not in fragment
    assert 'class="grid rollout-grid"' in fragment
    assert fragment.strip() in whole  # the page embeds exactly what the fragment returns

    listing = viewer.get("/rollouts/?fragment=1").content.decode()
    assert "<html" not in listing
    assert "<nav" not in listing
    assert f'href="/rollouts/{rollout.pk}/"' in listing


def test_the_list_fragments_page_links_lead_to_whole_pages(viewer, monkeypatch):
    monkeypatch.setattr("upgrades.rollout_views.ROLLOUTS_PAGE_SIZE", 1)
    for n in range(2):
        Rollout.objects.create(
            kind=RolloutKind.EXTENSION,
            target=f"Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@1.{n + 1}",
            status=RolloutStatus.COMPLETED,
            created_at=clock.now(),
            not_before=clock.now(),
        )
    fragment = viewer.get("/rollouts/?fragment=1").content.decode()
    assert 'href="?page=2"' in fragment
    assert "fragment" not in fragment


def test_the_pages_cost_the_same_queries_for_2_and_8_sets(viewer, drive_fleet):
    first = factories.region("first")
    auto_set("first-a", first)
    auto_set("first-z", first, capacity=6, zones=["1", "2", "3"])
    publish_new(first)
    drive_fleet()
    small = Rollout.objects.get()
    assert RolloutTarget.objects.filter(step__rollout=small).values("scale_set").distinct().count() == 2
    # session, user, groups (the frame); the rollout; its steps; its targets with sets and runs
    detail_small, _ = queries_for(viewer, f"/rollouts/{small.pk}/")
    assert detail_small == 6
    assert queries_for(viewer, f"/rollouts/{small.pk}/?fragment=1")[0] == 6
    # the frame; the count and the page of rollouts; their steps; their targets
    assert queries_for(viewer, "/rollouts/")[0] == 7

    second = factories.region("second")
    for n in range(6):
        auto_set(f"second-{n}", second, capacity=3, zones=["1", "2"] if n % 2 else [])
    factories.publish("18.04.202503030", first, second, at=clock.now())
    drive_fleet()
    large = Rollout.objects.exclude(pk=small.pk).get()
    assert large.status == RolloutStatus.COMPLETED
    assert RolloutTarget.objects.filter(step__rollout=large).values("scale_set").distinct().count() == 8
    detail_large, text = queries_for(viewer, f"/rollouts/{large.pk}/")
    assert detail_large == detail_small
    assert "8 of 8 sets succeeded" in text
    assert queries_for(viewer, "/rollouts/")[0] == 7


# --- what it is doing, in plain words --------------------------------------------------------------


def test_a_waiting_rollout_says_until_when(frozen_clock, settings):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 1800
    auto_set("web", factories.region("eastus"))
    publish_new(factories.region("eastus"))
    rollouts.automatic_upgrades_scan()
    rollout = Rollout.objects.get()
    assert rollout.status == RolloutStatus.WAITING
    assert rollout_selectors.rollout_explanation(rollout) == "Waiting for the trigger delay until 12:30 UTC."
    frozen_clock.advance(86400)  # another day: the date too
    rollout.not_before = clock.now() + dt.timedelta(days=1)
    assert rollout_selectors.rollout_explanation(rollout) == "Waiting for the trigger delay until 2026-06-03 12:00 UTC."


def test_a_rolling_rollout_says_which_zone_upgrades_and_how_far(drive_fleet, settings):
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    solo = factories.region("solo")
    auto_set("zonal-1", solo, capacity=9, zones=["1", "2", "3"])
    auto_set("zonal-2", solo, capacity=6, zones=["1", "2", "3"])
    publish_new(solo)
    drive_fleet(until=lambda: RolloutTarget.objects.filter(step__zone="2", status=TargetStatus.RUNNING).count() == 2)
    rollout = Rollout.objects.get()
    assert rollout_selectors.rollout_explanation(rollout) == "Phase 1 of 1: solo zone 2 upgrading (0 of 2 sets done)."
    (row,) = rollout_selectors.rollout_rows()
    assert row.phase_label == "phase 1 of 1"
    assert (row.sets.succeeded, row.sets.remaining, row.sets.total) == (0, 2, 2)  # zones 2 and 3 to go
    assert row.sets.more_to_come  # zone 3 has not started: its sets are not known yet


def test_a_halted_extension_rollout_says_when_it_retries_r_ext_2(drive_fleet, settings):
    settings.EXTENSION_UPGRADE_RETRY_SECONDS = 2 * 86400
    ext_set()
    FaultProfile.objects.create(target=MONITOR_NEW, provisioning_failure_share=1.0)
    release(MONITOR_NEW)
    drive_fleet(until=lambda: Rollout.objects.filter(status=RolloutStatus.HALTED).exists())
    rollout = Rollout.objects.get()
    words = rollout_selectors.rollout_explanation(rollout)
    assert words.startswith(f"Halted: {rollout.halt_reason.rstrip('.')}; retrying at ")
    assert words.endswith(f"{rollout.retry_at:%Y-%m-%d %H:%M} UTC (attempt 2).")


# --- the fleet overview's banner --------------------------------------------------------------------


def test_the_fleet_overview_lists_open_rollouts_with_a_link_to_each(viewer, settings, frozen_clock):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 1800
    auto_set("web", factories.region("eastus"))
    before, text = queries_for(viewer, "/")
    assert "rollout-banner" not in text
    # session, user, groups; the sets with their counts, their images, their target images,
    # their latest runs; the regions filter; the open rollouts
    assert before == 9

    publish_new(factories.region("eastus"))
    rollouts.automatic_upgrades_scan()
    waiting = Rollout.objects.get()
    done = Rollout.objects.create(
        kind=RolloutKind.EXTENSION,
        target="Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@1.1",
        status=RolloutStatus.COMPLETED,
        created_at=clock.now(),
        not_before=clock.now(),
    )
    one, text = queries_for(viewer, "/")
    banner = re.search(r'<aside class="rollout-banner".*?</aside>', text, re.S)[0]
    assert f'<a href="/rollouts/{waiting.pk}/"' in banner
    assert f"#{waiting.pk} OS image {NEW_VERSION}" in banner
    assert "starts Jun 1, 12:30 UTC" in banner
    assert f"/rollouts/{done.pk}/" not in banner  # finished: not on the banner
    assert one == before

    for n in range(2):
        Rollout.objects.create(
            kind=RolloutKind.EXTENSION,
            target=f"Microsoft.Azure.Extensions.CustomScript@2.{n + 2}",
            status=RolloutStatus.HALTED,
            halt_reason="Phase 1, eastus: web: failed.",
            created_at=clock.now(),
            not_before=clock.now(),
        )
    three, text = queries_for(viewer, "/")
    assert three == one
    assert text.count('<span class="status s-Halted" title="Phase 1, eastus: web: failed.">halted</span>') == 2


# --- the scale-set page's notices -------------------------------------------------------------------


def test_the_scale_set_page_warns_of_a_credential_about_to_expire_and_one_expired_r_cred_1(viewer, frozen_clock):
    soon = factories.scale_set(
        "soon", capacity=2, zones=[], extensions=[factories.key_vault(clock.now() + dt.timedelta(days=3))]
    )
    text = viewer.get(f"/scale-sets/{soon.pk}/").content.decode()
    warning = re.search(r'<div class="notice notice-warn credential" >(.*?)</div>', text, re.S)
    assert warning is not None
    assert "The credential in KeyVault&#x27;s protected settings expires on 2026-06-04 12:00 UTC" in warning[1]

    gone = factories.scale_set(
        "gone", capacity=2, zones=[], extensions=[factories.key_vault(clock.now() - dt.timedelta(days=1))]
    )
    text = viewer.get(f"/scale-sets/{gone.pk}/").content.decode()
    error = re.search(r'<div class="notice notice-error credential" role="alert">(.*?)</div>', text, re.S)
    assert error is not None
    assert "expired on 2026-05-31 12:00 UTC" in error[1]

    far = factories.scale_set(
        "far", capacity=2, zones=[], extensions=[factories.key_vault(clock.now() + dt.timedelta(days=300))]
    )
    assert "credential" not in viewer.get(f"/scale-sets/{far.pk}/").content.decode().lower()


def test_the_scale_set_page_says_automatic_upgrades_skip_instances_not_on_the_latest_model_r_auto_4(viewer, drive):
    scale_set = auto_set("web", factories.region("eastus"), upgrade_mode=UpgradeMode.MANUAL)
    notice = "not on the latest model: automatic OS upgrades skip them until you bring them to the latest model"
    assert notice not in viewer.get(f"/scale-sets/{scale_set.pk}/").content.decode()

    upgrade_services.update_model(scale_set=scale_set, changes={"vm_size": "Standard_D4s_v3"})
    text = viewer.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    assert f"6 instances are {notice} (manual upgrade)." in text

    scale_set.refresh_from_db()
    drive(upgrade_services.manual_upgrade(scale_set=scale_set, instance_ids=[0, 1, 2, 3, 4]))
    assert f"1 instance is {notice}" in viewer.get(f"/scale-sets/{scale_set.pk}/").content.decode()

    upgrade_services.automatic_os_upgrade_set(scale_set=scale_set, enabled=False)
    assert notice not in viewer.get(f"/scale-sets/{scale_set.pk}/").content.decode()


def test_the_scale_set_page_says_when_an_automatic_upgrade_is_scheduled_then_running(viewer, drive_fleet, settings):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 0
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 3 * 3600
    scale_set = auto_set("web", factories.region("eastus"))
    publish_new(scale_set.region)
    drive_fleet(until=lambda: RolloutTarget.objects.exists())
    target = RolloutTarget.objects.select_related("step__rollout").get()
    rollout = target.step.rollout
    assert target.status == TargetStatus.SCHEDULED

    count, text = queries_for(viewer, f"/scale-sets/{scale_set.pk}/")
    link = f'(<a href="/rollouts/{rollout.pk}/">rollout #{rollout.pk}</a>)'
    moment = target.due_at.astimezone(dt.UTC)
    when = (
        f'<time datetime="{moment.isoformat()}" title="{moment:%Y-%m-%d %H:%M:%S} UTC" data-local>'
        f"{moment:%Y-%m-%d %H:%M:%S} UTC</time>"
    )
    assert f"Automatic OS upgrade to {NEW_VERSION} scheduled at {when} {link}" in text
    # the page's queries (tests/fleet/test_pages.py, the audit panel's included) and the set's
    # rollouts, one query
    assert count == 10

    drive_fleet(until=lambda: RolloutTarget.objects.filter(status=TargetStatus.RUNNING).exists())
    target.refresh_from_db()
    count, text = queries_for(viewer, f"/scale-sets/{scale_set.pk}/")
    run = f'<a href="/runs/{target.run_id}/">run #{target.run_id}</a>'
    rollout_link = f'<a href="/rollouts/{rollout.pk}/">rollout #{rollout.pk}</a>'
    assert f"Automatic OS upgrade to {NEW_VERSION} in progress ({rollout_link}, {run})" in text
    assert count == 10 + 1  # and the run panel's batches, as for any run (the platform has no actor row)

    drive_fleet()
    assert "Automatic OS upgrade to" not in viewer.get(f"/scale-sets/{scale_set.pk}/").content.decode()


# --- the socket -----------------------------------------------------------------------------------


@database_sync_to_async
def logged_in_cookie() -> bytes:
    client = Client()
    client.force_login(factories.user("ann", "viewers"))
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def communicator(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])


async def closed_with(socket: WebsocketCommunicator) -> int:
    connected, _ = await socket.connect()
    assert connected
    message = await socket.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    return message["code"]


@database_sync_to_async
def make_rollout(version: str = "1.1") -> Rollout:
    return Rollout.objects.create(
        kind=RolloutKind.EXTENSION,
        target=f"Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@{version}",
        status=RolloutStatus.ROLLING_OUT,
        created_at=clock.now(),
        not_before=clock.now(),
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/ws/rollouts/", "/ws/rollouts/1/"])
async def test_the_rollout_socket_refuses_anonymous_users(path):
    assert await closed_with(communicator(path)) == CLOSE_UNAUTHENTICATED


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_socket_of_an_unknown_rollout_is_closed_with_not_found():
    cookie = await logged_in_cookie()
    assert await closed_with(communicator("/ws/rollouts/999999/", (b"cookie", cookie))) == CLOSE_NOT_FOUND


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_rollout_change_reaches_its_page_and_the_list_but_not_other_rollouts_pages():
    watched, other = await make_rollout("1.1"), await make_rollout("1.2")
    cookie = await logged_in_cookie()
    page = communicator(f"/ws/rollouts/{watched.pk}/", (b"cookie", cookie))
    listing = communicator("/ws/rollouts/", (b"cookie", cookie))
    assert (await page.connect())[0]
    assert (await listing.connect())[0]

    await database_sync_to_async(events.rollout_changed)(watched.pk)
    assert await page.receive_json_from(timeout=5) == {"type": "changed"}
    assert await listing.receive_json_from(timeout=5) == {"type": "changed"}

    await database_sync_to_async(events.rollout_changed)(other.pk)
    assert await listing.receive_json_from(timeout=5) == {"type": "changed"}
    assert await page.receive_nothing(timeout=0.3)
    await page.disconnect()
    await listing.disconnect()


@database_sync_to_async
def rollout_with_a_running_run() -> tuple[Rollout, RolloutTarget]:
    scale_set = factories.outdated_scale_set(4, name="web")
    run = upgrade_services.os_upgrade_now(scale_set=scale_set)
    rollout = Rollout.objects.create(
        kind=RolloutKind.OS_IMAGE,
        target=NEW_KEY,
        status=RolloutStatus.ROLLING_OUT,
        created_at=clock.now(),
        not_before=clock.now(),
    )
    step = RolloutStep.objects.create(
        rollout=rollout, phase=0, region=scale_set.region, position=0, status=StepStatus.IN_PROGRESS
    )
    target = RolloutTarget.objects.create(
        step=step, scale_set=scale_set, status=TargetStatus.RUNNING, due_at=clock.now(), run=run
    )
    return rollout, target


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_progress_of_a_rollouts_run_reaches_its_page_until_the_run_is_done():
    rollout, target = await rollout_with_a_running_run()
    cookie = await logged_in_cookie()
    page = communicator(f"/ws/rollouts/{rollout.pk}/", (b"cookie", cookie))
    listing = communicator("/ws/rollouts/", (b"cookie", cookie))
    assert (await page.connect())[0]
    assert (await listing.connect())[0]

    await database_sync_to_async(events.run_changed)(target.run_id)
    assert await page.receive_json_from(timeout=5) == {"type": "changed"}
    assert await listing.receive_nothing(timeout=0.3)  # the list shows no run's progress

    # The rollout took the run's verdict: its page stops listening to the run.
    await database_sync_to_async(RolloutTarget.objects.filter(pk=target.pk).update)(status=TargetStatus.SUCCEEDED)
    await database_sync_to_async(events.rollout_changed)(rollout.pk)
    assert await page.receive_json_from(timeout=5) == {"type": "changed"}
    assert await listing.receive_json_from(timeout=5) == {"type": "changed"}
    await database_sync_to_async(events.run_changed)(target.run_id)
    assert await page.receive_nothing(timeout=0.3)
    await page.disconnect()
    await listing.disconnect()


def test_a_phase_that_failed_has_ended_though_its_later_zones_never_start(drive_fleet):
    from upgrades.rollout_selectors import rollout_grid

    auto_set("zonal", factories.region("eastus"), capacity=6, zones=["1", "2", "3"])
    FaultProfile.objects.create(target=NEW_KEY, never_healthy_share=1.0)
    publish_new(factories.region("eastus"))
    drive_fleet()
    rollout = Rollout.objects.get()
    (phase,) = rollout_grid(rollout).phases
    assert {s.status for s in phase.steps} >= {"Failed", "Pending"}
    assert phase.ended_at == rollout.halted_at
