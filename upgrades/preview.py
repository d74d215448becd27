"""The plan preview (dry run): what an operator action would do, shown before it is confirmed.

Every preview is computed by the code the run executes: the action's `services.Start`
(manual_upgrade_start, rolling_upgrade_start, OS_UPGRADE_NOW, model_change_start) planned
by `services.plan_for`, which `run_start` also calls before it writes the batches. So the
batches shown (update domain, zone, instance ids, order) are the UpgradeBatch rows a
confirmation writes (tests/upgrades/test_preview.py checks it over random fleets). The words
around the batches come from the planner's own rules (batch_size, tolerated, should_roll_back)
and the what-if (upgrades.whatif) plays the plan forward.

Refusals come first, as the action itself would refuse: a run rolling forward (R-ONE-1),
bad input (ValidationError), nothing to upgrade (NothingToUpgrade).

Queries do not grow with the number of instances: the set's instances are read once (by
plan_for), plus its extensions and the target's fault profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from fleet.drivers.simulator import configured_durations
from fleet.health import health_source_of
from fleet.models import FaultProfile, HealthState, Instance, PowerState, ProvisioningState, ScaleSet
from upgrades import services
from upgrades.forms import ids_text
from upgrades.models import Kind
from upgrades.planner import batch_size, batch_size_explained, should_roll_back, tolerated
from upgrades.services import PlannedRun, Start
from upgrades.whatif import Overrides, Timing, WhatIf, failing_instances, what_if


@dataclass(frozen=True)
class PreviewBatch:
    number: int
    update_domain: int  # -1: every update domain at once
    zone: str
    instance_ids: tuple[int, ...]

    @property
    def ids_text(self) -> str:
        return ids_text(list(self.instance_ids))

    @property
    def where(self) -> str:
        domain = "every update domain" if self.update_domain < 0 else f"update domain {self.update_domain}"
        return f"{domain}, zone {self.zone}" if self.zone else domain


@dataclass(frozen=True)
class Assumption:
    """What the what-if assumes of the target: a share of the set never healthy on it, and
    its boot time (simulated seconds)."""

    failure_share: float
    boot_seconds: float


@dataclass(frozen=True)
class Preview:
    """A plan and everything said about it, ready for a page, a dialog or the API."""

    action: str
    title: str  # "Upgrade update domain 2", "Rolling upgrade", …
    blast_radius: str
    planned: PlannedRun
    batches: tuple[PreviewBatch, ...]
    rounding: str
    gates: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (ids, why), one line per reason
    rollback: str
    eta: str
    time_note: str
    notes: tuple[str, ...]
    assumption: Assumption
    whatif: WhatIf
    default_boot_seconds: float
    steps: StepTimes
    eta_seconds: float  # simulated, every instance healthy

    @property
    def instance_count(self) -> int:
        return len(self.planned.plan.targeted_ids)

    @property
    def target_label(self) -> str:
        return self.planned.target.label

    def as_json(self) -> dict[str, Any]:
        planned = self.planned
        policy = planned.policy
        return {
            "action": self.action,
            "title": self.title,
            "kind": planned.kind,
            "blastRadius": self.blast_radius,
            "targetImage": planned.target.key,
            "targetModelVersion": planned.scale_set.model_version,
            "instanceCount": self.instance_count,
            "setInstanceCount": len(planned.every),
            "batchSize": batch_size(len(planned.every), policy),
            "rounding": self.rounding,
            "batches": [
                {
                    "number": b.number,
                    "updateDomain": b.update_domain,
                    "zone": b.zone,
                    "instanceIds": [str(i) for i in b.instance_ids],
                }
                for b in self.batches
            ],
            "gates": list(self.gates),
            "skipped": [{"instanceId": str(i), "reason": why} for i, why in sorted(planned.plan.skipped.items())],
            "rollback": self.rollback,
            "rollsBack": should_roll_back(planned.kind, policy, breached=False),
            "rollsBackOnBreach": should_roll_back(planned.kind, policy, breached=True),
            "eta": self.eta,
            "etaSeconds": self.eta_seconds,
            "timeScale": settings.TIME_SCALE,
            "timeNote": self.time_note,
            "notes": list(self.notes),
            "policy": {
                "maxBatchInstancePercent": policy.max_batch_instance_percent,
                "maxUnhealthyInstancePercent": policy.max_unhealthy_instance_percent,
                "maxUnhealthyUpgradedInstancePercent": policy.max_unhealthy_upgraded_instance_percent,
                "pauseSeconds": policy.pause_seconds,
                "healthWaitSeconds": policy.health_wait_seconds,
                "allAtOnce": policy.all_at_once,
            },
            "whatIf": whatif_json(self),
        }


# --- building a preview -----------------------------------------------------------------------


def manual_preview(
    *,
    scale_set: ScaleSet,
    instance_ids: Sequence[int | str] | str = "*",
    update_domain: int | None = None,
    fault_domain: int | None = None,
    zone: str | None = None,
    what: str = "",
    overrides: Overrides | None = None,
) -> Preview:
    """What manual_upgrade would do (R-MAN-1)."""
    _refuse_if_busy(scale_set)
    start = services.manual_upgrade_start(
        scale_set=scale_set,
        instance_ids=instance_ids,
        update_domain=update_domain,
        fault_domain=fault_domain,
        zone=zone,
    )
    return preview_of(start.planned(scale_set), action="manual", title=f"Upgrade {what}", overrides=overrides)


def rolling_preview(
    *,
    scale_set: ScaleSet,
    batch_size: int | None = None,
    pause_seconds: float | None = None,
    overrides: Overrides | None = None,
) -> Preview:
    """What rolling_upgrade would do."""
    _refuse_if_busy(scale_set)
    start = services.rolling_upgrade_start(batch_size=batch_size, pause_seconds=pause_seconds)
    return preview_of(start.planned(scale_set), action="rolling", title="Rolling upgrade", overrides=overrides)


def os_upgrade_preview(*, scale_set: ScaleSet, overrides: Overrides | None = None) -> Preview:
    """What os_upgrade_now would do (a manual trigger: no rollback, R-ROLLBACK-1)."""
    _refuse_if_busy(scale_set)
    start: Start = services.OS_UPGRADE_NOW
    return preview_of(start.planned(scale_set), action="os_upgrade", title="OS upgrade now", overrides=overrides)


def model_change_preview(
    *, scale_set: ScaleSet, changes: dict[str, Any], overrides: Overrides | None = None
) -> Preview | None:
    """What update_model would start (R-MODE-1), planned on the changed model; None in Manual
    mode, where saving starts nothing."""
    planned = services.model_change_planned(scale_set=scale_set, changes=changes)
    if planned is None:
        return None
    mode = planned.scale_set.upgrade_mode
    return preview_of(planned, action="model", title=f"Model change ({mode} mode)", overrides=overrides)


def _refuse_if_busy(scale_set: ScaleSet) -> None:
    # R-ONE-1 before any plan: the confirmation would be refused anyway.
    if services.scale_set_busy(scale_set):
        raise services.busy_refusal(scale_set)


def preview_of(planned: PlannedRun, *, action: str, title: str, overrides: Overrides | None = None) -> Preview:
    """The words, the ETA and the what-if of a planned run."""
    policy = planned.policy
    plan = planned.plan
    count = len(planned.every)
    profile = FaultProfile.objects.filter(target=planned.target.key).first()
    default_boot = profile.boot_seconds if profile and profile.boot_seconds is not None else configured_durations().boot
    wanted = overrides or Overrides()
    chosen = Assumption(
        failure_share=(
            wanted.failure_share
            if wanted.failure_share is not None
            else (profile.never_healthy_share if profile else 0.0)
        ),
        boot_seconds=wanted.boot_seconds if wanted.boot_seconds is not None else default_boot,
    )
    batches = tuple(
        PreviewBatch(number=n + 1, update_domain=b.update_domain, zone=b.zone, instance_ids=b.instance_ids)
        for n, b in enumerate(plan.batches)
    )
    targeted = len(plan.targeted_ids)
    largest = max(len(b.instance_ids) for b in plan.batches)
    skipped_note = f"; {_plural(len(plan.skipped), 'instance')} skipped" if plan.skipped else ""
    if policy.all_at_once:
        blast = f"{title}: {_plural(targeted, 'instance')}, all at once, no health gate{skipped_note}"
    else:
        label = {"rolling": "Rolling", "os_upgrade": "OS upgrade (rolling)"}.get(action, title + ", rolling")
        blast = (
            f"{label}: {_plural(len(batches), 'batch', 'batches')} of at most {largest}, "
            f"{_plural(targeted, 'instance')}, gated on health{skipped_note}"
        )
    steps = step_times_for(planned)
    timing = steps.timing(chosen.boot_seconds)
    healthy = _total_seconds(planned, timing, healthy=True)
    worst = _total_seconds(planned, timing, healthy=False)
    eta = f"about {_duration(healthy)} if every instance becomes healthy"
    if worst > healthy:
        eta += f"; up to {_duration(worst)} if every batch waits out its health wait"
    notes = []
    if not timing.detects_failures:
        notes.append(
            "This set has no health source: a running instance with its extensions provisioned counts as "
            "healthy (R-H-3), so an application that never answers goes unnoticed and no gate stops the run."
        )
    unhealthy_now = sum(1 for i in planned.every if unhealthy_for_gates(i))
    if not policy.all_at_once and unhealthy_now:
        notes.append(f"{_plural(unhealthy_now, 'instance is', 'instances are')} unhealthy now.")
    preview = Preview(
        action=action,
        title=title,
        blast_radius=blast,
        planned=planned,
        batches=batches,
        rounding=batch_size_explained(count, policy),
        gates=_gate_words(planned, unhealthy_now),
        skipped=_skipped_words(plan.skipped),
        rollback=_rollback_words(planned),
        eta=eta,
        time_note=_time_note(healthy),
        notes=tuple(notes),
        assumption=chosen,
        whatif=whatif_for(planned, chosen, steps),
        default_boot_seconds=default_boot,
        steps=steps,
        eta_seconds=healthy,
    )
    return preview


def whatif_for(planned: PlannedRun, assumption: Assumption, steps: StepTimes) -> WhatIf:
    """The what-if of a planned run under an assumption (pure once the plan is made)."""
    scale_set = planned.scale_set
    ids = [i.instance_id for i in planned.every]
    failing = failing_instances(
        set_instance_ids=ids,
        share=assumption.failure_share,
        resource_id=scale_set.resource_id,
        target_key=planned.target.key,
    )
    return what_if(
        plan=planned.plan,
        policy=planned.policy,
        kind=planned.kind,
        set_instance_ids=ids,
        unhealthy_ids={i.instance_id for i in planned.every if unhealthy_for_gates(i)},
        failing_ids=failing,
        timing=steps.timing(assumption.boot_seconds),
    )


def whatif_json(preview: Preview) -> dict[str, Any]:
    """The what-if for the chart and the API: the outcome, the words, the assumption."""
    chosen, result = preview.assumption, preview.whatif
    return {
        "failureShare": chosen.failure_share,
        "bootSeconds": chosen.boot_seconds,
        "summary": whatif_words(preview.planned, result),
        "totalText": _duration(result.total_seconds),
        "timeScale": settings.TIME_SCALE,
        **result.as_json(),
    }


def whatif_words(planned: PlannedRun, result: WhatIf) -> str:
    """How the run would end, in one sentence."""
    if result.stop_code is None:
        ending = f"Completes: all {_plural(result.planned_batches, 'batch', 'batches')} run"
    elif result.stop_before:
        ending = f"Stops before batch {result.stop_batch} of {result.planned_batches} ({result.stop_code})"
    else:
        ending = f"Stops after batch {result.stop_batch} of {result.planned_batches} ({result.stop_code})"
    parts = [
        ending,
        f"{_plural(result.upgraded, 'instance')} upgraded, {result.hit} of them unhealthy",
    ]
    if result.rolled_back:
        parts.append(
            f"{_plural(result.rolled_back, 'instance')} rolled back, taking {_duration(result.rollback_seconds)}"
        )
    elif result.hit:
        parts.append("no rollback: the unhealthy ones stay Failed")
    parts.append(f"{_duration(result.total_seconds)} in all")
    return "; ".join(parts) + "."


# --- timing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTimes:
    """The driver's typical step times for one set (simulated seconds), read once: the
    simulator's durations (configured_durations), one step per extension of the model, and
    the health source's first verdict. `timing(boot)` needs no query."""

    reimage: float
    extensions: float
    settle: float
    rollback_without_boot: float
    rollback_boot: float
    health_wait: float
    pause: float
    detects_failures: bool

    def timing(self, boot_seconds: float) -> Timing:
        return Timing(
            upgrade_seconds=self.reimage + boot_seconds + self.extensions,
            settle_seconds=self.settle,
            rollback_seconds=self.rollback_without_boot + self.rollback_boot,
            health_wait_seconds=self.health_wait,
            pause_seconds=self.pause,
            upgrade_timeout_seconds=settings.UPGRADE_TIMEOUT_SECONDS,
            detects_failures=self.detects_failures,
        )


