"""The live sockets of the fleet pages.

`ws/scale-sets/<id>/`: one group per scale set, a snapshot on connect, deltas after. The
snapshot carries the heatmap and the run panel (the latest run's summary); after it come
heatmap deltas and run updates, each forwarded as published, with no query per message.

`ws/fleet/`: the fleet overview. It only says which sets changed; the page re-fetches those
rows (coalesced, at most once a second), so a message never carries state that could be
stale, and hundreds of sets changing cost the server a few small requests a second.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from fleet.events import FLEET_GROUP, scale_set_group
from fleet.models import ScaleSet
from fleet.selectors import heatmap_snapshot, scale_set_for_page
from upgrades.selectors import run_panel

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """A page's socket: messages are handled without a trip to the database thread first.

    channels' dispatch runs close_old_connections on the (one) database thread before every
    message. A delta sent to 200 open pages then made 200 trips, one after another: the
    largest item in daphne's profile under bench.live at 200 clients. Every database access
    of these consumers goes through database_sync_to_async, which closes old connections
    itself, on the thread that uses them; a forwarded delta touches no database at all. Keep
    it so: a handler that needs the ORM calls it through database_sync_to_async.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


class ScaleSetConsumer(LiveConsumer):
    """Authenticates, joins `scale-set.<id>`, accepts, then sends a snapshot; deltas follow.

    It joins before reading the snapshot, so a change committed in between arrives as a
    delta after the snapshot rather than being lost (a consumer handles one message at a
    time: the delta waits until connect has sent the snapshot). It accepts before reading:
    daphne drops a handshake not accepted within 5 s, and when hundreds of pages connect at
    once (a server restart) their snapshots queue for the database behind one another.
    """

    scale_set_id: int

    async def connect(self) -> None:
        # Accept before closing: a close before accept becomes an HTTP 403 on the handshake and
        # the page would only see 1006, not why.
        if not self.scope["user"].is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.scale_set_id = int(self.scope["url_route"]["kwargs"]["scale_set_id"])
        self.group = scale_set_group(self.scale_set_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        snapshot = await self._snapshot()
        if snapshot is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "snapshot":
            snapshot = await self._snapshot()
            if snapshot is not None:
                await self.send_json(snapshot)

    async def heatmap_delta(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "delta", "cells": event["cells"]})

    async def run_update(self, event: dict[str, Any]) -> None:
        """upgrades.events published a run's new summary: the run panel redraws from it."""
        await self.send_json({"type": "run", "run": event["run"]})

    async def heatmap_refresh(self, event: dict[str, Any]) -> None:
        snapshot = await self._snapshot()
        if snapshot is not None:
            await self.send_json(snapshot)

    @database_sync_to_async
    def _snapshot(self) -> dict[str, Any] | None:
        try:
            snapshot = heatmap_snapshot(scale_set_for_page(self.scale_set_id))
        except ScaleSet.DoesNotExist:
            return None
        snapshot["run"] = run_panel(self.scale_set_id)
        return snapshot


class FleetConsumer(LiveConsumer):
    """Authenticates, joins `fleet`, accepts; then forwards each `fleet.changed` as
    `{"type": "changed", "ids": [...]}`.

    No snapshot message: the page it serves was rendered just before it connected, and after
    a reconnect the page re-fetches every row it shows (what a snapshot would carry). It joins
    before accepting, so nothing committed after the page knows it is open goes unheard.
    """

    async def connect(self) -> None:
        if not self.scope["user"].is_authenticated:
            await self.accept()  # then close: the page sees 4401, not a bare 1006
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.group = FLEET_GROUP
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def fleet_changed(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "changed", "ids": event["ids"]})
