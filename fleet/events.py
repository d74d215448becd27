"""The one place that tells open pages about changes (Channels groups, on commit only).

Groups: `scale-set.<id>` gets heatmap deltas. A service calls `instances_changed` once per
bulk change with every instance it touched; after the transaction commits, their cells are
read once and sent as one message. Delivery is at-most-once: a page that suspects it missed
something asks for a fresh snapshot.

`fleet` (the fleet overview) hears of every message sent to a set's group as one small
`fleet.changed` with the set's id: cell deltas, model changes and run updates (which
upgrades.events sends through `send`) all reach it this way, with no query and no second
on-commit hook. Those messages are already coalesced per commit by their publishers, so it
costs one group_send per set-level change; the page then re-fetches those rows, at most once
a second.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


_SCALE_SET_GROUP = "scale-set."
FLEET_GROUP = "fleet"


def scale_set_group(scale_set_id: int) -> str:
    return f"{_SCALE_SET_GROUP}{scale_set_id}"


def instances_changed(scale_set_id: int, instance_pks: Iterable[int]) -> None:
    """Publish the new state of these instances once the current transaction commits."""
    pks = sorted(set(instance_pks))
    if pks:
        transaction.on_commit(lambda: _send_cells(scale_set_id, pks))


def scale_set_changed(scale_set_id: int) -> None:
    """The set's model or target image changed: every cell may change; pages take a snapshot."""
    transaction.on_commit(lambda: send(scale_set_group(scale_set_id), {"type": "heatmap.refresh"}))


def _send_cells(scale_set_id: int, pks: list[int]) -> None:
    from fleet.models import ScaleSet
    from fleet.selectors import heatmap_cells, scale_set_for_page, target_image

    try:
        scale_set = scale_set_for_page(scale_set_id)
    except ScaleSet.DoesNotExist:  # deleted meanwhile: nobody to tell
        return
    cells = heatmap_cells(scale_set, target=target_image(scale_set), instance_pks=pks)
    send(scale_set_group(scale_set_id), {"type": "heatmap.delta", "cells": cells})


def send(group: str, message: Mapping[str, Any]) -> None:
    """Send to a group (after commit); a set's group's message is also told to the fleet."""
    layer = get_channel_layer()
    if layer is None:
        return
    _group_send(layer, group, message)
    if group.startswith(_SCALE_SET_GROUP):
        scale_set_id = int(group.removeprefix(_SCALE_SET_GROUP))
        _group_send(layer, FLEET_GROUP, {"type": "fleet.changed", "ids": [scale_set_id]})


def _group_send(layer: Any, group: str, message: Mapping[str, Any]) -> None:
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # a page missing a delta must never fail the change that caused it
        log.warning("could not publish to %s", group, exc_info=True)
