"""The pure planner: instances + policy + health -> batches and gate verdicts.

No ORM, no I/O: everything here is a function of its arguments, so the rules of SPEC 3.2
(R-BATCH-*, R-GATE-*, R-ROLLBACK-1, R-LOOP-1) are tested exhaustively, including by
property tests over random fleets and policies. The engine (upgrades.engine) executes what
this module decides; the plan preview shows the same plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class RunKind:
    """What a run upgrades and why; decides rollback behaviour (R-ROLLBACK-1)."""

    AUTOMATIC_OS = "AutomaticOSUpgrade"  # the platform rolls a new image out
    MANUAL_OS = "ManualOSUpgrade"  # POST osRollingUpgrade, "upgrade now"
    ROLLING_MODEL = "RollingModelUpgrade"  # a model change in Rolling mode, or a rolling upgrade by hand
    MANUAL = "ManualUpgrade"  # manualupgrade: given instances (or an update domain) at once
    EXTENSION = "ExtensionUpgrade"  # a new extension version


GATE_BEFORE_FIRST = "MaxUnhealthyInstancePercentExceededBeforeRollingUpgrade"  # R-GATE-1
GATE_BEFORE_LATER = "MaxUnhealthyInstancePercentExceededInRollingUpgrade"  # R-GATE-2
GATE_AFTER_BATCH = "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"  # R-GATE-3


@dataclass(frozen=True)
class Policy:
    """The rolling-upgrade policy a run runs under, snapshotted at its start."""

    max_batch_instance_percent: int = 20
    max_unhealthy_instance_percent: int = 20
    max_unhealthy_upgraded_instance_percent: int = 20
    pause_seconds: float = 0.0
    enable_cross_zone_upgrade: bool = False
    prioritize_unhealthy_instances: bool = False
    rollback_failed_instances_on_policy_breach: bool = False
    disable_automatic_rollback: bool = False
    health_wait_seconds: float = 300.0
    batch_size: int | None = None  # an operator's own batch size (vmsseditor); overrides the percent
    all_at_once: bool = False  # manual upgrades and Automatic mode: one batch, no gates


@dataclass(frozen=True)
class Candidate:
    """An instance as the planner sees it."""

    instance_id: int
    update_domain: int
    zone: str = ""
    healthy: bool = True
    on_target: bool = False
    protected: bool = False


@dataclass(frozen=True)
class Batch:
    update_domain: int
    zone: str
    instance_ids: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    batches: tuple[Batch, ...]
    skipped: dict[int, str] = field(default_factory=dict)  # instance id -> why

    @property
    def targeted_ids(self) -> list[int]:
        return [i for batch in self.batches for i in batch.instance_ids]


def batch_size(instance_count: int, policy: Policy) -> int:
    """R-BATCH-1: maxBatchInstancePercent of the set's instance count, rounded down, at
    least one; five instances or fewer go one at a time."""
    if policy.all_at_once:
        return max(1, instance_count)
    if policy.batch_size is not None:
        return max(1, policy.batch_size)
    if instance_count <= 5:
        return 1
    return max(1, instance_count * policy.max_batch_instance_percent // 100)


def batch_size_explained(instance_count: int, policy: Policy) -> str:
    """How batch_size rounded, in words (the plan preview shows it): e.g. '20 % of 23
    instances = 4.6 → 4 per batch'. Follows batch_size branch by branch."""
    size = batch_size(instance_count, policy)
    if policy.all_at_once:
        return f"all {instance_count} at once (one batch)"
    if policy.batch_size is not None:
        return f"{size} per batch (chosen by the operator)"
    if instance_count <= 5:
        return f"{instance_count} instances (5 or fewer): 1 per batch"
    exact = instance_count * policy.max_batch_instance_percent / 100
    rounded = instance_count * policy.max_batch_instance_percent // 100
    shown = f"{exact:.2f}".rstrip("0").rstrip(".")
    floor = "" if rounded == size else f" rounded down to {rounded}, at least 1:"
    return f"{policy.max_batch_instance_percent} % of {instance_count} instances = {shown} →{floor} {size} per batch"


