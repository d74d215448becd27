"""What colour a heatmap cell is: the instance's state as an operator reads it (SPEC 5).

Pure: no ORM. The palette is colour-blind safe (Okabe–Ito); the hover text also names the
state, so colour is never the only signal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellState:
    key: str
    label: str
    color: str


CELL_STATES = [
    CellState("up_to_date", "Up to date, healthy", "#009E73"),
    CellState("outdated", "Outdated, healthy", "#56B4E9"),
    CellState("upgrading", "Upgrading", "#0072B2"),
    CellState("waiting", "Waiting for health", "#F0E442"),
    CellState("unhealthy", "Unhealthy", "#E69F00"),
    CellState("failed", "Failed", "#D55E00"),
    CellState("rolled_back", "Rolled back", "#CC79A7"),
    CellState("stopped", "Stopped / deallocated", "#7F7F7F"),
]
STATE_KEYS = [state.key for state in CELL_STATES]

_DOWN = {"stopping", "stopped", "deallocating", "deallocated"}
_BUSY_PROVISIONING = {"creating", "updating"}


def cell_state(
    *,
    power_state: str,
    provisioning_state: str,
    health_state: str,
    last_upgrade_outcome: str,
    up_to_date: bool,
) -> str:
    """Classify one instance; the order of the checks is the order of what matters most."""
    # A reimage stops the instance while provisioning is "updating": that is an upgrade in
    # flight, not a stopped machine, so provisioning is checked first.
    if provisioning_state in _BUSY_PROVISIONING:
        return "upgrading"
    if power_state in _DOWN:
        return "stopped"
    if power_state == "starting":
        return "upgrading"
    if provisioning_state == "failed" or last_upgrade_outcome in ("Failed", "RollbackFailed"):
        return "failed"
    if last_upgrade_outcome == "RolledBack":
        return "rolled_back"
    if health_state == "Initializing":
        return "waiting"
    if health_state != "Healthy":
        return "unhealthy"
    return "up_to_date" if up_to_date else "outdated"
