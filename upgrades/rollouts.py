"""Automatic upgrades: what runs while nobody is clicking (SPEC 3.4, 3.5).

Two parts, both short steps driven by the beat like the engine:

- `automatic_upgrades_scan` notices that a set takes a version automatically but is not on it
  yet — a new image version became "latest" in its region (R-AUTO-2), or its publisher
  released a newer version of an extension set to enableAutomaticUpgrade (R-EXT-1) — and makes
  sure one Rollout per published version covers that set.
- `rollout_advance` moves a rollout forward: after the trigger delay, phase by phase (a phase
  is a group of regions with no geo pair inside, R-AVAIL-1), inside each region zone by zone,
  it starts one automatic run per set (startedBy Platform) and waits for their verdicts. A
  phase starts only when every set of the previous one succeeded; a failure halts the
  rollout there and says where and why. A halted extension rollout tries again after
  EXTENSION_UPGRADE_RETRY_SECONDS (R-EXT-2).

Pending extension upgrades of one set are separate runs, one per released version, taken one
after another (R-ONE-1): each is applied on its own and one failing stops no other (R-EXT-3).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from fleet import clock
from fleet.images import ImageRef
from fleet.models import (
    ExtensionVersion,
    ImageSource,
    Instance,
    Region,
    ScaleSet,
    ScaleSetExtension,
    UpgradeMode,
)
from fleet.selectors import target_images
from fleet.versions import parse_version
from upgrades import events
from upgrades.errors import NothingToUpgrade, ScaleSetBusy
from upgrades.models import (
    TERMINAL,
    Kind,
    Rollout,
    RolloutKind,
    RolloutStatus,
    RolloutStep,
    RolloutTarget,
    RunStatus,
    StartedBy,
    StepStatus,
    TargetStatus,
    UpgradeRun,
)
from upgrades.planner import plan_phases

log = logging.getLogger(__name__)

# Real seconds between looks at a rollout whose runs are rolling forward, should the wake-up
# at a run's end be lost; a set busy with another run is looked at every ENGINE_POLL_SECONDS.
ROLLOUT_POLL_SECONDS = 30.0
# How many due targets one step of a rollout starts. Each start plans and writes a whole run,
# so a region of hundreds of sets is started a slice at a time: each slice commits (its runs
# begin at once, on any worker) and the rollout goes on with the next slice at once, every
# task well inside its time limit.
START_SLICE = 20


@dataclass
class Need:
    """A version one set takes automatically and is not on yet."""

    scale_set: ScaleSet
    extensions: dict[str, str] = field(default_factory=dict)  # extension upgrades: {name: version}


# --- what the fleet needs ----------------------------------------------------------------------


def os_image_needs(sets: Iterable[ScaleSet] | None = None) -> dict[str, list[Need]]:
    """Image key -> the sets with automatic OS upgrades whose latest image (R-AUTO-2) some of
    their instances are not on. The image is the set's own publisher/offer/SKU (or gallery
    image) resolved: an automatic upgrade never changes them (R-AUTO-3). In Manual mode only
    instances already on the latest model count (R-AUTO-4). Three queries."""
    if sets is None:
        sets = ScaleSet.objects.filter(enable_automatic_os_upgrade=True).exclude(image_source=ImageSource.CUSTOM)
    candidates = [s for s in sets if s.enable_automatic_os_upgrade and s.image_source != ImageSource.CUSTOM]
    if not candidates:
        return {}
    targets = target_images(candidates)
    by_pk = {s.pk: s for s in candidates}
    rows = (
        Instance.objects.filter(scale_set_id__in=list(by_pk))
        .values_list("scale_set_id", "os_image", "model_version")
        .distinct()
    )
    needs: dict[str, list[Need]] = defaultdict(list)
    seen: set[int] = set()
    for scale_set_id, os_image, model_version in rows:
        scale_set = by_pk[scale_set_id]
        target = targets.get(scale_set_id)
        if target is None or os_image == target.key or scale_set_id in seen:
            continue
        if scale_set.upgrade_mode == UpgradeMode.MANUAL and model_version < scale_set.model_version:
            continue  # R-AUTO-4: the operator brings it to the latest model first
        seen.add(scale_set_id)
        needs[target.key].append(Need(scale_set))
    return dict(needs)


def extension_needs(now: dt.datetime, sets: Iterable[ScaleSet] | None = None) -> dict[str, list[Need]]:
    """Extension version key -> the sets whose extension opted in (enableAutomaticUpgrade)
    and runs an older version than the newest its publisher released within the same major
    version (R-EXT-1). Two queries."""
    extensions = ScaleSetExtension.objects.filter(enable_automatic_upgrade=True).select_related("scale_set")
    if sets is not None:
        extensions = extensions.filter(scale_set__in=list(sets))
    extensions_list = list(extensions)
    if not extensions_list:
        return {}
    kinds = {(e.publisher, e.type) for e in extensions_list}
    condition = Q()
    for publisher, type_ in kinds:
        condition |= Q(publisher=publisher, type=type_)
    released: dict[tuple[str, str, int], ExtensionVersion] = {}
    for version in ExtensionVersion.objects.filter(condition, published_at__lte=now).order_by("sort_key"):
        released[version.publisher, version.type, parse_version(version.version)[0]] = version  # highest last
    needs: dict[str, dict[int, Need]] = defaultdict(dict)
    for ext in extensions_list:
        current = parse_version(ext.effective_version)
        newest = released.get((ext.publisher, ext.type, current[0]))
        if newest is None or parse_version(newest.version) <= current:
            continue
        need = needs[newest.key].setdefault(ext.scale_set_id, Need(ext.scale_set))
        need.extensions[ext.name] = newest.version
    return {key: list(by_set.values()) for key, by_set in needs.items()}


def _needs(kind: str, target: str, now: dt.datetime, sets: Iterable[ScaleSet] | None = None) -> dict[int, Need]:
    found = os_image_needs(sets) if kind == RolloutKind.OS_IMAGE else extension_needs(now, sets)
    return {need.scale_set.pk: need for need in found.get(target, [])}


# --- the scan (beat) -----------------------------------------------------------------------------


def automatic_upgrades_scan(now: dt.datetime | None = None) -> list[int]:
    """Make sure a rollout covers every set that needs a version; returns the rollouts that
    got new sets (created, or a phase added for sets that joined late)."""
    moment = now or clock.now()
    touched: list[int] = []
    wanted = [(RolloutKind.OS_IMAGE, key, needs) for key, needs in os_image_needs().items()]
    wanted += [(RolloutKind.EXTENSION, key, needs) for key, needs in extension_needs(moment).items()]
    for kind, target, needs in wanted:
        rollout_id = _cover(kind, target, needs, moment)
        if rollout_id is not None:
            touched.append(rollout_id)
    _supersede_halted(moment)
    return touched


def _cover(kind: str, target: str, needs: list[Need], now: dt.datetime) -> int | None:
    """Create the version's rollout, or add a phase for sets no step covers yet (a region the
    version reached later, a set that enabled automatic upgrades later). None: nothing new."""
    rollout = Rollout.objects.filter(kind=kind, target=target).first()
    if rollout is None:
        try:
            with transaction.atomic():
                rollout = Rollout.objects.create(
                    kind=kind,
                    target=target,
                    created_at=now,
                    not_before=clock.after(settings.AUTOMATIC_UPGRADE_DELAY_SECONDS, start=now),
                    status=RolloutStatus.WAITING,
                    next_action_at=now,
                )
        except IntegrityError:  # another scan created it first
            return None
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
        if rollout.status in (RolloutStatus.HALTED, RolloutStatus.SUPERSEDED):
            return None  # halted where it failed: nothing more starts (R-AVAIL-1)
        steps = list(rollout.steps.all())
        pending_regions = {s.region_id for s in steps if s.status == StepStatus.PENDING}
        covered = set(
            RolloutTarget.objects.filter(step__rollout=rollout)
            .exclude(status=TargetStatus.SKIPPED)
            .values_list("scale_set_id", flat=True)
        )
        late = [n for n in needs if n.scale_set.pk not in covered and n.scale_set.region_id not in pending_regions]
        if not late:
            return None
        regions = _regions_least_exposed_first(late)
        first_phase = max((s.phase for s in steps), default=-1) + 1
        phases = plan_phases([r.name for r in regions], {r.name: _pair_name(r) for r in regions}, canary=not steps)
        by_name = {r.name: r for r in regions}
        for offset, names in enumerate(phases):
            for name in names:
                _add_steps(rollout, first_phase + offset, by_name[name], [n.scale_set for n in late])
        if rollout.status == RolloutStatus.COMPLETED:
            rollout.status = RolloutStatus.ROLLING_OUT
            rollout.ended_at = None
        rollout.next_action_at = now
        rollout.save()
        events.rollout_changed(rollout.pk)
    _enqueue(rollout.pk)
    return rollout.pk


def _supersede_halted(now: dt.datetime) -> None:
    """Close halted rollouts whose image or extension has a rollout of a newer version: an
    old OS version is never resumed, and an old extension version is not retried. One query
    when nothing is halted."""
    halted = list(Rollout.objects.filter(status=RolloutStatus.HALTED))
    if not halted:
        return
    newest: dict[tuple[str, str], Rollout] = {}
    for rollout in Rollout.objects.filter(kind__in={r.kind for r in halted}).order_by("created_at", "pk"):
        newest[rollout.kind, rollout.target_name] = rollout
    for rollout in halted:
        newer = newest.get((rollout.kind, rollout.target_name))
        if newer is None or newer.pk == rollout.pk:
            continue
        if RolloutTarget.objects.filter(step__rollout=rollout, status=TargetStatus.RUNNING).exists():
            continue  # its runs still finish and are recorded; closed at a later scan
        with transaction.atomic():
            closed = Rollout.objects.filter(pk=rollout.pk, status=RolloutStatus.HALTED).update(
                status=RolloutStatus.SUPERSEDED,
                retry_at=None,
                next_action_at=None,
                ended_at=rollout.ended_at or now,
                halt_reason=f"{rollout.halt_reason} Superseded by {newer.target}."[:1000],
            )
            if closed:
                events.rollout_changed(rollout.pk)


def _regions_least_exposed_first(needs: list[Need]) -> list[Region]:
    """The regions of these sets, fewest instances first (the canary meets the fewest), then
    by name."""
    sizes: dict[int, int] = defaultdict(int)
    regions: dict[int, Region] = {}
    for need in needs:
        sizes[need.scale_set.region_id] += need.scale_set.capacity
        regions[need.scale_set.region_id] = need.scale_set.region
    return sorted(regions.values(), key=lambda r: (sizes[r.pk], r.name))


def _pair_name(region: Region) -> str | None:
    return region.geo_pair.name if region.geo_pair_id and region.geo_pair else None


def _add_steps(rollout: Rollout, phase: int, region: Region, sets: list[ScaleSet]) -> None:
    """A region's share of a phase: sets that are not zonal first, then zone by zone."""
    zones = sorted({zone for s in sets if s.region_id == region.pk for zone in s.zones}, key=_zone_order)
    zones_in_order = [""] + zones
    RolloutStep.objects.bulk_create(
        RolloutStep(rollout=rollout, phase=phase, region=region, zone=zone, position=n)
        for n, zone in enumerate(zones_in_order)
    )


