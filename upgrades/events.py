"""Tells open pages about runs (on commit only): the run panel of the scale-set page listens
on `scale-set.<id>`, a run's own page on `run.<id>`."""

from __future__ import annotations

from django.db import transaction

from fleet.events import scale_set_group, send


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def run_changed(run_id: int) -> None:
    """Publish the run's current summary once the transaction commits."""
    transaction.on_commit(lambda: _send_run(run_id))


def _send_run(run_id: int) -> None:
    from upgrades.models import UpgradeRun
    from upgrades.selectors import run_summary

    run = UpgradeRun.objects.filter(pk=run_id).first()
    if run is None:
        return
    message = {"type": "run.update", "run": run_summary(run)}
    send(scale_set_group(run.scale_set_id), message)
    send(run_group(run_id), message)
