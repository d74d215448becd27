"""What if: a plan played forward against assumed failures, without touching the fleet.

Pure: the plan, the policy, the run's kind, which instances are unhealthy now and which
would never become healthy on the target, and typical step times go in; the batches that
would run, where the gates (upgrades.planner: gate_before_batch, gate_after_batch) would stop
the run, what would be rolled back (should_roll_back) and how long it would all take come out.
It follows the engine (upgrades.engine) step by step:

- before each batch the whole set's health is gated (R-GATE-1, R-GATE-2);
- a batch takes the upgrade (reimage, boot, each extension), then the health wait: over as
  soon as every instance is healthy, the full wait when one never becomes healthy (R-HEALTH-1);
- after it, the instances upgraded so far are gated (R-GATE-3; rolled-back ones count, as
  in the engine), and the failed ones are rolled back when should_roll_back says so; a
  rolled-back instance is healthy again on its previous OS disk;
- a pause between batches (R-PAUSE-1).

Which instances fail is chosen as the simulator chooses them (fleet.drivers.simulator:
chosen_share over the whole set's ids, with the salt the simulator uses for the target's
"never_healthy" fault), so a what-if of 30 % names the same instances a FaultProfile of 0.3
on the target would make fail. The share is of the set, as the simulator's is: a run that
upgrades part of the set meets only the chosen instances inside that part.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from django.conf import settings

from fleet.drivers.simulator import chosen_share
from upgrades.planner import Plan, Policy, gate_after_batch, gate_before_batch, should_roll_back, tolerated

NEVER_HEALTHY = "never_healthy"  # the simulator's name for the fault (SimulatorDriver._choose)


@dataclass(frozen=True)
class Overrides:
    """What an operator changed of the what-if's assumption (None: the target's own fault
    profile, or the simulator's default boot time)."""

    failure_share: float | None = None
    boot_seconds: float | None = None


@dataclass(frozen=True)
class Timing:
    """Typical simulated seconds of a batch's steps (from the driver's durations)."""

    upgrade_seconds: float  # reimage, boot, each extension: until the driver is done
    settle_seconds: float  # from done to the first Healthy answer of the health source
    rollback_seconds: float  # stop, boot on the previous OS disk, first Healthy answer
    health_wait_seconds: float
    pause_seconds: float
    upgrade_timeout_seconds: float = 3600.0
    detects_failures: bool = True  # False without a health source (R-H-3): the app is not asked

    @property
    def healthy_batch_seconds(self) -> float:
        return min(self.upgrade_seconds, self.upgrade_timeout_seconds) + min(
            self.settle_seconds, self.health_wait_seconds
        )


@dataclass(frozen=True)
class BatchOutcome:
    """One batch that would run, and the gates' view after it."""

    number: int  # 1-based
    update_domain: int
    zone: str
    size: int
    failed: int
    rolled_back: int
    upgraded_so_far: int
    unhealthy_upgraded_so_far: int  # R-GATE-3's count (rolled back or not)
    tolerated_upgraded: int  # the most R-GATE-3 lets pass after this batch
    set_unhealthy_before: int  # R-GATE-1/2's count before the batch started
    tolerated_set: int
    starts_at: float  # simulated seconds from the start
    ends_at: float


@dataclass(frozen=True)
class WhatIf:
    """The run as it would go: the batches that would start, and how it would end."""

    planned_batches: int
    batches: tuple[BatchOutcome, ...]
    stop_code: str | None  # the gate's error code, None when the run would complete
    stop_batch: int | None  # the batch (1-based) before or after which it stops
    stop_before: bool  # R-GATE-1/2 (before the batch) or R-GATE-3 (after it)
    upgraded: int
    hit: int  # upgraded instances that would not become healthy
    rolled_back: int
    rollback_seconds: float
    total_seconds: float
    failing_ids: tuple[int, ...] = field(default=())
    # Had every batch run: instances upgraded after each, and the most R-GATE-3 lets pass then.
    planned_upgraded: tuple[int, ...] = field(default=())
    planned_tolerated: tuple[int, ...] = field(default=())

    @property
    def completed(self) -> bool:
        return self.stop_code is None

    def as_json(self) -> dict[str, Any]:
        return {
            "plannedBatches": self.planned_batches,
            "completed": self.completed,
            "stopCode": self.stop_code,
            "stopBatch": self.stop_batch,
            "stopBefore": self.stop_before,
            "upgraded": self.upgraded,
            "hit": self.hit,
            "rolledBack": self.rolled_back,
            "rollbackSeconds": self.rollback_seconds,
            "totalSeconds": self.total_seconds,
            "failingInstanceIds": [str(i) for i in self.failing_ids],
            "plannedUpgraded": list(self.planned_upgraded),
            "plannedTolerated": list(self.planned_tolerated),
            "batches": [
                {
                    "number": b.number,
                    "updateDomain": b.update_domain,
                    "zone": b.zone,
                    "size": b.size,
                    "failed": b.failed,
                    "rolledBack": b.rolled_back,
                    "upgradedSoFar": b.upgraded_so_far,
                    "unhealthyUpgradedSoFar": b.unhealthy_upgraded_so_far,
                    "toleratedUpgraded": b.tolerated_upgraded,
                    "setUnhealthyBefore": b.set_unhealthy_before,
                    "toleratedSet": b.tolerated_set,
                    "startsAt": b.starts_at,
                    "endsAt": b.ends_at,
                }
                for b in self.batches
            ],
        }