def step_times_for(planned: PlannedRun) -> StepTimes:
    """One query (the model's extensions)."""
    durations = configured_durations()
    extensions = list(planned.scale_set.extensions.all())
    source = health_source_of(planned.scale_set, extensions)
    settle = source.settle_seconds if source.kind else 0.0
    return StepTimes(
        reimage=durations.reimage,
        extensions=durations.extension * len(extensions),
        settle=settle,
        rollback_without_boot=durations.stop + settle,
        # The previous OS disk boots in the default time (its own fault profile is not read).
        rollback_boot=durations.boot,
        health_wait=planned.policy.health_wait_seconds,
        pause=planned.policy.pause_seconds,
        detects_failures=bool(source.kind),
    )


def _total_seconds(planned: PlannedRun, timing: Timing, *, healthy: bool) -> float:
    batches = len(planned.plan.batches)
    per_batch = timing.healthy_batch_seconds
    if not healthy:
        per_batch = min(timing.upgrade_seconds, timing.upgrade_timeout_seconds) + timing.health_wait_seconds
    return batches * per_batch + max(0, batches - 1) * planned.policy.pause_seconds


def _time_note(simulated: float) -> str:
    scale = settings.TIME_SCALE
    if scale == 1:
        return "Times are the simulator's typical durations; TIME_SCALE is 1, so simulated time is real time."
    return (
        f"Times are simulated (the simulator's typical durations). TIME_SCALE is {scale:g}: "
        f"{_duration(simulated)} simulated passes in {_duration(simulated / scale)} of real time."
    )


