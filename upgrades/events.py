"""Tells open pages about runs and rollouts (on commit only): the run panel of the scale-set
page listens on `scale-set.<id>`, a run's own page on `run.<id>`, a rollout's page on
`rollout.<id>` and the rollout list on `rollouts`."""

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


ROLLOUTS_GROUP = "rollouts"


def rollout_group(rollout_id: int) -> str:
    return f"rollout.{rollout_id}"


def rollout_changed(rollout_id: int) -> None:
    """Tell the rollout's page (and the list) that it changed; pages fetch what they show."""
    message = {"type": "rollout.changed", "rollout": rollout_id}

    def tell() -> None:
        send(rollout_group(rollout_id), message)
        send(ROLLOUTS_GROUP, message)

    transaction.on_commit(tell)
