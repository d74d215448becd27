"""Reads of automatic rollouts for the pages (SPEC 5, R-AVAIL-1): the list, a rollout's
phases × regions grid, and one sentence in plain words saying what it is doing or waiting for.

Every read here costs a fixed number of queries, whatever the number of rollouts, steps or
sets: steps and targets are read as plain rows (one query each) and put together in Python.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import FilteredRelation, Q, QuerySet

from fleet import clock
from fleet.images import ImageRef
from fleet.models import ImageSource, ScaleSet, ScaleSetExtension
from fleet.selectors import gallery_image_name
from upgrades.explain import (
    Explanation,
    WaitingPhase,
    explain_busy,
    explain_phase_wait,
    explain_scheduled,
    explain_zone_wait,
)
from upgrades.models import (
    FINISHED_TARGETS,
    Rollout,
    RolloutKind,
    RolloutStatus,
    RolloutStep,
    RolloutTarget,
    RunStatus,
    StartedBy,
    StepStatus,
    TargetStatus,
)

# Rollouts an operator should know about on the fleet overview: under way, or stopped where
# something failed.
OPEN_STATUSES = (RolloutStatus.WAITING, RolloutStatus.ROLLING_OUT, RolloutStatus.HALTED)
# The fleet overview's banner lists at most this many; the rest are on the rollouts page.
BANNER_LIMIT = 10

PROGRESS_PARTS = (
    ("successful", "succeeded"),
    ("failed", "failed"),
    ("in_progress", "in progress"),
    ("pending", "pending"),
)

STEP_LABELS: dict[str, str] = {
    StepStatus.PENDING: "pending",
    StepStatus.IN_PROGRESS: "in progress",
    StepStatus.SUCCEEDED: "succeeded",
    StepStatus.FAILED: "failed",
}

_TARGET_FIELDS = (
    "pk",
    "step_id",
    "step__rollout_id",
    "scale_set_id",
    "scale_set__name",
    "scale_set__region_id",
    "scale_set__zones",
    "status",
    "due_at",
    "message",
    "run_id",
    "run__status",
    "run__successful_count",
    "run__failed_count",
    "run__in_progress_count",
    "run__pending_count",
)


# --- what the pages draw ------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetView:
    """One set in one step, with its run's progress counts when it has a run."""

    pk: int
    scale_set_id: int
    scale_set_name: str
    region_id: int
    zones: tuple[str, ...]
    status: str
    due_at: dt.datetime
    message: str
    run_id: int | None
    run_status: str
    progress: dict[str, int]
    # Why a scheduled set has not started (trigger delay, busy with another run); None otherwise.
    explanation: Explanation | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_TARGETS

    @property
    def progress_parts(self) -> list[tuple[str, str, int, str]]:
        """(key, label, count, percent) for the stacked bar; the percent with a dot whatever
        the locale (it goes into a style attribute)."""
        whole = sum(self.progress.values()) or 1
        return [
            (key, label, self.progress.get(key, 0), f"{100 * self.progress.get(key, 0) / whole:.2f}")
            for key, label in PROGRESS_PARTS
        ]


@dataclass
class StepView:
    """One region's share of a phase for one zone ("" for the sets that are not zonal)."""

    pk: int
    phase: int
    region_id: int
    region_name: str
    zone: str
    position: int
    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    targets: list[TargetView] = field(default_factory=list)
    pair_name: str | None = None  # the region's geo pair (R-AVAIL-1)
    # Why a pending step has not started (trigger delay, an earlier phase or zone).
    explanation: Explanation | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)

    @property
    def status_label(self) -> str:
        return STEP_LABELS.get(self.status, self.status)

    @property
    def zone_label(self) -> str:
        return f"zone {self.zone}" if self.zone else "not zonal"

    @property
    def where(self) -> str:
        return f"{self.region_name} zone {self.zone}" if self.zone else self.region_name

    @property
    def done_count(self) -> int:
        return sum(1 for t in self.targets if t.is_finished)

    @property
    def succeeded_count(self) -> int:
        return sum(1 for t in self.targets if t.status == TargetStatus.SUCCEEDED)

    @property
    def failed_count(self) -> int:
        return sum(1 for t in self.targets if t.status == TargetStatus.FAILED)

    @property
    def is_empty_and_done(self) -> bool:
        """The step of a region's sets that are not zonal, when the region has none: nothing
        to show beside its zones."""
        return not self.zone and not self.targets and self.status == StepStatus.SUCCEEDED