# --- words ------------------------------------------------------------------------------------


def _gate_words(planned: PlannedRun, unhealthy_now: int) -> tuple[str, ...]:
    policy = planned.policy
    if policy.all_at_once:
        return ("No health gate: every instance is upgraded at once and the run does not stop on health.",)
    total = len(planned.every)
    before_pct = policy.max_unhealthy_instance_percent
    after_pct = policy.max_unhealthy_upgraded_instance_percent
    targeted = len(planned.plan.targeted_ids)
    first = len(planned.plan.batches[0].instance_ids)
    words = [
        f"Stops before a batch if more than {tolerated(total, before_pct)} of the {total} instances are unhealthy "
        f"(maxUnhealthyInstancePercent {before_pct} %; R-GATE-1 before the first batch, R-GATE-2 before each "
        f"later one). {unhealthy_now} {'is' if unhealthy_now == 1 else 'are'} unhealthy now.",
        f"Stops after a batch if more than {after_pct} % of the instances upgraded so far are unhealthy "
        f"(maxUnhealthyUpgradedInstancePercent, R-GATE-3): more than {tolerated(first, after_pct)} of the "
        f"{first} of the first batch, … more than {tolerated(targeted, after_pct)} of the {targeted} upgraded "
        "at the end.",
    ]
    if tolerated(first, after_pct) == 0:
        words.append("So a single unhealthy instance in the first batch stops the run.")
    return tuple(words)


