"""Reads of runs: summaries for the live panel and the API, history lists, a run's page."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from fleet import clock
from fleet.images import ImageRef
from fleet.models import GalleryImageVersion, ImageSource, PlatformImageVersion, ReplicationState, ScaleSet
from fleet.versions import LATEST
from upgrades.models import (
    BatchStatus,
    InstanceOutcome,
    Kind,
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
    """What the run panel shows, in plain JSON.

    Besides the run row it reads the batch window (one query, unless `batches` are given)
    and the actor's name (one query, unless the actor was fetched with the run).
    """
    window_start, window = _batch_window(run) if batches is None else (0, list(batches))
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
        "now": clock.now().isoformat(),
    }


def _batch_window(run: UpgradeRun) -> tuple[int, list[UpgradeBatch]]:
    # All of them; or a few done batches for context, then the one in flight and what follows.
    start = 0 if run.batch_count <= BATCH_WINDOW else max(0, min(run.current_batch - 5, run.batch_count - BATCH_WINDOW))
    rows = UpgradeBatch.objects.filter(run=run, index__gte=start, index__lt=start + BATCH_WINDOW).order_by("index")
    return start, list(rows)


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
    """The latest run of each of these sets, by set id (one query, whatever their number)."""
    newest = (
        UpgradeRun.objects.filter(scale_set_id=OuterRef("scale_set_id")).order_by("-started_at", "-pk").values("pk")[:1]
    )
    runs = UpgradeRun.objects.filter(scale_set_id__in=list(scale_set_ids)).filter(pk=Subquery(newest))
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
