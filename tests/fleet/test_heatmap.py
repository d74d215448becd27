"""Which colour a cell is (SPEC 5): the most important fact about the instance wins."""

import pytest

from fleet.heatmap import CELL_STATES, STATE_KEYS, cell_state

BASE = {
    "power_state": "running",
    "provisioning_state": "succeeded",
    "health_state": "Healthy",
    "last_upgrade_outcome": "",
    "up_to_date": True,
}


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({}, "up_to_date"),
        ({"up_to_date": False}, "outdated"),
        ({"provisioning_state": "updating", "power_state": "stopping"}, "upgrading"),  # a reimage in flight
        ({"power_state": "starting"}, "upgrading"),
        ({"health_state": "Initializing"}, "waiting"),
        ({"health_state": "Unhealthy"}, "unhealthy"),
        ({"health_state": "Unknown"}, "unhealthy"),
        ({"provisioning_state": "failed", "health_state": "Unhealthy"}, "failed"),
        ({"last_upgrade_outcome": "Failed", "health_state": "Unknown"}, "failed"),
        ({"last_upgrade_outcome": "RollbackFailed"}, "failed"),
        ({"last_upgrade_outcome": "RolledBack", "up_to_date": False}, "rolled_back"),
        ({"power_state": "stopped", "health_state": "Unknown"}, "stopped"),
        ({"power_state": "deallocated", "health_state": "Unknown"}, "stopped"),
        ({"power_state": "deallocating"}, "stopped"),
    ],
)
def test_cell_state(changes, state):
    assert cell_state(**{**BASE, **changes}) == state


def test_every_state_has_a_distinct_colour_and_label():
    assert len(STATE_KEYS) == len(set(STATE_KEYS)) == 8
    assert len({s.color for s in CELL_STATES}) == 8
    assert all(s.label for s in CELL_STATES)