@dataclass
class RegionCell:
    """A region's share of one phase: its zones, one at a time, in order."""

    region_name: str
    steps: list[StepView]

    @property
    def shown_steps(self) -> list[StepView]:
        zonal = [s for s in self.steps if s.zone]
        return [s for s in self.steps if not (zonal and s.is_empty_and_done)]

    @property
    def status(self) -> str:
        return _overall([s.status for s in self.steps])


@dataclass
class PhaseView:
    number: int  # from 0
    steps: list[StepView]

    @property
    def label(self) -> str:
        return f"Phase {self.number + 1}"

    @property
    def status(self) -> str:
        return _overall([s.status for s in self.steps])

    @property
    def status_label(self) -> str:
        return STEP_LABELS.get(self.status, self.status)

    @property
    def regions(self) -> list[str]:
        return sorted({s.region_name for s in self.steps})

    @property
    def started_at(self) -> dt.datetime | None:
        return min((s.started_at for s in self.steps if s.started_at), default=None)

    @property
    def ended_at(self) -> dt.datetime | None:
        """When its last step ended; a phase that failed ended then (the rollout halted,
        its later zones never start), even with steps still pending."""
        failed = any(s.status == StepStatus.FAILED for s in self.steps)
        if not failed and any(not s.is_finished for s in self.steps):
            return None
        return max((s.ended_at for s in self.steps if s.ended_at), default=None)


@dataclass
class RegionRow:
    """A row of the grid: one region, one cell per phase (None where it has no share)."""

    region_name: str
    cells: list[RegionCell | None]


@dataclass(frozen=True)
class SetTally:
    """The sets a rollout reached so far, each counted once (a zonal set has a target per
    zone): succeeded once every zone of it did, failed if any did; `remaining` while a zone
    of it is still to go (or was left so where the rollout halted). Sets of steps not started
    yet are not known: they are found when their step starts."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    remaining: int = 0
    more_to_come: bool = False  # steps not started yet: their sets are not counted

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.skipped + self.remaining


@dataclass
class RolloutGrid:
    """A rollout's page: phases as columns, regions as rows, each cell the region's zones."""

    rollout: Rollout
    steps: list[StepView]
    phases: list[PhaseView]
    rows: list[RegionRow]
    sets: SetTally
    explanation: str

    @property
    def target_label(self) -> str:
        return self.rollout.target_label


@dataclass(frozen=True)
class RolloutRow:
    """A rollout in the list."""

    rollout: Rollout
    phase_label: str
    sets: SetTally
    explanation: str

    @property
    def target_label(self) -> str:
        return self.rollout.target_label

    @property
    def target_name(self) -> str:
        return self.rollout.target_name


# --- selectors ----------------------------------------------------------------------------------


def rollout_list() -> QuerySet[Rollout]:
    """Every rollout, newest first (paginate it)."""
    return Rollout.objects.order_by("-created_at", "-pk")


def rollout_rows(rollouts: Iterable[Rollout] | None = None) -> list[RolloutRow]:
    """The list page's rows: the rollouts (every one, newest first, when none are given) with
    their phase progress, set counts and what each is doing. Two queries besides reading the
    rollouts, whatever their number."""
    chosen = list(rollout_list() if rollouts is None else rollouts)
    now = clock.now()
    steps = _steps_of([r.pk for r in chosen], now=now)
    rows = []
    for rollout in chosen:
        mine = steps.get(rollout.pk, [])
        rows.append(
            RolloutRow(
                rollout=rollout,
                phase_label=_phase_label(mine),
                sets=_tally(mine),
                explanation=rollout_explanation(rollout, steps=mine, now=now),
            )
        )
    return rows


def rollout_grid(rollout: Rollout) -> RolloutGrid:
    """A rollout's phases × regions with every zone step and its sets (two queries, whatever
    the number of steps and sets)."""
    now = clock.now()
    steps = _steps_of([rollout.pk], now=now).get(rollout.pk, [])
    _explain_pending_steps(rollout, steps, now)
    phases: dict[int, list[StepView]] = defaultdict(list)
    for step in steps:
        phases[step.phase].append(step)
    phase_views = [PhaseView(number, phases[number]) for number in sorted(phases)]
    column = {phase.number: n for n, phase in enumerate(phase_views)}
    # Regions in the order they are reached: by their first phase, then by name.
    first_phase: dict[str, int] = {}
    cells: dict[str, dict[int, list[StepView]]] = defaultdict(lambda: defaultdict(list))
    for step in steps:
        first_phase[step.region_name] = min(first_phase.get(step.region_name, step.phase), step.phase)
        cells[step.region_name][step.phase].append(step)
    rows = []
    for name in sorted(first_phase, key=lambda n: (first_phase[n], n)):
        row: list[RegionCell | None] = [None] * len(phase_views)
        for phase, region_steps in cells[name].items():
            row[column[phase]] = RegionCell(name, sorted(region_steps, key=lambda s: s.position))
        rows.append(RegionRow(name, row))
    return RolloutGrid(
        rollout=rollout,
        steps=steps,
        phases=phase_views,
        rows=rows,
        sets=_tally(steps),
        explanation=rollout_explanation(rollout, steps=steps, now=now),
    )


@dataclass(frozen=True)
class OpenRollout:
    """A rollout on the fleet overview's banner."""

    rollout: Rollout

    @property
    def target_label(self) -> str:
        return self.rollout.target_label

    @property
    def target_name(self) -> str:
        return self.rollout.target_name


