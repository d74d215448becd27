"""The live heatmap, end to end: a change made through a service in another process reaches
an open page over the WebSocket and recolours exactly its cell, without a reload; and the
page and its socket are closed to anyone not logged in.

The server, worker, beat and database come from conftest.py (`console`); the page is
Debian's Chromium (`page`)."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from fleet.heatmap import CELL_STATES
from tests.browser.conftest import ConsoleServer

COLOR = {state.key: state.color for state in CELL_STATES}
INSTANCES = range(12)
TOUCHED = 3

# Opens a WebSocket and settles on what happened first: the first message, or the close.
OPEN_SOCKET = """(url) => new Promise((resolve) => {
  const socket = new WebSocket(url);
  let opened = false;
  const timer = setTimeout(() => resolve({opened, outcome: "no answer in 10 s"}), 10000);
  socket.onopen = () => { opened = true; };
  socket.onmessage = (event) => {
    clearTimeout(timer);
    const message = JSON.parse(event.data);
    socket.close();
    resolve({opened, outcome: "message", type: message.type, cells: (message.cells || []).length});
  };
  socket.onclose = (event) => { clearTimeout(timer); resolve({opened, outcome: "closed", code: event.code}); };
})"""

HOVER_OF = """(id) => {
  const trace = document.getElementById("heatmap").data[0];
  return trace.text.flat().find((text) => text.startsWith(`<b>instance ${id}</b>`)) || null;
}"""


def log_in(page: Any, console: ConsoleServer) -> None:
    page.fill('input[name="username"]', console.data["username"])
    page.fill('input[name="password"]', console.data["password"])
    page.click('button[type="submit"]')


def drawn_colors(page: Any) -> dict[int, str | None]:
    colors = page.evaluate("(ids) => ids.map((id) => window.heatmap.drawnColorOf(id))", list(INSTANCES))
    return dict(zip(INSTANCES, colors, strict=True))


def wait_for(page: Any, predicate: str, arg: Any, what: str, timeout: float = 20_000) -> None:
    """page.wait_for_function, failing with what the page shows instead of a bare timeout."""
    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout)
    except PlaywrightError as error:
        shown = page.evaluate(
            """(id) => ({status: document.getElementById("live-status").textContent,
                         state: window.heatmap.stateOf(id), color: window.heatmap.drawnColorOf(id)})""",
            TOUCHED,
        )
        raise AssertionError(f"Waited {timeout / 1000:.0f}s for {what}; the page shows {shown}. ({error})") from None


def test_instance_powered_off_through_service_turns_its_cell_grey_without_reload(
    page: Any, console: ConsoleServer
) -> None:
    scale_set_id = console.data["scale_set_id"]
    page.goto(f"{console.base_url}/login/")
    log_in(page, console)
    expect(page).to_have_url(f"{console.base_url}/")
    page.goto(f"{console.base_url}/scale-sets/{scale_set_id}/")
    expect(page.locator("#live-status")).to_have_text("● live")

    before = drawn_colors(page)
    assert before == {i: COLOR["up_to_date"] for i in INSTANCES}, "a fresh set on its latest image is all green"
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads

    console.django(
        f"""
        from fleet import services
        from fleet.drivers import PowerAction
        from fleet.models import ScaleSet

        scale_set = ScaleSet.objects.get(pk={scale_set_id})
        services.instances_power(scale_set=scale_set, instance_ids=[{TOUCHED}], action=PowerAction.POWER_OFF)
        """
    )

    # The service's own commit says "stopping" (already drawn grey) …
    wait_for(
        page,
        "([id, color]) => window.heatmap.drawnColorOf(id) === color",
        [TOUCHED, COLOR["stopped"]],
        f"instance {TOUCHED} to be drawn {COLOR['stopped']} (stopped)",
    )
    # … and the beat, through the worker, finishes the stop: the hover says so.
    wait_for(
        page,
        f"(id) => ({HOVER_OF})(id)?.includes('power stopped') === true",
        TOUCHED,
        f"the worker to finish stopping instance {TOUCHED}",
    )

    after = drawn_colors(page)
    assert after[TOUCHED] == COLOR["stopped"]
    untouched = {i: c for i, c in after.items() if i != TOUCHED}
    assert untouched == {i: before[i] for i in untouched}, "only the powered-off cell changes colour"
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of updating live"
    expect(page.locator('#legend li[data-state="stopped"] .count')).to_have_text("1")
    expect(page.locator('#legend li[data-state="up_to_date"] .count')).to_have_text(str(len(INSTANCES) - 1))
    expect(page.locator("#live-status")).to_have_text("● live")
    stored = console.django(
        f"""
        from fleet.models import Instance
        result = Instance.objects.get(scale_set_id={scale_set_id}, instance_id={TOUCHED}).power_state
        """
    )
    assert stored == "stopped"


def test_anonymous_visitor_is_sent_to_login_and_its_websocket_is_refused(page: Any, console: ConsoleServer) -> None:
    scale_set_id = console.data["scale_set_id"]
    page_path = f"/scale-sets/{scale_set_id}/"
    socket_url = f"{console.base_url.replace('http://', 'ws://')}/ws/scale-sets/{scale_set_id}/"

    page.goto(f"{console.base_url}{page_path}")
    expect(page).to_have_url(re.compile(rf"/login/\?next={re.escape(page_path)}$"))
    expect(page.locator('input[name="password"]')).to_be_visible()
    expect(page.locator("#heatmap")).to_have_count(0)

    refused = page.evaluate(OPEN_SOCKET, socket_url)
    # Closed before any message. 1006: the handshake was refused (HTTP 403, what Channels does
    # when a consumer closes before accepting); 4401: the console's own "unauthenticated".
    assert refused["outcome"] == "closed", f"an anonymous socket got {refused}"
    assert refused["code"] in (1006, 4401), f"an anonymous socket got {refused}"

    # The same socket from the same browser opens once logged in: the session is the difference.
    log_in(page, console)
    expect(page).to_have_url(f"{console.base_url}{page_path}")
    accepted = page.evaluate(OPEN_SOCKET, socket_url)
    assert accepted == {"opened": True, "outcome": "message", "type": "snapshot", "cells": len(INSTANCES)}
