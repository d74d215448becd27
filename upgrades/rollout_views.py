"""The rollout pages (read-only, viewers included): the list and a rollout's phases × regions.

Each page is kept live by static/js/rollout_live.js: the rollouts socket says "changed", and
the page fetches itself with `?fragment=1`, which returns only the part that changes.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from upgrades import rollout_selectors
from upgrades.models import Rollout

ROLLOUTS_PAGE_SIZE = 50


def _wants_fragment(request: HttpRequest) -> bool:
    return request.GET.get("fragment") == "1"


def rollout_list(request: HttpRequest) -> HttpResponse:
    """Every automatic rollout, newest first, paginated."""
    page = Paginator(rollout_selectors.rollout_list(), ROLLOUTS_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "rows": rollout_selectors.rollout_rows(page.object_list)}
    if _wants_fragment(request):
        return render(request, "upgrades/_rollout_list_body.html", context)
    return render(request, "upgrades/rollout_list.html", context)


def rollout_detail(request: HttpRequest, rollout_id: int) -> HttpResponse:
    """A rollout's page: what it is doing, why it halted, and its phases × regions grid."""
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None:
        raise Http404("No such rollout.")
    context = {"rollout": rollout, "grid": rollout_selectors.rollout_grid(rollout)}
    if _wants_fragment(request):
        return render(request, "upgrades/_rollout_detail_body.html", context)
    return render(request, "upgrades/rollout_detail.html", context)
