"""The run page's replay, end to end: an automatic OS upgrade with failures and rollbacks runs
to its end on the real worker and beat; on its page, the scrubber (moved with the keyboard)
redraws every instance's cell as the event log says it was at that moment, the batch
timeline and the counts chart mark the moment, and Play runs the replay to the end.

The expected states are folded here from the RunEvent rows read in a subprocess, not from
replay.json. The server, worker, beat and database come from conftest.py (`console`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.browser.conftest import ConsoleServer
from tests.browser.test_heatmap_live import log_in

CAPACITY = 10
TICKS = 1000  # the scrubber's positions (static/js/replay.js)

# The page asks replay.json every half second until the run is no longer active, and says so in
# window.runEnded (wait_for_function takes a Promise for true, so the asking cannot be its predicate).
WATCH_RUN = """(url) => {
  window.runEnded = false;
  (async function ask() {
    const response = await fetch(url, {credentials: "same-origin"});
    if (response.ok && (await response.json()).run.active === false) window.runEnded = true;
    else setTimeout(ask, 500);
  })();
}"""
DRAWN_STATES = "(ids) => ids.map((id) => window.Replay.drawnStateOf(id))"
SETTLED = "() => window.Replay.ready && window.Replay.drawnMoment() === window.Replay.moment()"


@pytest.fixture
def finished_run(console: ConsoleServer) -> Iterator[dict[str, Any]]:
    """An automatic OS upgrade on a set of its own, in a region of its own (the session's
    `web` set keeps its latest image), where 30% never become healthy and are rolled back;
    started in a subprocess as the platform would, driven by the real worker and beat."""
    started = console.django(
        f"""
        from tests import factories
        from upgrades import services
        from upgrades.models import Kind, StartedBy

        scale_set = factories.outdated_scale_set(
            {CAPACITY}, bad_share=0.3, name="replayed", where=factories.region("uksouth"),
            max_unhealthy_upgraded_instance_percent=100,
        )
        run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
        result = {{"run_id": run.pk}}
        """
    )
    try:
        yield started
    finally:
        # The fault knob is keyed by image, not by set: leave none behind for other tests.
        console.django(
            """
            from fleet.models import FaultProfile
            from tests import factories
            FaultProfile.objects.filter(target=factories.NEW_KEY).delete()
            """
        )


def event_log(console: ConsoleServer, run_id: int) -> dict[str, Any]:
    return console.django(
        f"""
        from upgrades.models import InstanceOutcome, RunEvent, UpgradeRun

        run = UpgradeRun.objects.get(pk={run_id})
        outcomes = InstanceOutcome.objects.filter(run=run)
        result = {{
            "started_at": run.started_at.isoformat(),
            "ended_at": run.ended_at.isoformat(),
            "outcomes": list(outcomes.values_list("instance_id_number", "batch_id", "status")),
            "events": [
                [e.at.isoformat(), e.instance_id_number, e.batch_index, e.to_state]
                for e in RunEvent.objects.filter(run=run).order_by("at", "pk")
            ],
        }}
        """
    )


def states_at(log: dict[str, Any], ms: int) -> dict[int, str]:
    """The log folded: targeted instances start Pending, skipped ones Skipped; each instance
    event up to `ms` after the start (event times in whole milliseconds, as the replay
    counts them) sets its instance's state."""
    start = dt.datetime.fromisoformat(log["started_at"])
    states = {number: "Skipped" if batch is None else "Pending" for number, batch, _status in log["outcomes"]}
    for at, number, _batch, to_state in log["events"]:
        if number is not None and round((dt.datetime.fromisoformat(at) - start).total_seconds() * 1000) <= ms:
            states[number] = to_state
    return states


def mid_batch_tick(log: dict[str, Any], start: dt.datetime, duration_ms: int) -> int:
    """A scrubber position halfway between a batch's start and its health wait (the batch
    whose upgrade took longest, so the position surely falls inside it)."""

    def moments(what: str) -> dict[int, dt.datetime]:
        return {e[2]: dt.datetime.fromisoformat(e[0]) for e in log["events"] if e[3] == what}

    started, waiting = moments("batch_started"), moments("health_wait")
    batch = max(waiting, key=lambda index: waiting[index] - started[index])
    middle_ms = ((started[batch] - start) + (waiting[batch] - start)).total_seconds() * 1000 / 2
    return round(middle_ms / duration_ms * TICKS)


def drawn(page: Any) -> dict[int, str]:
    page.wait_for_function(SETTLED)
    return dict(zip(range(CAPACITY), page.evaluate(DRAWN_STATES, list(range(CAPACITY))), strict=True))


