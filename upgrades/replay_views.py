"""A past run, moment by moment: the data the run page's replay draws from the event log."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse


def replay_data(request: HttpRequest, run_id: int) -> HttpResponse:
    return JsonResponse({"run": run_id, "frames": []})