def _zone_order(zone: str) -> tuple[int, str]:
    return (int(zone), zone) if zone.isascii() and zone.isdigit() else (10**6, zone)


# --- moving a rollout forward ----------------------------------------------------------------------


def due_rollout_ids(now: dt.datetime | None = None, limit: int = 200) -> list[int]:
    moment = now or clock.now()
    return list(
        Rollout.objects.filter(next_action_at__lte=moment)
        .order_by("next_action_at")
        .values_list("pk", flat=True)[:limit]
    )


def rollout_advance(rollout_id: int, *, wake: bool = False) -> bool:
    """One step of a rollout, under its row lock: take the verdicts of finished runs, start
    the runs that are due, move to the next zone or phase, halt on a failure. Returns False
    when it was not due. `wake`: one of its runs just ended, so look now."""
    now = clock.now()
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().filter(pk=rollout_id).first()
        if rollout is None or rollout.next_action_at is None or rollout.status == RolloutStatus.SUPERSEDED:
            return False
        if rollout.next_action_at > now and not wake:
            return False
        _step(rollout, now)
        rollout.save()
        events.rollout_changed(rollout.pk)
        if rollout.next_action_at is not None and rollout.next_action_at <= now:
            _enqueue(rollout.pk)  # the next phase or zone starts at once, not at the next sweep
    return True


