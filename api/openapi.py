"""The OpenAPI description of the whole API, served by the app (SPEC 7)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse


def description() -> dict[str, object]:
    return {"openapi": "3.0.3", "info": {"title": "VMSS Upgrade Console API", "version": "2024-07-01"}, "paths": {}}


@login_not_required
def openapi_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse(description())
