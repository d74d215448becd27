"""The fleet overview in a real browser: the table and the fleet heatmap load, a header sorts,
a filter narrows as you type, and an upgrade started in another process shows up live in its
set's row, without a reload.

The sets live in a region of their own (westeurope), and the new image is published there
only, so the session's `web` set (eastus) that other browser tests watch stays on its latest
image. The server, worker, beat and database come from conftest.py."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.browser.conftest import ConsoleServer

SETS = {"ov-alpha": 6, "ov-bravo": 2, "ov-charlie": 4}


def log_in(page: Any, console: ConsoleServer) -> None:
    page.fill('input[name="username"]', console.data["username"])
    page.fill('input[name="password"]', console.data["password"])
    page.click('button[type="submit"]')


def wait_for_names(page: Any, expected: list[str], what: str, timeout: float = 15_000) -> None:
    """Until the visible rows and the heatmap's rows are `expected`, in that order."""
    try:
        page.wait_for_function(
            """(names) => {
                const o = window.fleetOverview;
                return JSON.stringify(o.visibleNames()) === JSON.stringify(names)
                    && JSON.stringify(o.heatmapNames()) === JSON.stringify(names);
            }""",
            arg=expected,
            timeout=timeout,
        )
    except PlaywrightError as error:
        shown = page.evaluate("() => [window.fleetOverview.visibleNames(), window.fleetOverview.heatmapNames()]")
        raise AssertionError(f"Waited for {what}: wanted {expected}, the page shows {shown}. ({error})") from None


def test_the_overview_sorts_filters_and_shows_an_upgrade_live(page: Any, console: ConsoleServer) -> None:
    ids = console.django(
        f"""
        from tests import factories

        region = factories.region("westeurope", zones=[])
        result = {{
            name: factories.scale_set(name, capacity=capacity, where=region, zones=[]).pk
            for name, capacity in {SETS!r}.items()
        }}
        """
    )
    page.goto(f"{console.base_url}/login/")
    log_in(page, console)
    expect(page).to_have_url(f"{console.base_url}/")
    page.goto(f"{console.base_url}/?q=ov-")
    expect(page.locator("#fleet-live")).to_have_text("● live")
    expect(page.locator("#fleet-table tbody tr")).to_have_count(3)
    wait_for_names(page, ["ov-alpha", "ov-bravo", "ov-charlie"], "the table and heatmap by name")
    expect(page.locator("#fleet-heatmap .main-svg").first).to_be_visible()
    expect(page.locator('#fleet-legend li[data-state="up_to_date"] .count')).not_to_have_text("0")
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads

    capacity = page.locator('th[data-key="capacity"]')
    capacity.get_by_role("button").click()
    wait_for_names(page, ["ov-bravo", "ov-charlie", "ov-alpha"], "capacity ascending")
    expect(capacity).to_have_attribute("aria-sort", "ascending")
    expect(page.locator('th[data-key="name"]')).to_have_attribute("aria-sort", "none")
    capacity.get_by_role("button").press("Enter")  # a header is a button: the keyboard sorts too
    wait_for_names(page, ["ov-alpha", "ov-charlie", "ov-bravo"], "capacity descending")
    expect(capacity).to_have_attribute("aria-sort", "descending")
    assert "sort=capacity" in page.url
    assert "dir=desc" in page.url

    search = page.locator('input[name="q"]')
    search.fill("ov-br")
    wait_for_names(page, ["ov-bravo"], "the filter as typed")
    expect(page.locator("#fleet-count")).to_have_text("1 set")
    assert "q=ov-br" in page.url
    search.fill("ov-zzz")
    expect(page.locator("#fleet-empty")).to_be_visible()
    search.fill("ov-")
    wait_for_names(page, ["ov-alpha", "ov-charlie", "ov-bravo"], "the filter widened again")

    charlie = page.locator(f'#fleet-rows tr[data-id="{ids["ov-charlie"]}"]')
    expect(charlie).to_contain_text("none yet")
    run_id = console.django(
        """
        from fleet.models import ScaleSet
        from tests import factories
        from upgrades import services

        factories.publish(factories.NEW_VERSION, factories.region("westeurope", zones=[]))
        scale_set = ScaleSet.objects.get(name="ov-charlie")
        result = services.os_upgrade_now(scale_set=scale_set).pk
        """
    )
    # The run's link appears in the row as soon as the start is published; the worker then
    # rolls it to the end at TIME_SCALE 1000, and the version bar follows.
    expect(charlie.locator(f'a[href="/runs/{run_id}/"]')).to_be_visible()
    expect(charlie).to_contain_text("4 of 4 on latest", timeout=30_000)
    expect(charlie.locator(".status")).to_have_text("completed")
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of updating live"
    wait_for_names(page, ["ov-alpha", "ov-charlie", "ov-bravo"], "the order kept after the live update")
    expect(page.locator("#fleet-live")).to_have_text("● live")

    # The heatmap names each cell's state and counts on hover; a click opens that row's set.
    hover = page.evaluate("() => document.getElementById('fleet-heatmap').data[0].text[0].join(' | ')")
    assert "<b>ov-alpha</b> · UD 0 — Outdated, healthy" in hover
    where = page.evaluate(
        """() => {
            const plot = document.getElementById("fleet-heatmap");
            const layout = plot._fullLayout, box = plot.getBoundingClientRect();
            return {x: box.left + layout._size.l + layout.xaxis.l2p(0),
                    y: box.top + layout._size.t + layout.yaxis.l2p(0)};
        }"""
    )
    page.mouse.click(where["x"], where["y"])
    expect(page).to_have_url(f"{console.base_url}/scale-sets/{ids['ov-alpha']}/")