def plotly_utc(iso: str) -> str:
    """The page's moment as Plotly's UTC wall time ('2026-06-01 12:00:01.250')."""
    return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def move_scrubber_to(page: Any, tick: int) -> None:
    """With the keyboard only: Home, then Page Up (a tenth) and arrows."""
    scrubber = page.locator("#replay-scrubber")
    scrubber.focus()
    page.keyboard.press("Home")
    for _ in range(tick // 100):
        page.keyboard.press("PageUp")
    for _ in range(tick % 100):
        page.keyboard.press("ArrowRight")
    expect(scrubber).to_have_value(str(tick))


def test_scrubbing_redraws_the_logged_states_and_play_runs_to_the_end(
    page: Any, console: ConsoleServer, finished_run: dict[str, Any]
) -> None:
    run_id = finished_run["run_id"]
    page.goto(f"{console.base_url}/login/")
    log_in(page, console)
    replay_url = f"{console.base_url}/runs/{run_id}/replay.json"
    try:
        page.evaluate(WATCH_RUN, replay_url)
        page.wait_for_function("() => window.runEnded === true", timeout=120_000)
    except PlaywrightError as error:
        raise AssertionError(f"run {run_id} did not end in 120 s ({error})") from None

    log = event_log(console, run_id)
    start, end = dt.datetime.fromisoformat(log["started_at"]), dt.datetime.fromisoformat(log["ended_at"])
    page.goto(f"{console.base_url}/runs/{run_id}/")
    page.wait_for_function("() => window.Replay.ready === true")
    duration_ms = page.evaluate("() => window.Replay.duration()")
    assert abs(start + dt.timedelta(milliseconds=duration_ms) - end) <= dt.timedelta(milliseconds=1)

    # It opens on the end: every cell as the run left it.
    final = {number: status for number, _batch, status in log["outcomes"]}
    assert drawn(page) == final == states_at(log, duration_ms)
    # the bad share never becomes healthy, whatever the timing: failed, then rolled back (or not)
    assert set(final.values()) & {"Failed", "RolledBack", "RollbackFailed"}, final

    # The start: everything pending.
    move_scrubber_to(page, 0)
    assert drawn(page) == states_at(log, 0) == {n: "Pending" for n in range(CAPACITY)}

    # Mid-batch, moved there by keyboard: exactly what the log says at that moment.
    move_scrubber_to(page, mid_batch_tick(log, start, duration_ms))
    moment_ms = page.evaluate("() => window.Replay.moment()")
    expected = states_at(log, moment_ms)
    assert "InProgress" in expected.values(), "the moment is inside a batch"
    assert drawn(page) == expected
    moment_iso = page.evaluate("() => window.Replay.momentIso()")
    assert abs(dt.datetime.fromisoformat(moment_iso) - (start + dt.timedelta(milliseconds=moment_ms))) < dt.timedelta(
        milliseconds=1
    )
    for element in ("timeline", "replay-counts"):
        line = page.evaluate(
            f"() => document.getElementById('{element}').layout.shapes.find((s) => s.name === 'replay-moment').x0"
        )
        assert line == plotly_utc(moment_iso), f"the {element} marks the moment"
    time = page.locator("#replay-time")
    expect(time).to_have_attribute("title", f"{moment_iso} (UTC)")
    expect(page.locator('#replay-legend li[data-state="InProgress"] .count')).to_have_text(
        str(list(expected.values()).count("InProgress"))
    )

    # Space on the scrubber plays; the time moves on to the end, where it stops.
    shown = time.text_content() or ""
    assert "+0:00.0 of" not in shown
    page.keyboard.press("Space")
    expect(page.locator("#replay-play")).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(f"() => window.Replay.moment() > {moment_ms}")
    page.wait_for_function(
        "() => window.Replay.moment() === window.Replay.duration() && !window.Replay.playing()", timeout=30_000
    )
    expect(page.locator("#replay-play")).to_have_attribute("aria-pressed", "false")
    total = re.search(r" of ([\d:.]+)\)$", shown)
    assert total, shown
    expect(time).to_have_text(re.compile(rf"\(\+{re.escape(total[1])} of {re.escape(total[1])}\)$"))
    end_iso = page.evaluate("() => window.Replay.momentIso()")
    # the page counts from the start in whole milliseconds: within a rounding of the stored end
    assert abs(dt.datetime.fromisoformat(end_iso) - end) <= dt.timedelta(milliseconds=2)
    expect(time).to_have_attribute("title", f"{end_iso} (UTC)")
    assert drawn(page) == final
    expect(page.locator("#replay-scrubber")).to_have_value(str(TICKS))

    # The play button plays again from the start.
    page.locator("#replay-play").click()
    page.wait_for_function("() => window.Replay.playing() && window.Replay.moment() < window.Replay.duration()")
