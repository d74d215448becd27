"""What every page shares: error pages in the console's own words, and timestamps that carry
their UTC moment for the operator's time zone (static/js/time.js)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.template import Context, Template
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db


def logged_in(role: str) -> Client:
    client = Client()
    client.force_login(factories.user(f"{role}-page", role))
    return client


def test_an_unknown_page_is_the_consoles_404() -> None:
    response = logged_in("viewers").get("/scale-sets/999999/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Not found" in page
    assert "Back to the scale sets" in page


def test_a_viewer_acting_gets_the_consoles_403_with_the_reason() -> None:
    scale_set = factories.scale_set("web", 2)
    response = logged_in("viewers").post(f"/scale-sets/{scale_set.pk}/reimage/", {"reimage-instance_ids": "*"})
    assert response.status_code == 403
    page = response.content.decode()
    assert "Not allowed" in page
    assert "Only operators can change scale sets." in page


def test_the_500_page_renders_without_any_context() -> None:
    from django.template.loader import get_template

    page = get_template("500.html").render({})
    assert "Something went wrong on our side" in page


def test_when_prints_utc_and_marks_the_moment_for_the_local_zone() -> None:
    moment = dt.datetime(2026, 6, 1, 14, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    html = Template("{% load console %}{% when moment %}|{% when missing %}").render(
        Context({"moment": moment, "missing": None})
    )
    assert html == (
        '<time datetime="2026-06-01T12:30:05+00:00" title="2026-06-01 12:30:05 UTC" data-local>'
        "2026-06-01 12:30:05 UTC</time>|—"
    )


def test_every_page_loads_the_time_script() -> None:
    page = logged_in("viewers").get("/").content.decode()
    assert "js/time.js" in page