def _rollback_words(planned: PlannedRun) -> str:
    policy, kind = planned.policy, planned.kind
    always = should_roll_back(kind, policy, breached=False)
    on_breach = should_roll_back(kind, policy, breached=True)
    if always:
        return "Rolls back: an instance not healthy by the end of the health wait gets its previous OS disk back."
    if on_breach:
        return (
            "Rolls back only on a policy breach (rollbackFailedInstancesOnPolicyBreach): the failed instances "
            "of the batch that breaches a gate get their previous OS disk back; otherwise failed instances stay "
            "Failed."
        )
    if kind == Kind.MANUAL_OS:
        return "No rollback: an OS upgrade started by hand leaves failed instances Failed (R-ROLLBACK-1)."
    if kind == Kind.MANUAL:
        return "No rollback: a manual upgrade leaves failed instances Failed."
    return "No rollback: failed instances stay Failed (rollbackFailedInstancesOnPolicyBreach is off)."


def _skipped_words(skipped: dict[int, str]) -> tuple[tuple[str, str], ...]:
    by_reason: dict[str, list[int]] = {}
    for number, why in sorted(skipped.items()):
        by_reason.setdefault(why, []).append(number)
    return tuple((ids_text(ids), why) for why, ids in by_reason.items())


def unhealthy_for_gates(instance: Instance) -> bool:
    """Unhealthy for any reason, as the engine counts for R-GATE-1/2 (engine._set_health):
    health Unhealthy or Unknown, not running, or failed provisioning. Booting (Initializing)
    instances are not held against the set."""
    return (
        instance.health_state in (HealthState.UNHEALTHY, HealthState.UNKNOWN)
        or instance.power_state != PowerState.RUNNING
        or instance.provisioning_state == ProvisioningState.FAILED
    )


def _plural(count: int, word: str, many: str = "") -> str:
    return f"{count} {word if count == 1 else many or word + 's'}"


def _duration(seconds: float) -> str:
    """4 h 2 min, 3 min 20 s, 45 s, 0.3 s."""
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"