def plan_batches(candidates: Sequence[Candidate], policy: Policy, *, set_instance_count: int | None = None) -> Plan:
    """Cut the candidates into batches (R-BATCH-1, R-BATCH-2).

    Instances already on the target and protected ones are skipped. A batch never mixes update
    domains; update domains go in ascending order; in a zonal set zone by zone unless
    enableCrossZoneUpgrade; with prioritizeUnhealthyInstances every unhealthy instance goes
    before any healthy one. Update domain numbers are the batch boundary across placement
    groups (docs/DECISIONS.md). `all_at_once` makes one batch of everything.
    """
    skipped: dict[int, str] = {}
    eligible: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: c.instance_id):
        if candidate.protected:
            skipped[candidate.instance_id] = "protected from scale-set actions"
        elif candidate.on_target:
            skipped[candidate.instance_id] = "already on the target"
        else:
            eligible.append(candidate)
    if not eligible:
        return Plan(batches=(), skipped=skipped)
    if policy.all_at_once:
        only = Batch(update_domain=-1, zone="", instance_ids=tuple(c.instance_id for c in eligible))
        return Plan(batches=(only,), skipped=skipped)
    size = batch_size(set_instance_count if set_instance_count is not None else len(candidates), policy)
    zones = sorted({c.zone for c in eligible}, key=_zone_order)
    zone_by_zone = len(zones) > 1 and not policy.enable_cross_zone_upgrade

    groups: dict[tuple[int, int, int, str], list[int]] = defaultdict(list)
    for c in eligible:
        priority = 0 if (policy.prioritize_unhealthy_instances and not c.healthy) else 1
        zone_rank = zones.index(c.zone) if zone_by_zone else 0
        groups[(priority, zone_rank, c.update_domain, c.zone if zone_by_zone else "")].append(c.instance_id)
    batches = []
    for (_, _, update_domain, zone), ids in sorted(groups.items()):
        for start in range(0, len(ids), size):
            batches.append(Batch(update_domain=update_domain, zone=zone, instance_ids=tuple(ids[start : start + size])))
    return Plan(batches=tuple(batches), skipped=skipped)


def _zone_order(zone: str) -> tuple[int, str]:
    return (int(zone), zone) if zone.isascii() and zone.isdigit() else (10**6, zone)


def exceeds(count: int, total: int, max_percent: int) -> bool:
    """'More than max_percent % of total' in whole numbers (no float rounding surprises)."""
    return total > 0 and count * 100 > max_percent * total


def tolerated(total: int, max_percent: int) -> int:
    """The most instances out of `total` that do not exceed `max_percent` (so one more
    stops the run): the gates as an absolute count, as `exceeds` counts them."""
    return max_percent * total // 100


def gate_before_batch(*, first: bool, unhealthy: int, total: int, policy: Policy) -> str | None:
    """R-GATE-1 before the first batch, R-GATE-2 before each later one: the error code when
    more than maxUnhealthyInstancePercent of the whole set is unhealthy, else None."""
    if policy.all_at_once or not exceeds(unhealthy, total, policy.max_unhealthy_instance_percent):
        return None
    return GATE_BEFORE_FIRST if first else GATE_BEFORE_LATER


def gate_after_batch(*, upgraded_unhealthy: int, upgraded: int, policy: Policy) -> str | None:
    """R-GATE-3: the error code when more than maxUnhealthyUpgradedInstancePercent of the
    instances upgraded so far in this run ended unhealthy, else None."""
    if policy.all_at_once or not exceeds(upgraded_unhealthy, upgraded, policy.max_unhealthy_upgraded_instance_percent):
        return None
    return GATE_AFTER_BATCH


def should_roll_back(kind: str, policy: Policy, *, breached: bool) -> bool:
    """R-ROLLBACK-1: which failed instances get their previous OS disk (or extension) back.

    Automatic OS upgrades roll back unless disableAutomaticRollback; a manually triggered OS
    upgrade never does; a rolling model upgrade only when it breached the policy and
    rollbackFailedInstancesOnPolicyBreach is set; extension upgrades always (R-EXT-1).
    """
    if kind == RunKind.AUTOMATIC_OS:
        return not policy.disable_automatic_rollback
    if kind == RunKind.EXTENSION:
        return True
    if kind == RunKind.ROLLING_MODEL:
        return breached and policy.rollback_failed_instances_on_policy_breach
    return False


@dataclass(frozen=True)
class Progress:
    successful: int
    failed: int
    in_progress: int
    pending: int

    @property
    def total(self) -> int:
        return self.successful + self.failed + self.in_progress + self.pending


def progress(outcomes: Mapping[str, int]) -> Progress:
    """ARM's progress counts from the number of outcomes per status (R-LOOP-1). Rolled-back
    instances count as failed upgrades; Skipped ones are not targeted and not counted."""
    return Progress(
        successful=outcomes.get("Succeeded", 0),
        failed=sum(outcomes.get(s, 0) for s in ("Failed", "RolledBack", "RollbackFailed")),
        in_progress=outcomes.get("InProgress", 0),
        pending=outcomes.get("Pending", 0),
    )


def plan_phases(regions: Sequence[str], geo_pair: Mapping[str, str | None], *, canary: bool = True) -> list[list[str]]:
    """R-AVAIL-1: regions (in the order given: least exposure first) grouped into phases in
    which no two regions are a geo pair.

    With `canary` the first phase is one region and each later phase may be twice as large
    (1, 2, 4 …): a bad version meets as few instances as possible before it is stopped.
    Without it (regions joining a rollout late) phases are only as many as the pairs need.
    A region whose pair is already in the phase being filled waits for the next one.
    """
    remaining = list(dict.fromkeys(regions))
    phases: list[list[str]] = []
    size = 1 if canary else len(remaining)
    while remaining:
        phase: list[str] = []
        later: list[str] = []
        for region in remaining:
            if len(phase) < size and geo_pair.get(region) not in phase:
                phase.append(region)
            else:
                later.append(region)
        phases.append(phase)
        remaining = later
        size *= 2
    return phases
