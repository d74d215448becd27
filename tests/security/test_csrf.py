"""CSRF on every form of the console (SPEC 5: operators act through forms; staff use the admin).

The POST routes are walked from the URLconf, so a new form cannot be left out: each answers a
logged-in operator's and staff member's POST without a CSRF token with 403 and changes nothing;
and every <form method="post"> on every page carries the token."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client

from fleet.models import Region
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

ROUTES = post_routes()
ROLES = ("operators", "staff")


def test_the_walk_finds_every_known_form() -> None:
    """If the walk broke (a renamed decorator, a new URLconf layout) it would find nothing and
    every test below would pass vacuously."""
    names = {route.name for route in ROUTES}
    assert KNOWN_ACTIONS | {"login", "logout", "api:token-list", "api:token-revoke"} <= names
    assert not any(route.route.startswith(("subscriptions", "console/api")) for route in ROUTES)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_a_post_without_the_csrf_token_is_403_and_changes_nothing(fleet: SeededFleet, route: Route, role: str) -> None:
    client = fleet.client(role, enforce_csrf_checks=True)
    before = fleet_state()
    response = client.post(route.path(fleet.url_values), ACTION_FIELDS)
    assert response.status_code == 403, f"{route.name}: {response.status_code}"
    assert b"CSRF" in response.content  # refused by the CSRF check, not by a role
    assert fleet_state() == before


def test_the_login_form_needs_the_token_before_anyone_is_logged_in(fleet: SeededFleet) -> None:
    """Login CSRF: a foreign page must not log a victim in as the attacker."""
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "owen", "password": "owenowen"})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def admin_forms(fleet: SeededFleet) -> dict[str, tuple[str, dict[str, Any]]]:
    """The admin's forms: a change form, an add form, a changelist action, its login and logout."""
    region = fleet.scale_set.region
    return {
        "region-change": (
            f"/admin/fleet/region/{region.pk}/change/",
            {"name": "hijacked", "display_name": "Hijacked", "zones": '["9"]'},
        ),
        "region-add": ("/admin/fleet/region/add/", {"name": "newregion", "display_name": "New", "zones": "[]"}),
        "token-revoke-action": (
            "/admin/api/apitoken/",
            {"action": "revoke", "_selected_action": [fleet.token.pk], "index": "0"},
        ),
        "admin-login": ("/admin/login/", {"username": "staff", "password": "staffstaff"}),
        "admin-logout": ("/admin/logout/", {}),
        "password-change": (
            "/admin/password_change/",
            {"old_password": "staffstaff", "new_password1": "Xy7!long-enough", "new_password2": "Xy7!long-enough"},
        ),
    }


ADMIN_FORMS = ["region-change", "region-add", "token-revoke-action", "admin-login", "admin-logout", "password-change"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("form", ADMIN_FORMS)
def test_an_admin_form_without_the_csrf_token_is_403_and_changes_nothing(
    fleet: SeededFleet, form: str, role: str
) -> None:
    client = fleet.client(role, enforce_csrf_checks=True)
    path, data = admin_forms(fleet)[form]
    before = fleet_state()
    response = client.post(path, data)
    assert response.status_code == 403, f"{path}: {response.status_code}"
    assert fleet_state() == before
    assert not Region.objects.filter(name__in=["hijacked", "newregion"]).exists()


def test_with_the_token_the_same_admin_change_goes_through(fleet: SeededFleet) -> None:
    """The control: the 403 above is the missing token, not a broken form."""
    client = fleet.client("staff", enforce_csrf_checks=True)
    region = fleet.scale_set.region
    page = client.get(f"/admin/fleet/region/{region.pk}/change/")
    token = str(page.context["csrf_token"])
    response = client.post(
        f"/admin/fleet/region/{region.pk}/change/",
        {"name": region.name, "display_name": "Renamed", "zones": '["1", "2", "3"]', "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    region.refresh_from_db()
    assert region.display_name == "Renamed"


# --- every post form carries the token ------------------------------------------------------------


class PostForms(HTMLParser):
    """The <form method="post"> of a page, each with whether it holds a csrfmiddlewaretoken input."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, bool]] = []
        self._open: list[list[Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            post = (attributes.get("method") or "get").lower() == "post"
            self._open.append([attributes.get("action") or "(this page)", False, post])
        elif tag == "input" and attributes.get("name") == "csrfmiddlewaretoken" and self._open:
            self._open[-1][1] = bool(attributes.get("value"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._open:
            action, has_token, post = self._open.pop()
            if post:
                self.forms.append((action, has_token))


def post_forms(html: str) -> list[tuple[str, bool]]:
    parser = PostForms()
    parser.feed(html)
    parser.close()
    return parser.forms


def pages_as_staff(fleet: SeededFleet) -> dict[str, tuple[Client, str]]:
    """Every GET page (walked) and the admin's pages, and the login pages for anonymous."""
    staff = fleet.client("staff")
    anonymous = Client()
    pages = {route.name: (staff, route.path(fleet.url_values)) for route in get_pages()}
    region = fleet.scale_set.region
    pages |= {
        "admin:index": (staff, "/admin/"),
        "admin:region-change": (staff, f"/admin/fleet/region/{region.pk}/change/"),
        "admin:apitoken-changelist": (staff, "/admin/api/apitoken/"),
        "admin:apitoken-change": (staff, f"/admin/api/apitoken/{fleet.token.pk}/change/"),
        "admin:scaleset-change": (staff, f"/admin/fleet/scaleset/{fleet.scale_set.pk}/change/"),
        "admin:password-change": (staff, "/admin/password_change/"),
        "login": (anonymous, "/login/"),
        "admin:login": (anonymous, "/admin/login/"),
    }
    return pages


def test_every_post_form_on_every_page_carries_the_csrf_token(fleet: SeededFleet) -> None:
    seen: dict[str, int] = {}
    missing = []
    for name, (client, path) in pages_as_staff(fleet).items():
        response = client.get(path)
        assert response.status_code == 200, f"{name} {path}: {response.status_code}"
        if not response["Content-Type"].startswith("text/html"):
            continue
        forms = post_forms(response.content.decode())
        seen[name] = len(forms)
        missing += [f"{name} {path}: form to {action}" for action, has_token in forms if not has_token]
    assert not missing
    # Staff see every action form on the scale-set page; the walk and the parser found them.
    assert seen["fleet:scale-set-detail"] >= 8
    assert seen["login"] == seen["admin:login"] == 1
    assert seen["admin:region-change"] >= 1
    assert seen["api:token-list"] >= 1


def test_the_plan_pages_confirm_form_carries_the_csrf_token(fleet: SeededFleet) -> None:
    """The two-step actions answer with a plan and a Confirm form: it posts too."""
    client = fleet.client("staff")
    response = client.post(f"/scale-sets/{fleet.automatic_set.pk}/os-upgrade/", {})
    assert response.status_code == 200
    forms = post_forms(response.content.decode())
    assert forms
    assert all(has_token for _, has_token in forms), forms
