"""Drivers by name. The engine asks `driver_for(scale_set)` and never imports one directly."""

from __future__ import annotations

from fleet.drivers.base import Driver, PowerAction
from fleet.models import ScaleSet

__all__ = ["Driver", "PowerAction", "driver_for", "DRIVER_NAMES"]

DRIVER_NAMES = ["simulator"]


def driver_for(scale_set: ScaleSet) -> Driver:
    if scale_set.driver == "simulator":
        from fleet.drivers.simulator import SimulatorDriver

        return SimulatorDriver(scale_set)
    raise ValueError(f"Scale set {scale_set.name} names an unknown driver {scale_set.driver!r}.")