def failing_instances(
    *, set_instance_ids: Iterable[int], share: float, resource_id: str, target_key: str, seed: int | None = None
) -> set[int]:
    """The instances that would never become healthy on `target_key` with this share: the
    simulator's own pick (same function, same salt), so the what-if and a FaultProfile agree."""
    used_seed = settings.SIMULATOR_SEED if seed is None else seed
    salt = f"{used_seed}|{resource_id}|{target_key}|{NEVER_HEALTHY}"
    return chosen_share(set_instance_ids, share=share, salt=salt)


def what_if(
    *,
    plan: Plan,
    policy: Policy,
    kind: str,
    set_instance_ids: Collection[int],
    unhealthy_ids: Collection[int],
    failing_ids: Collection[int],
    timing: Timing,
) -> WhatIf:
    """Play `plan` forward (see the module docstring). `unhealthy_ids`: instances unhealthy
    for any reason now (the engine's R-GATE-1/2 count); `failing_ids`: those that would never
    become healthy on the target."""
    total = len(set_instance_ids)
    failing = set(failing_ids) if timing.detects_failures else set()
    # Instances held against the set: unhealthy now and not yet upgraded, or failed and not
    # rolled back. An instance upgraded and healthy no longer counts.
    unhealthy = set(unhealthy_ids)
    timed_out = timing.upgrade_seconds > timing.upgrade_timeout_seconds
    clock = 0.0
    upgraded = hit = rolled_back = 0
    rollback_seconds = 0.0
    outcomes: list[BatchOutcome] = []
    stop_code: str | None = None
    stop_batch: int | None = None
    stop_before = False
    for index, batch in enumerate(plan.batches):
        if index:
            clock += policy.pause_seconds  # R-PAUSE-1, between batches only
        before = len(unhealthy)
        code = gate_before_batch(first=index == 0, unhealthy=before, total=total, policy=policy)
        if code:
            # The engine checks when the pause is over, so the pause counts in the total.
            stop_code, stop_batch, stop_before = code, index + 1, True
            break
        ids = set(batch.instance_ids)
        failed = ids if timed_out else ids & failing
        starts = clock
        if timed_out:
            clock += timing.upgrade_timeout_seconds
        else:
            clock += timing.upgrade_seconds
            clock += timing.health_wait_seconds if failed else min(timing.settle_seconds, timing.health_wait_seconds)
        upgraded += len(ids)
        hit += len(failed)
        breach = gate_after_batch(upgraded_unhealthy=hit, upgraded=upgraded, policy=policy)
        back = 0
        unhealthy -= ids - failed
        if failed and should_roll_back(kind, policy, breached=bool(breach)):
            back = len(failed)
            rolled_back += back
            step = min(timing.rollback_seconds, timing.health_wait_seconds)
            rollback_seconds += step
            clock += step
            unhealthy -= failed
        else:
            unhealthy |= failed
        outcomes.append(
            BatchOutcome(
                number=index + 1,
                update_domain=batch.update_domain,
                zone=batch.zone,
                size=len(ids),
                failed=len(failed),
                rolled_back=back,
                upgraded_so_far=upgraded,
                unhealthy_upgraded_so_far=hit,
                tolerated_upgraded=upgraded if policy.all_at_once else tolerated(upgraded, _after_percent(policy)),
                set_unhealthy_before=before,
                tolerated_set=total if policy.all_at_once else tolerated(total, policy.max_unhealthy_instance_percent),
                starts_at=starts,
                ends_at=clock,
            )
        )
        if breach:
            stop_code, stop_batch, stop_before = breach, index + 1, False
            break
    planned_upgraded = list(accumulate(len(b.instance_ids) for b in plan.batches))
    return WhatIf(
        planned_upgraded=tuple(planned_upgraded),
        planned_tolerated=tuple(
            n if policy.all_at_once else tolerated(n, _after_percent(policy)) for n in planned_upgraded
        ),
        planned_batches=len(plan.batches),
        batches=tuple(outcomes),
        stop_code=stop_code,
        stop_batch=stop_batch,
        stop_before=stop_before,
        upgraded=upgraded,
        hit=hit,
        rolled_back=rolled_back,
        rollback_seconds=rollback_seconds,
        total_seconds=clock,
        failing_ids=tuple(sorted(failing)),
    )


def _after_percent(policy: Policy) -> int:
    return policy.max_unhealthy_upgraded_instance_percent
