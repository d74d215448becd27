"""The driver interface: how the engine acts on a fleet without knowing what the fleet is.

Every method takes instances in bulk. A driver records what it started in the database and
returns at once: an action that takes time (a reimage, a boot) finishes later, and the
instance rows say where it is. The engine never imports a concrete driver; it asks
`fleet.drivers.driver_for(scale_set)`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from fleet.images import ImageRef
from fleet.models import Instance, ScaleSet


class PowerAction(StrEnum):
    START = "start"
    RESTART = "restart"
    POWER_OFF = "powerOff"
    DEALLOCATE = "deallocate"


class Driver(Protocol):
    scale_set: ScaleSet

    def reimage(self, instances: Sequence[Instance], image: ImageRef, *, operation: str) -> None:
        """New OS disk from `image` (the old one kept for rollback), data disks untouched,
        then the model's extensions in provisionAfterExtensions order (R-UPG-1, R-MAN-2).

        `operation` makes the call idempotent: an instance that already had this operation
        applied is left alone, so a call repeated after a crash upgrades nothing twice."""

    def restore_previous_os_disk(self, instances: Sequence[Instance], *, operation: str) -> None:
        """Put the kept OS disk back and boot from it (rollback, R-ROLLBACK-1); idempotent
        per operation like reimage."""

    def power(self, instances: Sequence[Instance], action: PowerAction) -> None:
        """Start, restart, power off or deallocate."""

    def install_extensions(
        self, instances: Sequence[Instance], versions: dict[str, str], *, operation: str = ""
    ) -> None:
        """Install these extension versions ({name: version}) one after another, a failing
        one not stopping the next (R-EXT-3); the instance's other extensions and its OS disk
        are left alone. Idempotent per `operation` like reimage."""

    def set_maintenance(self, instances: Sequence[Instance], *, on: bool) -> None:
        """Maintenance makes instances unhealthy until it ends (SPEC 8)."""

    def advance(self, now: dt.datetime) -> int:
        """Apply whatever became due by `now`; returns how many instances changed."""


# Operation ids remembered per instance: enough for any call an engine may repeat (a lease
# runs out within minutes), few enough to keep the row small.
KEPT_OPERATIONS = 20


def first_time(instance: Instance, operation: str) -> bool:
    """Whether the instance has not had `operation` applied yet; if not, it is recorded on the
    row (saved by the caller in the transaction of the action). No operation id: always."""
    if not operation:
        return True
    if operation in instance.driver_operations:
        return False
    instance.driver_operations = [*instance.driver_operations, operation][-KEPT_OPERATIONS:]
    return True
