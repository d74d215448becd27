"""The plan preview in a real browser (R-MAN-1, R-BATCH-1, R-GATE-3): a click on an update
domain row of the heatmap shows the plan of upgrading that domain in a dialog; the dialog is
used from the keyboard (focus on Confirm, Escape closes, Enter confirms); after confirming,
that row's cells turn up to date live. The what-if chart renders and redraws, with a stop,
when the failure share changes.

The server, worker, beat and database come from conftest.py (`console`); the sets of this
module are made in a subprocess through the real services (`ConsoleServer.django`), in a
region of their own so that the other browser tests' set keeps its image."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.browser.conftest import ConsoleServer

INSTANCES = 10
DOMAIN = 2
DOMAIN_IDS = [i for i in range(INSTANCES) if i % 5 == DOMAIN]  # R-MAN-1: UD n mod 5

# Where a heatmap row is drawn, in page pixels (Plotly's axes map a category to a pixel).
ROW_POINT = """(label) => {
  const gd = document.getElementById("heatmap");
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector(".nsewdrag").getBoundingClientRect();
  const row = gd.data[0].y.indexOf(label);
  return {x: box.left + xa.l2p(0), y: box.top + ya.l2p(row), row};
}"""


@pytest.fixture(scope="module")
def plan_sets(console: ConsoleServer) -> dict[str, Any]:
    """Two sets one image version behind, with an http Application Health extension (so the
    what-if's failures are noticed, R-H-2): one for the row click, one for the what-if."""
    return console.django(
        """
        from tests import factories

        where = factories.region("northeurope", zones=[])
        health = [factories.APP_HEALTH_HTTP]
        row = factories.scale_set("plan-row", capacity=10, where=where, zones=[], extensions=health)
        chart = factories.scale_set("plan-chart", capacity=20, where=where, zones=[], extensions=health)
        factories.publish(factories.NEW_VERSION, where)
        result = {"row": row.pk, "chart": chart.pk}
        """
    )


def log_in_and_open(page: Any, console: ConsoleServer, scale_set_id: int) -> None:
    page.goto(f"{console.base_url}/login/?next=/scale-sets/{scale_set_id}/")
    page.fill('input[name="username"]', console.data["username"])
    page.fill('input[name="password"]', console.data["password"])
    page.click('button[type="submit"]')
    expect(page).to_have_url(f"{console.base_url}/scale-sets/{scale_set_id}/")
    expect(page.locator("#live-status")).to_have_text("● live")


def click_row(page: Any, label: str) -> None:
    point = page.evaluate(ROW_POINT, label)
    assert point["row"] >= 0, f"no heatmap row {label!r}"
    page.mouse.click(point["x"] + 4, point["y"])


def wait_for(page: Any, predicate: str, arg: Any, what: str, timeout: float = 30_000) -> None:
    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout)
    except PlaywrightError as error:
        states = page.evaluate("(ids) => ids.map((id) => window.heatmap.stateOf(id))", DOMAIN_IDS)
        raise AssertionError(f"Waited {timeout / 1000:.0f}s for {what}; cells are {states}. ({error})") from None


def test_clicking_an_update_domain_row_shows_its_plan_and_confirming_upgrades_it_live(
    page: Any, console: ConsoleServer, plan_sets: dict[str, Any]
) -> None:
    scale_set_id = plan_sets["row"]
    log_in_and_open(page, console, scale_set_id)
    states = page.evaluate("(ids) => ids.map((id) => window.heatmap.stateOf(id))", DOMAIN_IDS)
    assert states == ["outdated"] * len(DOMAIN_IDS), "the set starts one image version behind"

    dialog = page.locator("#plan-dialog")
    click_row(page, f"PG 0 · UD {DOMAIN}")
    expect(dialog).to_be_visible()
    expect(page.locator("#plan-blast")).to_have_text(
        f"Upgrade update domain {DOMAIN}: {len(DOMAIN_IDS)} instances, all at once, no health gate"
    )
    expect(page.locator("#plan-batches tbody tr")).to_have_count(1)
    expect(page.locator("#plan-batches td.ids")).to_have_text(", ".join(map(str, DOMAIN_IDS)))
    # Keyboard: Confirm has the focus; Escape closes without acting.
    expect(page.locator("[data-plan-confirm]")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert not console.django(
        f"""
        from upgrades.models import UpgradeRun
        result = UpgradeRun.objects.filter(scale_set_id={scale_set_id}).exists()
        """
    ), "closing the plan must not start anything"

    # Again, and Enter confirms.
    click_row(page, f"PG 0 · UD {DOMAIN}")
    expect(page.locator("[data-plan-confirm]")).to_be_focused()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    expect(page.locator(".flash.success")).to_contain_text(f"update domain {DOMAIN}, {len(DOMAIN_IDS)} instances")
    # The start heads the set's audit panel: who clicked, through the console. The user came
    # from the request, through the real ASGI server's middleware, to the service.
    newest = page.locator("#audit tbody tr").first
    expect(newest).to_contain_text("run.start")
    expect(newest).to_contain_text(console.data["username"])
    expect(newest).to_contain_text("console")
    expect(page.locator("#live-status")).to_have_text("● live")
    wait_for(
        page,
        "(ids) => ids.every((id) => window.heatmap.stateOf(id) === 'up_to_date')",
        DOMAIN_IDS,
        f"update domain {DOMAIN} to be drawn up to date",
    )
    others = page.evaluate(
        "(ids) => ids.map((id) => window.heatmap.stateOf(id))", [i for i in range(INSTANCES) if i not in DOMAIN_IDS]
    )
    assert set(others) == {"outdated"}, "only the confirmed update domain was upgraded"


def test_the_what_if_chart_renders_and_redraws_with_a_stop_when_the_failure_share_changes(
    page: Any, console: ConsoleServer, plan_sets: dict[str, Any]
) -> None:
    log_in_and_open(page, console, plan_sets["chart"])
    page.click("text=Start OS upgrade now")
    dialog = page.locator("#plan-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#plan-blast")).to_contain_text("OS upgrade (rolling): 5 batches of at most 4, 20 instances")
    expect(page.locator("#whatif .main-svg").first).to_be_attached()
    expect(page.locator("#whatif-summary")).to_contain_text("Completes: all 5 batches run")
    assert page.locator("#whatif-chart").get_attribute("data-stop-batch") == ""

    page.fill('input[name="whatif-failure_percent"]', "50")
    page.press('input[name="whatif-failure_percent"]', "Tab")  # a change redraws
    expect(page.locator("#whatif-summary")).to_contain_text("Stops after batch")
    expect(page.locator("#whatif-chart")).not_to_have_attribute("data-stop-batch", "")
    stop = page.locator("#whatif-chart").get_attribute("data-stop-batch")
    # The chart marks the batch the summary names (R-GATE-3).
    expect(page.locator("#whatif-summary")).to_contain_text(f"Stops after batch {stop} of 5")
    expect(page.locator("#whatif-chart .annotation-text")).to_have_text(f"stops after batch {stop}")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
