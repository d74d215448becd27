"""Drivers by name. The engine asks `driver_for(scale_set)` and never imports one directly."""

from __future__ import annotations

from fleet.drivers.base import Driver, PowerAction
from fleet.models import DriverName, ScaleSet

__all__ = ["Driver", "PowerAction", "driver_for", "DRIVER_NAMES"]

DRIVER_NAMES = [str(name) for name in DriverName]


def driver_for(scale_set: ScaleSet) -> Driver:
    if scale_set.driver == DriverName.SIMULATOR:
        from fleet.drivers.simulator import SimulatorDriver

        return SimulatorDriver(scale_set)
    if scale_set.driver == DriverName.LOCAL:
        from fleet.drivers.local.driver import LocalProcessDriver

        return LocalProcessDriver(scale_set)
    raise ValueError(f"Scale set {scale_set.name} names an unknown driver {scale_set.driver!r}.")
