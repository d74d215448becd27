"""What bench.load found: 200 concurrent API clients on one web process got 500s.

Django runs each request in flight in a thread with its own database connection, so 200
clients at once meant 200 PostgreSQL connections ("too many clients already") or 200 threads
contending for SQLite's write lock ("database is locked" after the busy timeout). The ASGI
application now lets at most settings.WEB_REQUESTS_IN_FLIGHT requests into Django at once;
the rest wait their turn in the event loop and are answered after.
"""

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.conf import settings

from api import selectors
from api.tokens import token_create
from config.asgi import application
from tests import factories

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
WAIT = 10.0  # seconds any one condition may take on a busy machine


@database_sync_to_async
def operator_token_and_path() -> tuple[str, str]:
    scale_set = factories.scale_set("web", capacity=2)
    token = token_create(user=factories.user("olga", "operators"), name="load")[1]
    path = (
        f"/subscriptions/{scale_set.subscription_id}/resourceGroups/{scale_set.resource_group}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{scale_set.name}"
    )
    return token, path


class HeldInTheView:
    """Holds each request inside the view (in its thread, with its connection) until released,
    counting how many are in there at once."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.release = threading.Event()

    def __call__(self, **kwargs: object) -> object:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            assert self.release.wait(timeout=WAIT * 3), "never released"
            return self.real(**kwargs)  # type: ignore[operator]
        finally:
            with self.lock:
                self.inside -= 1


async def poll(condition, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)  # a poll interval, not a stand-in for synchronisation
    return True


async def test_more_clients_than_places_wait_their_turn_and_none_gets_a_500(monkeypatch):
    limit = settings.WEB_REQUESTS_IN_FLIGHT
    clients = limit + 4
    token, path = await operator_token_and_path()
    held = HeldInTheView(selectors.scale_set_find)
    monkeypatch.setattr(selectors, "scale_set_find", held)
    requests = [
        HttpCommunicator(
            application,
            "GET",
            f"{path}?api-version=2024-07-01",
            headers=[(b"authorization", f"Bearer {token}".encode()), (b"host", b"localhost")],
        )
        for _ in range(clients)
    ]
    answers = [asyncio.ensure_future(request.get_response(timeout=WAIT * 4)) for request in requests]
    try:
        assert await poll(lambda: held.inside == limit, timeout=WAIT), f"{held.inside} inside, not {limit}"
        # The others are queued, not inside: give them time to get in if nothing held them back.
        assert not await poll(lambda: held.inside > limit, timeout=1.0), f"{held.inside} inside at once"
    finally:
        held.release.set()
    statuses = [answer["status"] for answer in await asyncio.gather(*answers)]
    assert statuses == [200] * clients
    assert held.most == limit
