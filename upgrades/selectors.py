"""Reads of runs: summaries for the live panel and the API, history lists."""

from __future__ import annotations

from typing import Any

from fleet import clock
from fleet.images import ImageRef
from upgrades.models import Phase, RunStatus, UpgradeRun


def active_run(scale_set_id: int) -> UpgradeRun | None:
    return UpgradeRun.objects.filter(scale_set_id=scale_set_id, status=RunStatus.ROLLING_FORWARD).first()


def latest_run(scale_set_id: int) -> UpgradeRun | None:
    return UpgradeRun.objects.filter(scale_set_id=scale_set_id).order_by("-started_at", "-pk").first()


def run_summary(run: UpgradeRun) -> dict[str, Any]:
    """What the run panel shows, in plain JSON (no queries beyond the run row)."""
    return {
        "id": run.pk,
        "kind": run.kind,
        "kind_label": run.get_kind_display(),
        "status": run.status,
        "phase": run.phase,
        "phase_label": Phase(run.phase).label,
        "started_by": run.started_by,
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "last_action": run.last_action,
        "cancel_requested": run.cancel_requested,
        "target_image": ImageRef.from_key(run.target_image).label if run.target_image else "",
        "current_batch": run.current_batch,
        "batch_count": run.batch_count,
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
