"""SPEC 5 roles, page by page: viewers read, operators act, staff use the admin, and every page
requires login. The pages and actions are walked from the URLconf (tests/security/console.py),
so a new one is in the matrix the day it is added."""

from __future__ import annotations

import pytest

from tests.security.console import (
    ACTION_FIELDS,
    KNOWN_ACTIONS,
    Route,
    SeededFleet,
    fleet_state,
    get_pages,
    post_routes,
)

pytestmark = pytest.mark.django_db

PAGES = get_pages()
# POST routes open to every logged-in user by design, with why; every other POST route is an
# operator action. A route in neither list fails test_every_post_route_is_classified.
OPEN_TO_EVERY_USER = {
    "login": "how anyone logs in",
    "logout": "anyone logged in may leave",
    "api:token-list": "each user makes their own API tokens, which carry that user's role (SPEC 7)",
    "api:token-revoke": "each user revokes their own tokens; another user's is a 404",
}
ACTIONS = [route for route in post_routes() if route.name not in OPEN_TO_EVERY_USER]
READERS = ("viewers", "operators", "staff")


def test_every_post_route_is_classified() -> None:
    names = {route.name for route in post_routes()}
    assert set(OPEN_TO_EVERY_USER) <= names, "a route listed as open no longer exists"
    assert {route.name for route in ACTIONS} >= KNOWN_ACTIONS


def test_the_walk_finds_the_known_pages() -> None:
    assert {route.name for route in PAGES} >= {
        "fleet:scale-set-list",
        "fleet:scale-set-detail",
        "upgrades:history",
        "upgrades:scale-set-history",
        "upgrades:run-detail",
        "upgrades:run-replay",
        "upgrades:rollout-list",
        "upgrades:rollout-detail",
        "api:token-list",
    }


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_an_anonymous_visitor_is_sent_to_the_login_page(fleet: SeededFleet, page: Route) -> None:
    """Every page requires login, the JSON ones too (LoginRequiredMiddleware redirects them)."""
    path = page.path(fleet.url_values)
    response = fleet.client("anonymous").get(path)
    assert response.status_code == 302, response.status_code
    assert response["Location"] == f"/login/?next={path}"


@pytest.mark.parametrize("role", READERS)
@pytest.mark.parametrize("page", PAGES, ids=str)
def test_every_role_reads_every_page(fleet: SeededFleet, page: Route, role: str) -> None:
    response = fleet.client(role).get(page.path(fleet.url_values))
    assert response.status_code == 200, response.status_code


@pytest.mark.parametrize("action", ACTIONS, ids=str)
def test_a_viewer_acting_is_403_and_nothing_changes(fleet: SeededFleet, action: Route) -> None:
    before = fleet_state()
    response = fleet.client("viewers").post(action.path(fleet.url_values), ACTION_FIELDS)
    assert response.status_code == 403, response.status_code
    assert fleet_state() == before


@pytest.mark.parametrize("action", ACTIONS, ids=str)
def test_an_anonymous_action_is_sent_to_login_and_nothing_changes(fleet: SeededFleet, action: Route) -> None:
    before = fleet_state()
    response = fleet.client("anonymous").post(action.path(fleet.url_values), ACTION_FIELDS)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert fleet_state() == before


@pytest.mark.parametrize("role", ["operators", "staff"])
@pytest.mark.parametrize("action", ACTIONS, ids=str)
def test_an_operator_may_act(fleet: SeededFleet, action: Route, role: str) -> None:
    """Past the role check: done (a redirect), a plan or a form error, or a refusal of the
    set's state (409, e.g. R-ONE-1 on the set with a run under way); never 401/403 or a 5xx."""
    response = fleet.client(role).post(action.path(fleet.url_values), ACTION_FIELDS)
    assert response.status_code in (200, 302, 400, 409), response.status_code


def test_a_viewer_cannot_revoke_another_users_token(fleet: SeededFleet) -> None:
    before = fleet_state()
    response = fleet.client("viewers").post(f"/api-tokens/{fleet.token.pk}/revoke")
    assert response.status_code == 404
    assert fleet_state() == before


# --- the admin -------------------------------------------------------------------------------------

ADMIN_PAGES = ["/admin/", "/admin/fleet/scaleset/", "/admin/upgrades/upgraderun/", "/admin/api/apitoken/"]


@pytest.mark.parametrize("role", ["anonymous", "viewers", "operators"])
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_only_staff_open_the_admin(fleet: SeededFleet, path: str, role: str) -> None:
    """A login page either way: the admin's own for its index and for logged-in users who are
    not staff, the console's (LoginRequiredMiddleware, which runs first) for anonymous visitors
    of any other admin page."""
    response = fleet.client(role).get(path)
    assert response.status_code in (302, 403), response.status_code
    if response.status_code == 302:
        assert response["Location"].startswith(("/admin/login/?next=", "/login/?next="))


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_staff_open_the_admin(fleet: SeededFleet, path: str) -> None:
    assert fleet.client("staff").get(path).status_code == 200


def test_an_operator_cannot_use_an_admin_action(fleet: SeededFleet) -> None:
    before = fleet_state()
    response = fleet.client("operators").post(
        "/admin/api/apitoken/", {"action": "revoke", "_selected_action": [fleet.token.pk], "index": "0"}
    )
    assert response.status_code in (302, 403)
    assert fleet_state() == before
