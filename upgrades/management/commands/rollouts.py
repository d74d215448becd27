from typing import Any

from django.core.management.base import CommandParser
from django.db.models import Count

from fleet.cli import ConsoleCommand
from upgrades.models import Rollout, RolloutStatus


class Command(ConsoleCommand):
    help = (
        "List the availability-first rollouts of published image and extension versions, newest first: "
        "their status, phases, and where and why a halted one stopped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--active", action="store_true", help="Only rollouts waiting or rolling out")

    def handle(self, *args: Any, **options: Any) -> None:
        rollouts = Rollout.objects.annotate(phase_count=Count("steps__phase", distinct=True)).order_by(
            "-created_at", "-pk"
        )
        if options["active"]:
            rollouts = rollouts.filter(status__in=[RolloutStatus.WAITING, RolloutStatus.ROLLING_OUT])
        self.print_json([rollout_json(r, phase_count=r.phase_count) for r in rollouts])


def rollout_json(rollout: Rollout, *, phase_count: int) -> dict[str, Any]:
    return {
        "id": rollout.pk,
        "kind": rollout.kind,
        "target": rollout.target,
        "status": rollout.status,
        "phaseCount": phase_count,
        "attempts": rollout.attempts,
        "createdAt": rollout.created_at,
        "notBefore": rollout.not_before,
        "endedAt": rollout.ended_at,
        "haltedAt": rollout.halted_at,
        "haltReason": rollout.halt_reason or None,
        "retryAt": rollout.retry_at,
    }