def open_rollouts(limit: int = BANNER_LIMIT) -> list[OpenRollout]:
    """Rollouts under way or halted, newest first, for the fleet overview's banner: at most
    `limit` + 1, so the page can say there are more (one query)."""
    rows = Rollout.objects.filter(status__in=OPEN_STATUSES).order_by("-created_at", "-pk")[: limit + 1]
    return [OpenRollout(rollout) for rollout in rows]


@dataclass(frozen=True)
class RolloutNotice:
    """A set's place in a rollout that has not finished with it: scheduled, running, or
    waiting for its region's phase (no target yet: a step collects its sets when it starts).

    `explanation` says why it waits (upgrades.explain); `message` carries its headline for
    pages that show only the message."""

    rollout_id: int
    kind: str
    target: str
    status: str
    due_at: dt.datetime | None
    run_id: int | None
    message: str
    explanation: Explanation | None = None

    @property
    def what(self) -> str:
        if self.kind == RolloutKind.OS_IMAGE:
            return f"Automatic OS upgrade to {ImageRef.from_key(self.target).label}"
        kind, _, version = self.target.rpartition("@")
        return f"Automatic extension upgrade of {kind} to {version}"

    @property
    def is_running(self) -> bool:
        return self.status == TargetStatus.RUNNING

    @property
    def is_waiting_for_phase(self) -> bool:
        return self.status == "WaitingForPhase"


_NOTICE_FIELDS = (
    "pk",
    "rollout_id",
    "rollout__kind",
    "rollout__target",
    "rollout__status",
    "rollout__not_before",
    "phase",
    "region_id",
    "region__name",
    "region__geo_pair__name",
    "zone",
    "position",
    "status",
    "started_at",
    "mine__pk",
    "mine__status",
    "mine__due_at",
    "mine__run_id",
    "mine__message",
)


