"""The whole console in a browser: the run panel says why a run waits and counts down live;
logging in; and a viewer sees no action where an operator acts.

The server, worker, beat and database come from conftest.py (`console`, TIME_SCALE 1000);
the page is Debian's Chromium (`page`). Fleet changes are made in a subprocess
(`console.django`) and reach the page only over the real WebSocket path."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.browser.conftest import ConsoleServer

# A grace period of 14,400 simulated seconds is the health wait (SPEC 3.1): 14.4 s at TIME_SCALE
# 1000, long enough to see the countdown tick; the new image never becomes healthy, so the
# wait lasts to its end.
SLOW_SET = """
from tests import factories

health = {**factories.APP_HEALTH_HTTP, "settings": {**factories.APP_HEALTH_HTTP["settings"], "gracePeriod": 14400}}
scale_set = factories.outdated_scale_set(
    5, name="slow", where=factories.region("japaneast", zones=[]), extensions=[health], bad_share=1.0
)
result = scale_set.pk
"""

COUNTDOWN = '.explain[data-kind="health_wait"] .explain-countdown'
SECONDS_LEFT = """(selector) => {
  const node = document.querySelector(selector);
  if (!node) return null;
  const m = node.textContent.match(/^(?:(\\d+) m)? ?(?:(\\d+) s)?$/);
  return m ? Number(m[1] || 0) * 60 + Number(m[2] || 0) : null;
}"""


def log_in(page: Any, console: ConsoleServer, username: str, password: str) -> None:
    page.goto(f"{console.base_url}/login/")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')


def operator(page: Any, console: ConsoleServer) -> None:
    log_in(page, console, console.data["username"], console.data["password"])
    expect(page).to_have_url(f"{console.base_url}/")


def test_the_waiting_explainer_counts_down_during_a_health_wait(page: Any, console: ConsoleServer) -> None:
    scale_set_id = console.django(SLOW_SET)
    operator(page, console)
    page.goto(f"{console.base_url}/scale-sets/{scale_set_id}/")
    expect(page.locator("#live-status")).to_have_text("● live")
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
    # Every instance booted and healthy on the old image first, or R-GATE-1 would refuse the run.
    page.wait_for_function(
        "() => [0, 1, 2, 3, 4].every((id) => window.heatmap.stateOf(id) === 'outdated')", timeout=20_000
    )

    console.django(
        f"""
        from fleet.models import ScaleSet
        from upgrades import services

        services.os_upgrade_now(scale_set=ScaleSet.objects.get(pk={scale_set_id}))
        """
    )
    # The worker reimages batch 1 (a few ms at TIME_SCALE 1000), then the health wait starts.
    countdown = page.locator(COUNTDOWN)
    expect(countdown).to_be_visible(timeout=20_000)
    expect(page.locator(".explain-headline")).to_have_text(
        re.compile(
            r"^Health wait: 0 of 1 upgraded instance healthy; waiting up to \d+ s "
            r"for the rest \(it ends early once all are healthy\)\.$"
        )
    )
    expect(page.locator(".explain-detail")).to_contain_text("(maxUnhealthyUpgradedInstancePercent 20 %)")
    first = page.evaluate(SECONDS_LEFT, COUNTDOWN)
    assert first is not None, f"the countdown reads {countdown.text_content()!r}"
    assert 0 < first <= 15
    try:
        page.wait_for_function(
            f"(first) => {{ const left = ({SECONDS_LEFT})({COUNTDOWN!r}); return left !== null && left < first; }}",
            arg=first,
            timeout=5_000,
        )
    except PlaywrightError as error:
        raise AssertionError(f"the countdown stayed at {countdown.text_content()!r}: {error}") from None
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded instead of counting down"


def test_a_bad_password_is_refused_and_a_good_one_lands_on_the_fleet(page: Any, console: ConsoleServer) -> None:
    log_in(page, console, console.data["username"], "not-the-password")
    expect(page).to_have_url(re.compile(r"/login/"))
    expect(page.locator("p.error")).to_have_text("That user name and password do not match. Try again.")

    log_in(page, console, console.data["username"], console.data["password"])
    expect(page).to_have_url(f"{console.base_url}/")
    expect(page.locator("h1")).to_have_text("Scale sets")
    expect(page.locator("p.error")).to_have_count(0)


ACTIONS = 'form[method="post"]:not([action="/logout/"])'
ROW_PANEL = "#row-confirm:visible, .confirm:visible, dialog[open]"


def click_first_row(page: Any) -> None:
    """Click the middle of the heatmap's plot area: a cell of one of its rows."""
    expect(page.locator("#heatmap .nsewdrag")).to_have_count(1)
    box = page.locator("#heatmap .nsewdrag").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def test_a_viewer_sees_no_action_where_an_operator_acts(page: Any, console: ConsoleServer) -> None:
    scale_set_id = console.data["scale_set_id"]
    url = f"{console.base_url}/scale-sets/{scale_set_id}/"

    # The operator first: the same click opens the row's upgrade, so the viewer's nothing counts.
    operator(page, console)
    page.goto(url)
    expect(page.locator("#live-status")).to_have_text("● live")
    expect(page.locator("#actions")).to_have_count(1)
    expect(page.locator("#cancel-form")).to_have_count(1)
    assert page.locator(ACTIONS).count() > 0
    expect(page.locator("#heatmap.clickable")).to_have_count(1)
    click_first_row(page)
    # What opens is the row's upgrade: a confirm panel or the plan preview dialog (its words are
    # another test's; on this set, already up to date, the preview says there is nothing to do).
    expect(page.locator(ROW_PANEL).first).to_be_visible()
    page.keyboard.press("Escape")
    page.click('form[action="/logout/"] button')

    viewer = console.django(
        """
        from django.contrib.auth.models import User
        from tests import factories

        if not User.objects.filter(username="vic").exists():
            factories.user("vic", "viewers")
        result = {"username": "vic", "password": "vic" * 2}
        """
    )
    log_in(page, console, viewer["username"], viewer["password"])
    expect(page).to_have_url(f"{console.base_url}/")
    page.goto(url)
    expect(page.locator("#live-status")).to_have_text("● live")
    expect(page.locator(ACTIONS)).to_have_count(0)
    expect(page.locator("#actions")).to_have_count(0)
    expect(page.locator("#cancel-form")).to_have_count(0)
    expect(page.locator("button.danger")).to_have_count(0)
    expect(page.locator("#heatmap.clickable")).to_have_count(0)
    click_first_row(page)
    # Plotly's click handlers run synchronously in the click: nothing was bound, nothing opened.
    expect(page.locator(ROW_PANEL)).to_have_count(0)
    expect(page).to_have_url(url)