def _step(rollout: Rollout, now: dt.datetime) -> None:
    steps = list(rollout.steps.select_related("region").order_by("phase", "region__name", "position"))
    if rollout.status == RolloutStatus.HALTED:
        for step in steps:
            if step.status == StepStatus.IN_PROGRESS:
                _take_verdicts(rollout, step, now)
        _while_halted(rollout, steps, now)
        return
    if now < rollout.not_before:
        rollout.status = RolloutStatus.WAITING
        rollout.next_action_at = rollout.not_before
        return
    rollout.status = RolloutStatus.ROLLING_OUT
    failed = [s for s in steps if s.status == StepStatus.FAILED]
    if failed:
        _halt(rollout, failed, now)
        return
    unfinished = [s for s in steps if not s.is_finished]
    if not unfinished:
        rollout.status = RolloutStatus.COMPLETED
        rollout.ended_at = now
        rollout.next_action_at = None
        return
    phase = min(s.phase for s in unfinished)
    by_region: dict[int, list[RolloutStep]] = defaultdict(list)
    for step in unfinished:
        if step.phase == phase:
            by_region[step.region_id].append(step)
    next_look: dt.datetime | None = None
    for region_steps in by_region.values():
        # Zones one at a time inside a region (R-AVAIL-1): only its first unfinished step runs.
        for step in region_steps:
            if step.status == StepStatus.PENDING:
                _start_step(rollout, step, now)
            if step.status == StepStatus.IN_PROGRESS:
                due = _start_due_targets(rollout, step, now)
                _take_verdicts(rollout, step, now)
                if due is not None:
                    next_look = min(next_look or due, max(due, now))
            if step.status == StepStatus.FAILED:
                _halt(rollout, [step], now)
                return
            if not step.is_finished:
                break
    if all(s.status == StepStatus.SUCCEEDED for s in steps if s.phase == phase):
        rollout.next_action_at = now  # the next phase starts at once
        return
    if RolloutTarget.objects.filter(step__rollout=rollout, status=TargetStatus.RUNNING).exists():
        # Runs tell the rollout when they end (engine._wake_rollouts_of); this poll is only
        # the safety net for a wake-up lost with a worker.
        poll = now + dt.timedelta(seconds=ROLLOUT_POLL_SECONDS)
        next_look = min(next_look or poll, poll)
    rollout.next_action_at = next_look