def scale_set_rollout_notices(
    scale_set: ScaleSet, *, extensions: Sequence[ScaleSetExtension], run: dict[str, Any] | None
) -> list[RolloutNotice]:
    """The rollouts that have this set scheduled, running, or waiting for its region's
    phase, soonest first, each with why it waits (one query).

    Only a set that takes versions automatically, or whose latest run the platform started
    and is still rolling forward, can be in one: others cost no query. A set that turned
    automatic upgrades off keeps a scheduled target until its time comes, and then it is
    skipped (R-AUTO-5), so saying "scheduled" for it would be wrong anyway.

    The one query reads every step of the open rollouts that reach the set's region, each
    with this set's target in it if any (a filtered join): the set's target says scheduled
    or running; with none yet, the region's pending step and the phases before it say what
    it waits for (R-AVAIL-1).
    """
    takes_versions = scale_set.enable_automatic_os_upgrade or any(e.enable_automatic_upgrade for e in extensions)
    platform_run = (
        run is not None and run["started_by"] == StartedBy.PLATFORM and run["status"] == RunStatus.ROLLING_FORWARD
    )
    if not (takes_versions or platform_run):
        return []
    now = clock.now()
    reaching = RolloutStep.objects.filter(region_id=scale_set.region_id).values("rollout_id")
    rows = list(
        RolloutStep.objects.filter(rollout__status__in=OPEN_STATUSES, rollout_id__in=reaching)
        .annotate(mine=FilteredRelation("targets", condition=Q(targets__scale_set_id=scale_set.pk)))
        .order_by("rollout_id", "phase", "region__name", "position")
        .values(*_NOTICE_FIELDS)
    )
    by_rollout: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_rollout[row["rollout_id"]].append(row)
    notices = []
    for rollout_id, steps in by_rollout.items():
        first = steps[0]
        mine = [r for r in steps if r["mine__pk"] is not None]
        live = [r for r in mine if r["mine__status"] in (TargetStatus.SCHEDULED, TargetStatus.RUNNING)]
        for row in live:
            explanation = _target_explanation(
                row["mine__status"], row["mine__due_at"], row["mine__message"], row["started_at"], now
            )
            notices.append(
                RolloutNotice(
                    rollout_id=rollout_id,
                    kind=first["rollout__kind"],
                    target=first["rollout__target"],
                    status=row["mine__status"],
                    due_at=row["mine__due_at"],
                    run_id=row["mine__run_id"],
                    message=explanation.headline if explanation else row["mine__message"],
                    explanation=explanation,
                )
            )
        if mine or first["rollout__status"] == RolloutStatus.HALTED:
            continue  # done with this set (or halted: nothing more starts)
        if not _rollout_concerns(first["rollout__kind"], first["rollout__target"], scale_set, extensions):
            continue
        waiting = _pending_step_explanation(scale_set, steps, first["rollout__not_before"], now)
        if waiting is not None:
            due_at = first["rollout__not_before"] if waiting.kind == "trigger_delay" else None
            notices.append(
                RolloutNotice(
                    rollout_id=rollout_id,
                    kind=first["rollout__kind"],
                    target=first["rollout__target"],
                    status=TargetStatus.SCHEDULED if due_at else "WaitingForPhase",
                    due_at=due_at,
                    run_id=None,
                    message=waiting.headline,
                    explanation=waiting,
                )
            )
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(notices, key=lambda n: (n.due_at or far, n.rollout_id))


