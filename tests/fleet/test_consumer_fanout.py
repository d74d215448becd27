"""What bench.live found: a delta fanned out to many open pages must not queue each socket
behind a trip to the database thread (channels' dispatch makes one per message)."""

import django.db
import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from fleet.events import scale_set_group
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
ORIGIN = (b"origin", b"http://localhost")
DELTAS = 5


@database_sync_to_async
def page_of_a_set() -> tuple[int, bytes]:
    client = Client()
    client.force_login(factories.user("vic", "viewers"))
    return factories.scale_set(capacity=3, zones=[]).pk, f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_forwarding_deltas_makes_no_trip_to_the_database_thread(monkeypatch):
    scale_set_id, cookie = await page_of_a_set()
    sockets = [
        WebsocketCommunicator(application, f"/ws/scale-sets/{scale_set_id}/", headers=[ORIGIN, (b"cookie", cookie)])
        for _ in range(3)
    ]
    for socket in sockets:
        connected, _ = await socket.connect()
        assert connected
        assert (await socket.receive_json_from(timeout=5))["type"] == "snapshot"
    trips = []
    real = django.db.close_old_connections

    def counted() -> None:
        trips.append(1)
        real()

    # channels' dispatch reaches it through channels.db, by name, on every message
    monkeypatch.setattr("channels.db.close_old_connections", counted)
    layer = get_channel_layer()
    for n in range(DELTAS):
        await layer.group_send(scale_set_group(scale_set_id), {"type": "heatmap.delta", "cells": [[n]]})
    for socket in sockets:
        received = [await socket.receive_json_from(timeout=5) for _ in range(DELTAS)]
        assert received == [{"type": "delta", "cells": [[n]]} for n in range(DELTAS)]
    assert trips == []
    for socket in sockets:
        await socket.disconnect()