def _start_step(rollout: Rollout, step: RolloutStep, now: dt.datetime) -> None:
    """Collect the sets of the step's region and zone that need the version now."""
    sets = ScaleSet.objects.filter(region=step.region).select_related("region")
    in_zone = [s for s in sets if (step.zone in s.zones if step.zone else not s.zones)]
    needs = _needs(rollout.kind, rollout.target, now, in_zone)
    already = set(
        RolloutTarget.objects.filter(step__rollout=rollout, step__region=step.region, step__zone=step.zone)
        .exclude(status=TargetStatus.SKIPPED)
        .values_list("scale_set_id", flat=True)
    )
    RolloutTarget.objects.bulk_create(
        RolloutTarget(step=step, scale_set=need.scale_set, due_at=_due_at(rollout, need.scale_set, now))
        for pk, need in needs.items()
        if pk not in already
    )
    step.status = StepStatus.IN_PROGRESS
    step.started_at = now
    step.save()


def _due_at(rollout: Rollout, scale_set: ScaleSet, now: dt.datetime) -> dt.datetime:
    """The first automatic OS upgrade after enabling may wait longer (R-AUTO-2)."""
    enabled_at = scale_set.automatic_os_upgrade_enabled_at
    if rollout.kind != RolloutKind.OS_IMAGE or enabled_at is None:
        return now
    had_one = UpgradeRun.objects.filter(
        scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_at__gte=enabled_at
    ).exists()
    if had_one:
        return now
    return max(now, clock.after(settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS, start=enabled_at))


def _start_due_targets(rollout: Rollout, step: RolloutStep, now: dt.datetime) -> dt.datetime | None:
    """Start the runs whose time came, at most START_SLICE of them; returns the earliest due
    time still ahead (or of a set still busy with another run), now when more are due than
    one step starts, None if nothing waits."""
    later: dt.datetime | None = None
    started = 0
    for target in step.targets.filter(status=TargetStatus.SCHEDULED).select_related("scale_set__region"):
        if target.due_at > now:
            later = min(later or target.due_at, target.due_at)
            continue
        if started == START_SLICE:
            return now  # the next slice in the rollout's next step, enqueued on commit
        _start_target(rollout, step, target, now)
        if target.status != TargetStatus.SCHEDULED:
            started += 1  # a set still busy does not count: its retry comes with the poll below
        else:  # busy with another run: look again soon
            again = now + dt.timedelta(seconds=settings.ENGINE_POLL_SECONDS)
            later = min(later or again, again)
    return later