def _rollout_concerns(kind: str, target: str, scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> bool:
    """Whether a rollout with a step in the set's region is one the set takes (no query:
    its image name, or its extensions set to upgrade automatically)."""
    if kind == RolloutKind.OS_IMAGE:
        if not scale_set.enable_automatic_os_upgrade:
            return False
        if scale_set.image_source == ImageSource.GALLERY and scale_set.gallery_image_id:
            name = gallery_image_name(scale_set)
        else:
            name = f"{scale_set.image_publisher}/{scale_set.image_offer}/{scale_set.image_sku}"
        return ImageRef.from_key(target).name == name
    kind_name = target.rpartition("@")[0]
    return any(e.enable_automatic_upgrade and f"{e.publisher}.{e.type}" == kind_name for e in extensions)


def _pending_step_explanation(
    scale_set: ScaleSet, steps: list[dict[str, Any]], not_before: dt.datetime, now: dt.datetime
) -> Explanation | None:
    """Why the set's step (its region, its zone or the not-zonal one) has not started."""
    zones = set(scale_set.zones or [])
    own = [
        r
        for r in steps
        if r["region_id"] == scale_set.region_id
        and r["status"] == StepStatus.PENDING
        and (r["zone"] in zones if zones else not r["zone"])
    ]
    if not own:
        return None
    step = own[0]
    views = [
        StepView(
            r["pk"], r["phase"], r["region_id"], r["region__name"], r["zone"], r["position"], r["status"], None, None
        )
        for r in steps
    ]
    pairs = {r["region__name"]: r["region__geo_pair__name"] for r in steps}
    mine = next(v for v in views if v.pk == step["pk"])
    return _pending_words(mine, views, pairs, not_before, now)


def _pending_words(
    step: StepView, steps: Sequence[StepView], pairs: dict[str, str | None], not_before: dt.datetime, now: dt.datetime
) -> Explanation | None:
    """A pending step waits for the trigger delay, an earlier phase, or the zone before it."""
    phases = sorted({s.phase for s in steps})
    earlier = [s for s in steps if s.phase < step.phase and not s.is_finished]
    if earlier:
        phase = min(s.phase for s in earlier)
        regions = tuple(sorted({s.region_name for s in steps if s.phase == phase}))
        return explain_phase_wait(
            waiting_for=WaitingPhase(phases.index(phase) + 1, regions), pairs=pairs, region=step.region_name
        )
    if now < not_before:
        return explain_scheduled(due_at=not_before, now=now)
    before = [
        s
        for s in steps
        if s.phase == step.phase and s.region_id == step.region_id and s.position < step.position and not s.is_finished
    ]
    if before:
        return explain_zone_wait(region=step.region_name, zone_before=before[-1].zone)
    return None


def _target_explanation(
    status: str, due_at: dt.datetime, message: str, step_started_at: dt.datetime | None, now: dt.datetime
) -> Explanation | None:
    """Why a scheduled set has not started: its due time (the trigger delay, or the longer
    one of a first automatic OS upgrade after enabling, R-AUTO-2), or another run (R-ONE-1)."""
    if status != TargetStatus.SCHEDULED:
        return None
    if due_at > now:
        # A step schedules its sets at its start; one due later waits for its first upgrade.
        first = step_started_at is not None and due_at > step_started_at
        return explain_scheduled(due_at=due_at, now=now, first_after_enabling=first)
    if message and not message.startswith("Retrying"):
        return explain_busy(message=message)
    return None


def _explain_pending_steps(rollout: Rollout, steps: Sequence[StepView], now: dt.datetime) -> None:
    """Give each pending step of an active rollout the words of what it waits for."""
    if not rollout.is_active:
        return
    pairs = {s.region_name: s.pair_name for s in steps}
    for step in steps:
        if step.status == StepStatus.PENDING:
            step.explanation = _pending_words(step, steps, pairs, rollout.not_before, now)


# --- plain words --------------------------------------------------------------------------------


def rollout_explanation(
    rollout: Rollout, *, steps: Sequence[StepView] | None = None, now: dt.datetime | None = None
) -> str:
    """What the rollout is doing or waiting for, in one sentence: "Waiting for the trigger
    delay until 21:30 UTC", "Phase 2 of 3: eastus zone 2 upgrading (3 of 4 sets done)",
    "Halted: …; retrying at …", "Completed …". Two queries unless `steps` are given."""
    moment = now or clock.now()
    if steps is None:
        steps = _steps_of([rollout.pk]).get(rollout.pk, [])
    phases = sorted({s.phase for s in steps})
    if rollout.status == RolloutStatus.COMPLETED:
        tally = _tally(steps)
        when = f" at {_when(rollout.ended_at, moment)}" if rollout.ended_at else ""
        return f"Completed{when}: {_plural(tally.succeeded, 'set')} upgraded in {_plural(len(phases), 'phase')}" + (
            f", {tally.skipped} skipped." if tally.skipped else "."
        )
    if rollout.status == RolloutStatus.SUPERSEDED:
        return f"Halted, then superseded: {rollout.halt_reason.rstrip('.') or 'a step failed'}."
    if rollout.status == RolloutStatus.HALTED:
        text = f"Halted: {rollout.halt_reason.rstrip('.') or 'a step failed'}"
        if rollout.retry_at:
            text += f"; retrying at {_when(rollout.retry_at, moment)} (attempt {rollout.attempts + 1})"
        else:
            text += "; nothing more starts"
        running = sum(1 for s in steps for t in s.targets if t.status == TargetStatus.RUNNING)
        if running == 1:
            text += "; the run already started finishes on its own"
        elif running:
            text += f"; the {running} runs already started finish on their own"
        return text + "."
    if moment < rollout.not_before:
        return f"Waiting for the trigger delay until {_when(rollout.not_before, moment)}."
    unfinished = [s for s in steps if not s.is_finished]
    if rollout.status == RolloutStatus.WAITING:
        return f"The trigger delay ended at {_when(rollout.not_before, moment)}: the first phase starts now."
    if not unfinished:
        return "Every phase is done: finishing."
    current = min(s.phase for s in unfinished)
    by_region: dict[str, list[StepView]] = defaultdict(list)
    for step in unfinished:
        if step.phase == current:
            by_region[step.region_name].append(step)
    parts = [
        _step_words(min(region_steps, key=lambda s: s.position), moment)
        for _, region_steps in sorted(by_region.items())
    ]
    return f"Phase {phases.index(current) + 1} of {len(phases)}: " + "; ".join(parts) + "."


def _step_words(step: StepView, now: dt.datetime) -> str:
    """What the zone in flight of a region is doing: "eastus zone 2 upgrading (3 of 4 sets done)"."""
    if step.status == StepStatus.PENDING:
        return f"{step.where} starting"
    total = len(step.targets)
    done = f" ({step.done_count} of {_plural(total, 'set')} done)"
    if any(t.status == TargetStatus.RUNNING for t in step.targets):
        return f"{step.where} upgrading{done}"
    scheduled = [t for t in step.targets if t.status == TargetStatus.SCHEDULED]
    later = [t.due_at for t in scheduled if t.due_at > now]
    if later:
        # The first automatic OS upgrade after enabling waits longer (R-AUTO-2).
        return f"{step.where} waiting until {_when(min(later), now)} (first upgrade after enabling){done}"
    busy = [t for t in scheduled if t.message]
    if busy:  # "Waiting for run #5 on the set to finish."
        why = busy[0].message.rstrip(".")
        return f"{step.where}: {busy[0].scale_set_name} {why[:1].lower()}{why[1:]}{done}"
    return f"{step.where} starting{done}"


def _phase_label(steps: Sequence[StepView]) -> str:
    phases = sorted({s.phase for s in steps})
    if not phases:
        return ""
    unfinished = [s.phase for s in steps if not s.is_finished]
    failed = [s.phase for s in steps if s.status == StepStatus.FAILED]
    current = min(failed or unfinished or [phases[-1]])
    return f"phase {phases.index(current) + 1} of {len(phases)}"


def _tally(steps: Sequence[StepView]) -> SetTally:
    """Each set once: failed if any of its targets failed; remaining while a target of it is
    scheduled or running, or a zone of it in its region has not started yet; succeeded once
    every target succeeded; skipped when it was skipped everywhere."""
    per_set: dict[int, list[TargetView]] = defaultdict(list)
    for step in steps:
        for target in step.targets:
            per_set[target.scale_set_id].append(target)
    pending = {(s.region_id, s.zone) for s in steps if s.status == StepStatus.PENDING}
    counts = {"succeeded": 0, "failed": 0, "skipped": 0, "remaining": 0}
    for targets in per_set.values():
        statuses = {t.status for t in targets}
        first = targets[0]
        zones = first.zones or ("",)
        if TargetStatus.FAILED in statuses:
            counts["failed"] += 1
        elif statuses & {TargetStatus.SCHEDULED, TargetStatus.RUNNING} or any(
            (first.region_id, zone) in pending for zone in zones
        ):
            counts["remaining"] += 1
        elif TargetStatus.SUCCEEDED in statuses:
            counts["succeeded"] += 1
        else:
            counts["skipped"] += 1
    more_to_come = any(s.status == StepStatus.PENDING and not s.targets for s in steps)
    return SetTally(**counts, more_to_come=more_to_come)


def _overall(statuses: Iterable[str]) -> str:
    found = set(statuses)
    if StepStatus.FAILED in found:
        return StepStatus.FAILED
    if found and found <= {StepStatus.SUCCEEDED}:
        return StepStatus.SUCCEEDED
    if found <= {StepStatus.PENDING}:
        return StepStatus.PENDING
    return StepStatus.IN_PROGRESS


def _steps_of(rollout_ids: Sequence[int], *, now: dt.datetime | None = None) -> dict[int, list[StepView]]:
    """Rollout id -> its steps in order (phase, region, position), each with its targets by
    set name (two queries)."""
    moment = now or clock.now()
    if not rollout_ids:
        return {}
    steps: dict[int, StepView] = {}
    by_rollout: dict[int, list[StepView]] = defaultdict(list)
    rows = (
        RolloutStep.objects.filter(rollout_id__in=list(rollout_ids))
        .order_by("rollout_id", "phase", "region__name", "position")
        .values_list(
            "pk",
            "rollout_id",
            "phase",
            "region_id",
            "region__name",
            "zone",
            "position",
            "status",
            "started_at",
            "ended_at",
            "region__geo_pair__name",
        )
    )
    for pk, rollout_id, phase, region_id, region_name, zone, position, status, started_at, ended_at, pair in rows:
        step = StepView(pk, phase, region_id, region_name, zone, position, status, started_at, ended_at, pair_name=pair)
        steps[pk] = step
        by_rollout[rollout_id].append(step)
    targets = (
        RolloutTarget.objects.filter(step__rollout_id__in=list(rollout_ids))
        .order_by("step_id", "scale_set__name", "pk")
        .values(*_TARGET_FIELDS)
    )
    for row in targets:
        owner = steps.get(row["step_id"])
        if owner is None:  # a step added since the first read: the next read shows it
            continue
        owner.targets.append(_target_view(row, owner.started_at, moment))
    return dict(by_rollout)


def _target_view(row: dict[str, Any], step_started_at: dt.datetime | None, now: dt.datetime) -> TargetView:
    has_run = row["run_id"] is not None
    progress = (
        {
            "successful": row["run__successful_count"],
            "failed": row["run__failed_count"],
            "in_progress": row["run__in_progress_count"],
            "pending": row["run__pending_count"],
        }
        if has_run
        else {}
    )
    return TargetView(
        pk=row["pk"],
        scale_set_id=row["scale_set_id"],
        scale_set_name=row["scale_set__name"],
        region_id=row["scale_set__region_id"],
        zones=tuple(row["scale_set__zones"] or ()),
        status=row["status"],
        due_at=row["due_at"],
        message=row["message"],
        run_id=row["run_id"],
        run_status=row["run__status"] or "",
        progress=progress,
        explanation=_target_explanation(row["status"], row["due_at"], row["message"], step_started_at, now),
    )


def _when(moment: dt.datetime | None, now: dt.datetime) -> str:
    """'21:30 UTC' today, '2026-06-03 21:30 UTC' another day."""
    if moment is None:
        return "—"
    utc, today = moment.astimezone(dt.UTC), now.astimezone(dt.UTC)
    return utc.strftime("%H:%M UTC") if utc.date() == today.date() else utc.strftime("%Y-%m-%d %H:%M UTC")


def _plural(count: int, word: str) -> str:
    return f"{count} {word if count == 1 else word + 's'}"
