"""Reads of runs: summaries for the live panel and the API, history lists, a run's page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.db.models import Count, Expression, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from fleet import clock
from fleet.images import ImageRef
from fleet.models import (
    GalleryImageVersion,
    HealthState,
    ImageSource,
    Instance,
    PlatformImageVersion,
    PowerState,
    ProvisioningState,
    ReplicationState,
    ScaleSet,
)
from fleet.versions import LATEST
from upgrades.explain import RunFacts, explain_run
from upgrades.models import (
    BatchStatus,
    InstanceOutcome,
    Kind,
    OutcomeStatus,
    Phase,
    RunEvent,
    RunStatus,
    UpgradeBatch,
    UpgradeRun,
)

# The live panel shows at most this many batches: all of them for an ordinary run, a window
# around the batch in flight for a run cut into hundreds (batch size 1 on a large set), so a
# message stays small however the run was planned.
BATCH_WINDOW = 30


def active_run(scale_set_id: int) -> UpgradeRun | None:
    return UpgradeRun.objects.filter(scale_set_id=scale_set_id, status=RunStatus.ROLLING_FORWARD).first()


def latest_run(scale_set_id: int) -> UpgradeRun | None:
    return UpgradeRun.objects.filter(scale_set_id=scale_set_id).order_by("-started_at", "-pk").first()


def run_summary(run: UpgradeRun, *, batches: Sequence[UpgradeBatch] | None = None) -> dict[str, Any]:
    """What the run panel shows, in plain JSON, with `explain`: which gate or wait holds the
    run and what would end it (upgrades.explain; None once the run has ended).

    Besides the run row it reads the batch window (one query, unless `batches` are given)
    and the actor's name (one query, unless the actor was fetched with the run). The live
    counts `explain` needs (the set's unhealthy instances, the batch's healthy ones) ride on
    the batch window's query as scalar subqueries, so a run in a health wait costs no query
    more; with `batches` given they take one query, and a rollback one more for the ids.
    """
    now = clock.now()
    counts = _live_count_expressions(run)
    if batches is None:
        window_start, window = _batch_window(run, counts)
        live = {key: getattr(window[0], key) for key in counts} if window and counts else {}
    else:
        window_start, window = 0, list(batches)
        live = _live_counts(run, counts)
    return {
        "id": run.pk,
        "kind": run.kind,
        "kind_label": run.get_kind_display(),
        "status": run.status,
        "phase": run.phase,
        "phase_label": Phase(run.phase).label,
        "started_by": run.started_by,
        "actor": run.actor.username if run.actor is not None else "",
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "last_action": run.last_action,
        "cancel_requested": run.cancel_requested,
        "target_image": run.target_label,
        "target_model_version": run.target_model_version,
        "current_batch": run.current_batch,
        "batch_count": run.batch_count,
        "batches_from": window_start,
        "batches": [_batch_json(b) for b in window],
        "progress": {
            "successful": run.successful_count,
            "failed": run.failed_count,
            "in_progress": run.in_progress_count,
            "pending": run.pending_count,
            "skipped": run.skipped_count,
        },
        "rollback": {
            "rolled_back": run.rolled_back_count,
            "rollback_failed": run.rollback_failed_count,
            "error": run.rollback_error,
        },
        "error": {"code": run.error_code, "message": run.error_message} if run.error_code else None,
        "next_action_at": run.next_action_at.isoformat() if run.next_action_at else None,
        "phase_deadline": run.phase_deadline.isoformat() if run.phase_deadline else None,
        "now": now.isoformat(),
        "explain": _explain(run, window, live, now),
    }


def _batch_window(run: UpgradeRun, counts: dict[str, Expression] | None = None) -> tuple[int, list[UpgradeBatch]]:
    # All of them; or a few done batches for context, then the one in flight and what follows.
    start = 0 if run.batch_count <= BATCH_WINDOW else max(0, min(run.current_batch - 5, run.batch_count - BATCH_WINDOW))
    rows = UpgradeBatch.objects.filter(run=run, index__gte=start, index__lt=start + BATCH_WINDOW).order_by("index")
    if counts:
        rows = rows.annotate(**counts)
    return start, list(rows)


# --- why is it waiting: the live counts behind `explain` --------------------------------------

# The engine's "unhealthy for any reason" (engine._set_health, R-GATE-1/2): Unhealthy or
# Unknown health, not running, or failed provisioning. Initializing is not held against the set.
_UNHEALTHY = (
    Q(health_state__in=[HealthState.UNHEALTHY, HealthState.UNKNOWN])
    | ~Q(power_state=PowerState.RUNNING)
    | Q(provisioning_state=ProvisioningState.FAILED)
)
# The engine's `_healthy`: what ends a health wait (or a rollback's wait) for an instance.
_HEALTHY = Q(
    health_state=HealthState.HEALTHY, provisioning_state=ProvisioningState.SUCCEEDED, power_state=PowerState.RUNNING
)
_DRIVER_BUSY = ~Q(provisioning_state__in=[ProvisioningState.SUCCEEDED, ProvisioningState.FAILED])
_POWERING = Q(power_state__in=[PowerState.STARTING, PowerState.STOPPING])

# Rollback phases show which instances; at most this many ids (then "and N more").
ROLLBACK_IDS_SHOWN = 20


def _count(instances: QuerySet[Instance]) -> Expression:
    """A scalar subquery counting these instances (all of one set), 0 when none."""
    counted = instances.order_by().values("scale_set_id").annotate(n=Count("pk")).values("n")[:1]
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _live_count_expressions(run: UpgradeRun) -> dict[str, Expression]:
    """The counts the run's phase needs, as subqueries (none for a finished run). Each
    counts rows of one set by indexed columns: no per-instance query, whatever the size."""
    if run.status != RunStatus.ROLLING_FORWARD:
        return {}
    if run.phase in (Phase.BEFORE_BATCH, Phase.PAUSE):
        instances = Instance.objects.filter(scale_set_id=run.scale_set_id)
        return {"live_set_total": _count(instances), "live_set_unhealthy": _count(instances.filter(_UNHEALTHY))}
    status = (
        OutcomeStatus.FAILED
        if run.phase in (Phase.ROLLBACK_DISPATCHING, Phase.ROLLING_BACK)
        else OutcomeStatus.IN_PROGRESS
    )
    in_batch = InstanceOutcome.objects.filter(run_id=run.pk, batch__index=run.current_batch, status=status)
    batch = Instance.objects.filter(pk__in=in_batch.values("instance_id"))
    return {
        "live_batch_total": _count(batch),
        "live_batch_reimaging": _count(batch.filter(_DRIVER_BUSY)),
        "live_batch_booting": _count(batch.filter(~_DRIVER_BUSY & _POWERING)),
        "live_batch_healthy": _count(batch.filter(_HEALTHY)),
        "live_batch_provisioning_failed": _count(batch.filter(provisioning_state=ProvisioningState.FAILED)),
    }


def _live_counts(run: UpgradeRun, counts: dict[str, Expression]) -> dict[str, int]:
    """The same counts in one query of their own (a run's page, which has its batches)."""
    if not counts:
        return {}
    row = UpgradeRun.objects.filter(pk=run.pk).annotate(**counts).values(*counts).first()
    return dict(row) if row else {}


def _explain(
    run: UpgradeRun, window: Sequence[UpgradeBatch], live: dict[str, int], now: dt.datetime
) -> dict[str, Any] | None:
    if run.status != RunStatus.ROLLING_FORWARD:
        return None
    policy = run.policy_snapshot
    between = run.phase in (Phase.BEFORE_BATCH, Phase.PAUSE)
    index = run.current_batch + 1 if between else run.current_batch
    size = next((b.size for b in window if b.index == index), 0)
    rollback_ids: tuple[int, ...] = ()
    if run.phase in (Phase.ROLLBACK_DISPATCHING, Phase.ROLLING_BACK):
        # One small query, only while rolling back: which instances get their old disk back.
        rollback_ids = tuple(
            InstanceOutcome.objects.filter(run=run, batch__index=run.current_batch, status=OutcomeStatus.FAILED)
            .order_by("instance_id_number")
            .values_list("instance_id_number", flat=True)[:ROLLBACK_IDS_SHOWN]
        )
    facts = RunFacts(
        status=run.status,
        phase=run.phase,
        kind=run.kind,
        cancel_requested=run.cancel_requested,
        current_batch=run.current_batch,
        batch_count=run.batch_count,
        batch_size=size,
        all_at_once=policy.all_at_once,
        max_unhealthy_percent=policy.max_unhealthy_instance_percent,
        max_unhealthy_upgraded_percent=policy.max_unhealthy_upgraded_instance_percent,
        successful=run.successful_count,
        failed=run.failed_count,
        in_progress=run.in_progress_count,
        set_total=live.get("live_set_total", 0),
        set_unhealthy=live.get("live_set_unhealthy", 0),
        batch_total=live.get("live_batch_total", 0),
        batch_reimaging=live.get("live_batch_reimaging", 0),
        batch_booting=live.get("live_batch_booting", 0),
        batch_healthy=live.get("live_batch_healthy", 0),
        batch_provisioning_failed=live.get("live_batch_provisioning_failed", 0),
        rollback_instance_ids=rollback_ids,
        now=now,
        next_action_at=run.next_action_at,
        phase_deadline=run.phase_deadline,
    )
    explanation = explain_run(facts)
    return explanation.as_json() if explanation else None


def _batch_json(batch: UpgradeBatch) -> dict[str, Any]:
    return {
        "index": batch.index,
        "update_domain": batch.update_domain,
        "zone": batch.zone,
        "size": batch.size,
        "status": batch.status,
        "status_label": BatchStatus(batch.status).label,
        "started_at": _iso(batch.started_at),
        "upgraded_at": _iso(batch.upgraded_at),
        "ended_at": _iso(batch.ended_at),
    }


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def run_panel(scale_set_id: int) -> dict[str, Any] | None:
    """The scale-set page's run panel: the run rolling forward, else the latest finished one
    (an active run is always the latest: no run can start while it rolls forward). Two
    queries, three with an actor."""
    run = (
        UpgradeRun.objects.filter(scale_set_id=scale_set_id)
        .select_related("actor")
        .order_by("-started_at", "-pk")
        .first()
    )
    return run_summary(run) if run else None


def latest_runs(scale_set_ids: Iterable[int]) -> dict[int, UpgradeRun]:
    """The latest run of each of these sets, by set id (one query, whatever their number).

    The newest run is looked up once per set (a subquery per set row), not checked once per
    run: with 10,000 runs on 200 sets that is 200 index look-ups instead of 10,000."""
    newest = UpgradeRun.objects.filter(scale_set_id=OuterRef("pk")).order_by("-started_at", "-pk").values("pk")[:1]
    latest = ScaleSet.objects.filter(pk__in=list(scale_set_ids)).values(latest=Subquery(newest))
    runs = UpgradeRun.objects.filter(pk__in=latest)
    return {run.scale_set_id: run for run in runs}


# --- the model form's choices ---------------------------------------------------------------


@dataclass
class ModelChoices:
    """What an operator may pick when editing a set's model: the image SKUs of its offer and
    the versions of each published in its region (platform), or the gallery image's versions
    replicated there. Read once, on first use (one query), so pages that never show the form
    pay nothing."""

    scale_set: ScaleSet

    @cached_property
    def versions_by_sku(self) -> dict[str, list[str]]:
        """{sku: versions newest first}; for a gallery image one key, the image's name."""
        found: dict[str, list[str]] = {}
        for sku, version in self._published():
            found.setdefault(sku, []).append(version)
        return found

    @property
    def skus(self) -> list[str]:
        current = self.scale_set.image_sku
        others = sorted(s for s in self.versions_by_sku if s != current)
        return [current, *others] if current else others

    def version_choices(self) -> list[tuple[str, Any]]:
        """'latest' first, then versions grouped by SKU (the set's own SKU first)."""
        current = self.scale_set.image_version or LATEST
        choices: list[tuple[str, Any]] = [(LATEST, "latest (the highest version published in the region)")]
        listed = {LATEST}
        keys = self.skus if self.scale_set.image_source == ImageSource.PLATFORM else list(self.versions_by_sku)
        for sku in keys:
            versions = self.versions_by_sku.get(sku, [])
            if versions:
                choices.append((sku, [(v, v) for v in versions]))
                listed.update(versions)
        if current not in listed:  # a pinned version no longer offered stays selectable
            choices.append((current, f"{current} (current)"))
        return choices

    def _published(self) -> list[tuple[str, str]]:
        scale_set = self.scale_set
        if scale_set.image_source == ImageSource.GALLERY and scale_set.gallery_image_id:
            names = (
                GalleryImageVersion.objects.filter(
                    image_id=scale_set.gallery_image_id,
                    replicas__region_id=scale_set.region_id,
                    replicas__state=ReplicationState.COMPLETED,
                )
                .order_by("-sort_key")
                .values_list("name", flat=True)
            )
            return [(f"replicated to {scale_set.region.name}", name) for name in names]
        if scale_set.image_source != ImageSource.PLATFORM:
            return []
        return list(
            PlatformImageVersion.objects.filter(
                publisher=scale_set.image_publisher,
                offer=scale_set.image_offer,
                publications__region_id=scale_set.region_id,
                publications__published_at__lte=clock.now(),
            )
            .order_by("sku", "-sort_key")
            .values_list("sku", "version")
        )


# --- history --------------------------------------------------------------------------------


def run_history(
    *,
    scale_set_id: int | None = None,
    status: str = "",
    kind: str = "",
    started_by: str = "",
    started_from: dt.datetime | None = None,
    started_before: dt.datetime | None = None,
) -> QuerySet[UpgradeRun]:
    """Every run, newest first, narrowed by the history filters; each row comes with its set
    and actor, so a page of rows costs one query however many runs it shows."""
    runs = UpgradeRun.objects.select_related("scale_set", "actor").order_by("-started_at", "-pk")
    if scale_set_id is not None:
        runs = runs.filter(scale_set_id=scale_set_id)
    if status:
        runs = runs.filter(status=status)
    if kind:
        runs = runs.filter(kind=kind)
    if started_by:
        runs = runs.filter(started_by=started_by)
    if started_from is not None:
        runs = runs.filter(started_at__gte=started_from)
    if started_before is not None:
        runs = runs.filter(started_at__lt=started_before)
    return runs


@dataclass(frozen=True)
class HistoryRow:
    """A run as a history row: what the table shows, derived without queries."""

    run: UpgradeRun
    now: dt.datetime

    @property
    def target_label(self) -> str:
        return self.run.target_label

    @property
    def duration(self) -> dt.timedelta:
        return (self.run.ended_at or self.now) - self.run.started_at

    @property
    def duration_label(self) -> str:
        return duration_text(self.duration)

    @property
    def targeted(self) -> int:
        return self.run.targeted_count

    @property
    def progress(self) -> list[tuple[str, int, str]]:
        """(part, count, percent of targeted) for the stacked progress bar; the percent as
        text with a dot whatever the locale, for a style attribute."""
        run = self.run
        whole = self.targeted or 1
        parts = [
            ("successful", run.successful_count),
            ("failed", run.failed_count),
            ("in_progress", run.in_progress_count),
            ("pending", run.pending_count),
        ]
        return [(name, count, f"{100 * count / whole:.2f}") for name, count in parts]


def history_rows(runs: Iterable[UpgradeRun]) -> list[HistoryRow]:
    now = clock.now()
    return [HistoryRow(run, now) for run in runs]


def duration_text(span: dt.timedelta) -> str:
    """'45 s', '12 min 5 s', '3 h 20 min': what an operator reads in a table."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


# --- one run's page --------------------------------------------------------------------------

OUTCOME_FIELDS = (
    "instance_id_number",
    "batch__index",
    "status",
    "from_image",
    "to_image",
    "reason",
    "started_at",
    "ended_at",
)


@dataclass(frozen=True)
class RunDetail:
    run: UpgradeRun
    batches: list[UpgradeBatch]
    outcomes: list[dict[str, Any]]
    summary: dict[str, Any]
    timeline: list[dict[str, Any]]

    @property
    def duration_label(self) -> str:
        return duration_text((self.run.ended_at or clock.now()) - self.run.started_at)

    @property
    def batches_not_started(self) -> int:
        return sum(1 for b in self.batches if b.status == BatchStatus.NOT_STARTED)


def run_detail(run_id: int) -> RunDetail:
    """A run with its set, batches and every instance's outcome: three queries whatever the
    number of instances (UpgradeRun.DoesNotExist when there is no such run)."""
    run = UpgradeRun.objects.select_related("scale_set__region", "actor").get(pk=run_id)
    batches = list(UpgradeBatch.objects.filter(run=run).order_by("index"))
    outcomes = []

    def label(value: str) -> str:
        # an extension upgrade's outcomes name extension versions already ("Monitoring 1.1")
        if not value or run.kind == Kind.EXTENSION:
            return value
        return ImageRef.from_key(value).label

    for row in InstanceOutcome.objects.filter(run=run).order_by("instance_id_number").values(*OUTCOME_FIELDS):
        row["from_label"] = label(row["from_image"])
        row["to_label"] = label(row["to_image"])
        outcomes.append(row)
    summary = run_summary(run, batches=batches)
    return RunDetail(run, batches, outcomes, summary, batch_timeline(batches))


def batch_timeline(batches: Iterable[UpgradeBatch]) -> list[dict[str, Any]]:
    """One bar per batch from its start to its end (now, while in flight): the run page's
    Plotly timeline. Batches that never started have no bar but keep their row."""
    now = clock.now()
    rows = []
    for batch in batches:
        where = f"UD {batch.update_domain}" if batch.update_domain >= 0 else "all at once"
        if batch.zone:
            where += f" · zone {batch.zone}"
        end = batch.ended_at or (now if batch.started_at else None)
        rows.append(
            {
                "label": f"Batch {batch.index + 1} · {where}",
                "index": batch.index,
                "size": batch.size,
                "status": batch.status,
                "status_label": BatchStatus(batch.status).label,
                "start": _iso(batch.started_at),
                "upgraded": _iso(batch.upgraded_at),
                "end": _iso(end),
                "ongoing": batch.started_at is not None and batch.ended_at is None,
            }
        )
    return rows


def run_events(run: UpgradeRun) -> QuerySet[RunEvent]:
    """The run's event log in order (paginate it: a large run writes thousands of events)."""
    return RunEvent.objects.filter(run=run).order_by("at", "pk")