def _start_target(rollout: Rollout, step: RolloutStep, target: RolloutTarget, now: dt.datetime) -> None:
    from upgrades.services import run_start

    scale_set = target.scale_set
    need = _needs(rollout.kind, rollout.target, now, [scale_set]).get(scale_set.pk)
    if need is None:
        _finish_target(target, TargetStatus.SKIPPED, _why_not_needed(rollout, scale_set))
        return
    instance_ids = _scope(scale_set, step.zone)
    if not instance_ids:
        _finish_target(
            target, TargetStatus.SKIPPED, "Its instances must first be brought to the latest model (Manual mode)."
        )
        return
    try:
        with transaction.atomic():
            if rollout.kind == RolloutKind.OS_IMAGE:
                run = run_start(
                    scale_set=scale_set,
                    kind=Kind.AUTOMATIC_OS,
                    started_by=StartedBy.PLATFORM,
                    instance_ids=instance_ids,
                    image=ImageRef.from_key(rollout.target),
                )
            else:
                run = run_start(
                    scale_set=scale_set,
                    kind=Kind.EXTENSION,
                    started_by=StartedBy.PLATFORM,
                    instance_ids=instance_ids,
                    extensions=need.extensions,
                )
    except ScaleSetBusy:
        busy = UpgradeRun.objects.filter(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD).first()
        target.message = f"Waiting for run #{busy.pk if busy else '?'} on the set to finish."
        target.save(update_fields=["message"])
        return
    except NothingToUpgrade:
        _finish_target(target, TargetStatus.SUCCEEDED, "Already on the version.")
        _remember_extension_versions(rollout, scale_set)
        return
    except ValidationError as error:
        _finish_target(target, TargetStatus.FAILED, " ".join(error.messages))
        return
    target.status = TargetStatus.RUNNING
    target.run = run
    target.message = ""
    target.save(update_fields=["status", "run", "message"])


def _scope(scale_set: ScaleSet, zone: str) -> list[int]:
    """The instances a rollout step upgrades: the zone's; in Manual mode only those on the
    latest model (R-AUTO-4)."""
    instances = Instance.objects.filter(scale_set=scale_set)
    if zone:
        instances = instances.filter(zone=zone)
    if scale_set.upgrade_mode == UpgradeMode.MANUAL:
        instances = instances.filter(model_version__gte=scale_set.model_version)
    return list(instances.order_by("instance_id").values_list("instance_id", flat=True))


def _why_not_needed(rollout: Rollout, scale_set: ScaleSet) -> str:
    if rollout.kind == RolloutKind.OS_IMAGE:
        if not scale_set.enable_automatic_os_upgrade:
            return "Automatic OS upgrades were turned off (R-AUTO-5)."
        return "The set no longer takes this version (a newer one is latest, or it is already on it)."
    return "The extension no longer takes this version automatically (turned off, removed, or already on it)."


def _take_verdicts(rollout: Rollout, step: RolloutStep, now: dt.datetime) -> None:
    """Finished runs give their targets a verdict; a step with every target finished ends,
    Failed if any failed."""
    for target in step.targets.filter(status=TargetStatus.RUNNING).select_related("run", "scale_set"):
        run = target.run
        if run is None:
            _finish_target(target, TargetStatus.FAILED, "Its run was deleted.")
            continue
        if run.status not in TERMINAL:
            continue
        if run.status == RunStatus.COMPLETED and run.failed_count == 0:
            _finish_target(target, TargetStatus.SUCCEEDED, "")
            _remember_extension_versions(rollout, target.scale_set)
        else:
            _finish_target(target, TargetStatus.FAILED, _run_failure(run))
    counts = dict(step.targets.values_list("status").annotate(n=Count("pk")).order_by())
    if counts.get(TargetStatus.SCHEDULED) or counts.get(TargetStatus.RUNNING):
        return
    step.status = StepStatus.FAILED if counts.get(TargetStatus.FAILED) else StepStatus.SUCCEEDED
    step.ended_at = now
    step.save()


