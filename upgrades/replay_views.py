"""A past run, moment by moment: the data the run page's replay draws from the event log."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from upgrades import replay
from upgrades.models import UpgradeRun


@require_GET
def replay_data(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run's instances, their states at its start and every change after (login is
    required by LoginRequiredMiddleware, as for every page)."""
    try:
        data = replay.run_replay(run_id=run_id)
    except UpgradeRun.DoesNotExist:
        raise Http404("No such run.") from None
    return JsonResponse(data)
