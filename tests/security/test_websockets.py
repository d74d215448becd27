"""SPEC 5: every socket requires login, and a page from another site cannot open one in a
logged-in user's name. The routes are walked from config/routing.py, so a new socket is
checked the day it is added."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client
from django.urls import URLPattern

from config.asgi import application
from config.routing import websocket_urlpatterns
from fleet import clock
from fleet.consumers import CLOSE_UNAUTHENTICATED, ScaleSetConsumer
from tests import factories
from upgrades.models import Rollout, RolloutKind

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

GOOD_ORIGIN = (b"origin", b"http://localhost")
# The first message a consumer sends on its own once accepted; the others wait for changes.
FIRST_MESSAGE = {ScaleSetConsumer: "snapshot"}
ROUTES: list[URLPattern] = list(websocket_urlpatterns)


@pytest_asyncio.fixture(autouse=True)
async def close_database_connections() -> AsyncIterator[None]:
    """The consumers' queries run in asgiref's worker thread, whose connection outlives the
    test (CONN_MAX_AGE): on PostgreSQL it would keep the test database from being dropped."""
    yield
    await sync_to_async(connections.close_all)()


def route_id(route: URLPattern) -> str:
    return str(route.pattern)


async def test_the_walk_finds_every_socket() -> None:
    assert {route_id(route) for route in ROUTES} >= {
        "ws/fleet/",
        "ws/scale-sets/<int:scale_set_id>/",
        "ws/rollouts/",
        "ws/rollouts/<int:rollout_id>/",
    }


@database_sync_to_async
def seeded_path(route: URLPattern) -> str:
    """The route's path, with each URL parameter naming a row made for it."""
    values: dict[str, Any] = {}
    for name in route.pattern.converters:  # type: ignore[attr-defined]
        if name == "scale_set_id":
            values[name] = factories.scale_set("web", 3, zones=[]).pk
        elif name == "rollout_id":
            # A row, not the beat's scan: a transactional test starts without the supported-SKU
            # rows the migrations load, so no set here may turn automatic upgrades on.
            now = clock.now()
            rollout = Rollout.objects.create(
                kind=RolloutKind.OS_IMAGE, target=factories.NEW_KEY, created_at=now, not_before=now
            )
            values[name] = rollout.pk
        else:
            raise AssertionError(f"no seeded value for {name} of socket {route_id(route)}: add one")
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(values[match[1]]), "/" + str(route.pattern))


@database_sync_to_async
def viewer_cookie() -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(factories.user("vera", "viewers"))
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


def consumer_of(route: URLPattern) -> type:
    return route.callback.consumer_class  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_an_anonymous_socket_is_closed_unauthenticated(route: URLPattern) -> None:
    socket = WebsocketCommunicator(application, await seeded_path(route), headers=[GOOD_ORIGIN])
    connected, _ = await socket.connect()
    if connected:  # accepted only to say why it closes: the page shows "log in again"
        message = await socket.receive_output(timeout=5)
        assert message == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    await socket.disconnect()


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://localhost.evil.example", None])
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_a_logged_in_viewers_socket_from_another_origin_is_refused(
    route: URLPattern, origin: bytes | None
) -> None:
    """Cross-site WebSocket hijacking: the browser sends the session cookie with any page's
    handshake; only the Origin tells them apart (AllowedHostsOriginValidator)."""
    headers = [await viewer_cookie()] + ([(b"origin", origin)] if origin else [])
    socket = WebsocketCommunicator(application, await seeded_path(route), headers=headers)
    connected, _ = await socket.connect()
    assert not connected
    await socket.disconnect()


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_a_logged_in_viewer_from_the_console_is_accepted(route: URLPattern) -> None:
    socket = WebsocketCommunicator(application, await seeded_path(route), headers=[GOOD_ORIGIN, await viewer_cookie()])
    connected, _ = await socket.connect()
    assert connected
    first = FIRST_MESSAGE.get(consumer_of(route))
    if first is not None:
        assert (await socket.receive_json_from(timeout=5))["type"] == first
    else:
        # Open, waiting for changes: neither a message nor a close arrives on its own.
        assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()