def _run_failure(run: UpgradeRun) -> str:
    if run.status == RunStatus.CANCELLED:
        return f"run #{run.pk} was cancelled."
    what = (run.error_message or f"{run.failed_count} instance(s) failed.").rstrip(".")
    parts = [f"run #{run.pk} {run.status}: {what}"]
    first = (
        run.outcomes.filter(status__in=["Failed", "RolledBack", "RollbackFailed"])
        .exclude(reason="")
        .order_by("instance_id_number")
        .first()
    )
    if first is not None:
        parts.append(f"instance {first.instance_id_number}: {first.reason.rstrip('.')}")
    if run.rolled_back_count:
        parts.append(f"{run.rolled_back_count} rolled back")
    return "; ".join(parts) + "."


def _finish_target(target: RolloutTarget, status: str, message: str) -> None:
    target.status = status
    target.message = message[:1000]
    target.save(update_fields=["status", "message"])


def _remember_extension_versions(rollout: Rollout, scale_set: ScaleSet) -> None:
    """Once every instance of the set runs the new extension version, a new OS disk gets it
    too (R-EXT-1: the model's typeHandlerVersion stays what the operator wrote)."""
    if rollout.kind != RolloutKind.EXTENSION:
        return
    kind, _, version = rollout.target.rpartition("@")
    for ext in scale_set.extensions.filter(enable_automatic_upgrade=True):
        if f"{ext.publisher}.{ext.type}" != kind:
            continue
        states = scale_set.instances.values_list("extension_states", flat=True)
        if all((s.get(ext.name) or {}).get("version") == version for s in states):
            ScaleSetExtension.objects.filter(pk=ext.pk).update(auto_upgraded_version=version)


def _halt(rollout: Rollout, failed: list[RolloutStep], now: dt.datetime) -> None:
    """A failure halts the rollout where it happened (R-AVAIL-1); nothing new starts. An
    extension rollout tries the failed step again later (R-EXT-2)."""
    step = failed[0]
    where = f"Phase {step.phase + 1}, {step.region.name}" + (f" zone {step.zone}" if step.zone else "")
    failures = step.targets.filter(status=TargetStatus.FAILED).select_related("scale_set")
    why = "; ".join(f"{t.scale_set.name}: {t.message}" for t in failures[:5])
    rollout.status = RolloutStatus.HALTED
    rollout.halted_at = now
    rollout.halt_reason = f"{where}: {why}"[:1000]
    if rollout.kind == RolloutKind.EXTENSION:
        rollout.retry_at = clock.after(settings.EXTENSION_UPGRADE_RETRY_SECONDS, start=now)
    _while_halted(rollout, list(rollout.steps.all()), now)


def _while_halted(rollout: Rollout, steps: list[RolloutStep], now: dt.datetime) -> None:
    """Runs already rolling forward finish under their own gates; their verdicts are still
    recorded. An extension rollout retries when its time comes."""
    if rollout.retry_at is not None and now >= rollout.retry_at:
        _retry(rollout, now)
        return
    running = RolloutTarget.objects.filter(step__rollout=rollout, status=TargetStatus.RUNNING).exists()
    poll = now + dt.timedelta(seconds=ROLLOUT_POLL_SECONDS)
    if running:
        rollout.next_action_at = min(poll, rollout.retry_at) if rollout.retry_at else poll
    else:
        rollout.next_action_at = rollout.retry_at
        if rollout.retry_at is None and rollout.ended_at is None:
            rollout.ended_at = now


def _retry(rollout: Rollout, now: dt.datetime) -> None:
    """R-EXT-2: the failed step starts again, its failed sets scheduled anew."""
    failed_steps = rollout.steps.filter(status=StepStatus.FAILED)
    RolloutTarget.objects.filter(step__in=failed_steps, status=TargetStatus.FAILED).update(
        status=TargetStatus.SCHEDULED, due_at=now, run=None, message="Retrying after a failed attempt (R-EXT-2)."
    )
    failed_steps.update(status=StepStatus.IN_PROGRESS, ended_at=None)
    rollout.status = RolloutStatus.ROLLING_OUT
    rollout.retry_at = None
    rollout.halted_at = None
    rollout.attempts += 1
    rollout.next_action_at = now


def _enqueue(rollout_id: int) -> None:
    from upgrades.tasks import rollout_advance_task

    def send() -> None:
        try:
            rollout_advance_task.delay(rollout_id)
        except Exception:
            log.warning("could not enqueue rollout %s; the reconciler will pick it up", rollout_id, exc_info=True)

    transaction.on_commit(send)


__all__ = ["automatic_upgrades_scan", "rollout_advance", "due_rollout_ids", "os_image_needs", "extension_needs"]
