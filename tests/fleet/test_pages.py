"""The scale-set list and scale-set page: login, content, and bounded SQL queries."""

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from config.staticfiles import PLOTLY_STATIC_PATH
from fleet import services
from fleet.drivers import PowerAction
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client() -> Client:
    client = Client()
    client.force_login(factories.user("vera", "viewers"))
    return client


@pytest.mark.parametrize("path", ["/", "/scale-sets/1/", "/admin/"])
def test_every_page_requires_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/" if path == "/admin/" else "/login/")


def test_the_login_form_logs_a_user_in(client):
    factories.user("olga", "operators")
    page = client.get("/login/")
    assert page.status_code == 200
    response = client.post("/login/", {"username": "olga", "password": "olgaolga"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_a_wrong_password_says_so_on_the_form(client):
    factories.user("olga", "operators")
    response = client.post("/login/", {"username": "olga", "password": "nope"})
    assert response.status_code == 200
    assert "do not match" in response.content.decode()


def test_the_list_shows_each_set_with_its_summary(viewer_client):
    factories.scale_set("web", capacity=5)
    batch = factories.scale_set("batch", capacity=3, upgrade_mode="Manual")
    services.instances_power(scale_set=batch, instance_ids=[0], action=PowerAction.POWER_OFF)
    factories.publish(factories.NEW_VERSION, factories.region())
    html = viewer_client.get("/").content.decode()
    assert "web" in html
    assert "batch" in html
    assert "1 stopped" in html
    assert f"→ {factories.NEW_VERSION}" in html
    assert "0 of 5 on latest" in html  # none on the newest image yet


def test_the_list_filters_by_region_mode_and_name(viewer_client):
    factories.scale_set("web", capacity=1, upgrade_mode="Rolling")
    factories.scale_set("batch", capacity=1, upgrade_mode="Manual")
    factories.scale_set("west", capacity=1, upgrade_mode="Rolling", where=factories.region("westus", zones=[]))
    assert _names(viewer_client.get("/?mode=Manual")) == ["batch"]
    assert _names(viewer_client.get("/?region=westus")) == ["west"]
    assert _names(viewer_client.get("/?q=WE")) == ["web", "west"]
    empty = viewer_client.get("/?q=nothing").content.decode()
    assert "No scale set matches" in empty


def _names(response) -> list[str]:
    return re.findall(r'<a href="/scale-sets/\d+/">([^<]+)</a>', response.content.decode())


def test_the_scale_set_page_embeds_a_heatmap_snapshot(viewer_client):
    scale_set = factories.scale_set("web", capacity=7, zones=[])
    response = viewer_client.get(reverse("fleet:scale-set-detail", args=[scale_set.pk]))
    html = response.content.decode()
    snapshot = json.loads(
        re.search(r'<script id="heatmap-snapshot" type="application/json">(.*?)</script>', html, re.S)[1]
    )
    assert len(snapshot["cells"]) == 7
    assert snapshot["scale_set"]["target_image"] == factories.OLD_VERSION
    assert f"/ws/scale-sets/{scale_set.pk}/" in html


def test_an_unknown_scale_set_is_a_404(viewer_client):
    assert viewer_client.get("/scale-sets/424242/").status_code == 404


def test_the_scale_set_page_costs_the_same_queries_for_10_and_1000_instances(viewer_client, django_assert_num_queries):
    small = factories.scale_set("small", capacity=10)
    large = factories.scale_set("large", capacity=1000)
    # session + user + groups, the set, its target image, its instances, its extensions,
    # the latest run (none here; with one, its batches too: tests/upgrades/test_views.py),
    # its newest audit entries
    with django_assert_num_queries(9):
        assert viewer_client.get(f"/scale-sets/{small.pk}/").status_code == 200
    with django_assert_num_queries(9):
        assert viewer_client.get(f"/scale-sets/{large.pk}/").status_code == 200


def test_the_list_page_costs_the_same_queries_for_2_and_12_sets(viewer_client, django_assert_num_queries):
    for n in range(2):
        factories.scale_set(f"a{n}", capacity=3)

    def count() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            assert viewer_client.get("/").status_code == 200
        return len(queries)

    few = count()
    for n in range(10):
        factories.scale_set(f"b{n}", capacity=3)
    assert count() == few


def test_pages_load_scripts_and_styles_only_from_static(viewer_client):
    scale_set = factories.scale_set(capacity=2)
    for path in ["/", f"/scale-sets/{scale_set.pk}/", "/login/"]:
        html = viewer_client.get(path).content.decode()
        sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        assert sources, path
        assert all(src.startswith("/static/") for src in sources), sources


def test_plotly_is_served_from_the_wheel(viewer_client):
    response = viewer_client.get(f"/static/{PLOTLY_STATIC_PATH}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"plotly" in body[:2000].lower()
    assert len(body) > 1_000_000


def test_the_page_says_when_time_is_compressed(viewer_client, settings):
    settings.TIME_SCALE = 30.0
    assert "Time compressed 30×" in viewer_client.get("/").content.decode()
    settings.TIME_SCALE = 1.0
    assert "Time compressed" not in viewer_client.get("/").content.decode()
