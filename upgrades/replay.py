"""A run, moment by moment, rebuilt from its event log (RunEvent): the run page's replay.

The data stays linear in events, not frames × instances: every instance of the run with its
state at the run's start, then the ordered instance changes (milliseconds after the start,
instance id, new state). The browser applies the changes up to the chosen moment. The
counts-over-time series is folded here, once, so the chart and the tests read the same
numbers.

Three queries whatever the size of the run: the run, its outcomes (with their instances'
placement), its events.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fleet import clock
from fleet.heatmap import CELL_STATES
from upgrades.models import InstanceOutcome, OutcomeStatus, RunEvent, UpgradeRun


@dataclass(frozen=True)
class ReplayState:
    """An instance's state in a run (an OutcomeStatus), drawn in a live-heatmap colour."""

    key: str
    label: str
    heatmap_state: str  # the live heatmap's state whose colour it borrows ("" = its own)
    color: str = ""


_HEATMAP_COLORS = {state.key: state.color for state in CELL_STATES}
# Skipped instances take no part in the run; the live palette has no "not in this run", so
# they get a neutral grey of their own, lighter than "stopped".
_SKIPPED_COLOR = "#D0D4D9"

REPLAY_STATES = [
    ReplayState(OutcomeStatus.PENDING, "Pending (not upgraded yet)", "outdated"),
    ReplayState(OutcomeStatus.IN_PROGRESS, "Upgrading / waiting for health", "upgrading"),
    ReplayState(OutcomeStatus.SUCCEEDED, "Upgraded, healthy", "up_to_date"),
    ReplayState(OutcomeStatus.FAILED, "Failed", "failed"),
    ReplayState(OutcomeStatus.ROLLED_BACK, "Rolled back", "rolled_back"),
    # the live heatmap draws a failed rollback as failed: so does the replay (hover tells them apart)
    ReplayState(OutcomeStatus.ROLLBACK_FAILED, "Rollback failed", "failed"),
    ReplayState(OutcomeStatus.SKIPPED, "Skipped (not in this run)", "", _SKIPPED_COLOR),
]
STATE_KEYS = [state.key for state in REPLAY_STATES]

INSTANCE_COLUMNS = ["id", "placement_group", "update_domain", "fault_domain", "zone", "batch", "state"]
CHANGE_COLUMNS = ["ms", "id", "state"]
MARK_COLUMNS = ["ms", "batch", "what", "message"]

_OUTCOME_FIELDS = (
    "instance_id_number",
    "instance__placement_group",
    "instance__update_domain",
    "instance__fault_domain",
    "instance__zone",
    "batch__index",
    "status",
)
_EVENT_FIELDS = ("at", "instance_id_number", "batch_index", "from_state", "to_state", "message")


def run_replay(*, run_id: int) -> dict[str, Any]:
    """Everything the replay draws, in plain JSON (UpgradeRun.DoesNotExist for no such run)."""
    run = UpgradeRun.objects.select_related("scale_set").get(pk=run_id)
    outcomes = list(
        InstanceOutcome.objects.filter(run=run).order_by("instance_id_number").values_list(*_OUTCOME_FIELDS)
    )
    events = list(RunEvent.objects.filter(run=run).order_by("at", "pk").values_list(*_EVENT_FIELDS))
    start = run.started_at
    end = run.ended_at or clock.now()
    changes = [_change(start, e) for e in events if e[1] is not None]
    initial = _initial_states(outcomes, events)
    instances = [[*row[:6], initial[row[0]]] for row in outcomes]
    return {
        "run": {
            "id": run.pk,
            "status": run.status,
            "scale_set": run.scale_set.name,
            "active": run.is_active,
        },
        "start": start.isoformat(),
        "end": end.isoformat(),
        "duration_ms": _ms(start, end),
        "states": [_state_json(s) for s in REPLAY_STATES],
        "instance_columns": INSTANCE_COLUMNS,
        "instances": instances,
        "change_columns": CHANGE_COLUMNS,
        "changes": changes,
        "mark_columns": MARK_COLUMNS,
        "marks": [_mark(start, e) for e in events if e[1] is None],
        "count_columns": ["ms", *STATE_KEYS],
        "counts": counts_over_time(initial, changes, _ms(start, end)),
    }


def _state_json(state: ReplayState) -> dict[str, str]:
    return {
        "key": state.key,
        "label": state.label,
        "heatmap_state": state.heatmap_state,
        "color": state.color or _HEATMAP_COLORS[state.heatmap_state],
    }


def _ms(start: dt.datetime, moment: dt.datetime) -> int:
    """Whole milliseconds after the run's start; never negative (a clock read a hair early)."""
    return max(0, round((moment - start).total_seconds() * 1000))


def _change(start: dt.datetime, event: tuple[Any, ...]) -> list[Any]:
    at, number, _batch, _from, to_state, _message = event
    return [_ms(start, at), number, to_state]


def _mark(start: dt.datetime, event: tuple[Any, ...]) -> list[Any]:
    """A run-level event (batch started, health wait, rolling back, cancel, end): the gates
    and turns of the run, for the player to show."""
    at, _number, batch, _from, to_state, message = event
    return [_ms(start, at), batch, to_state, message]


def _initial_states(outcomes: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> dict[int, str]:
    """Each instance's state when the run started: what its first change left (the log
    says where it came from); an instance the log never mentions kept its outcome all along
    (skipped, or pending in a batch that never started)."""
    initial = {row[0]: row[6] for row in outcomes}
    seen: set[int] = set()
    for _at, number, _batch, from_state, _to, _message in events:
        if number is None or number in seen:
            continue
        seen.add(number)
        initial[number] = from_state or OutcomeStatus.PENDING
    return initial


def counts_over_time(initial: dict[int, str], changes: list[list[Any]], duration_ms: int) -> list[list[int]]:
    """[ms, count per state in STATE_KEYS order]: one point at the start, one after each
    moment something changed (changes at the same moment count once), one at the end."""
    states = dict(initial)
    tally = Counter(states.values())
    points: list[list[int]] = [[0, *(tally[k] for k in STATE_KEYS)]]
    for index, (ms, number, to_state) in enumerate(changes):
        tally[states.get(number, OutcomeStatus.PENDING)] -= 1
        tally[to_state] += 1
        states[number] = to_state
        last_at_this_moment = index + 1 == len(changes) or changes[index + 1][0] != ms
        if last_at_this_moment:
            point = [ms, *(tally[k] for k in STATE_KEYS)]
            if points[-1][0] == ms:
                points[-1] = point
            else:
                points.append(point)
    if points[-1][0] < duration_ms:
        points.append([duration_ms, *points[-1][1:]])
    return points
