"""Pages of the fleet (login required by middleware): thin, one selector each."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from fleet import selectors
from fleet.models import Region, ScaleSet, UpgradeMode


def scale_set_list(request: HttpRequest) -> HttpResponse:
    region = request.GET.get("region", "")
    mode = request.GET.get("mode", "")
    search = request.GET.get("q", "").strip()
    rows = selectors.scale_set_rows(region=region, mode=mode, search=search)
    return render(
        request,
        "fleet/scale_set_list.html",
        {
            "rows": rows,
            "regions": Region.objects.order_by("name").values_list("name", flat=True),
            "modes": UpgradeMode.values,
            "filters": {"region": region, "mode": mode, "q": search},
        },
    )


def scale_set_detail(request: HttpRequest, scale_set_id: int) -> HttpResponse:
    try:
        scale_set = selectors.scale_set_for_page(scale_set_id)
    except ScaleSet.DoesNotExist:
        raise Http404("No such scale set.") from None
    snapshot = selectors.heatmap_snapshot(scale_set)
    return render(
        request,
        "fleet/scale_set_detail.html",
        {
            "scale_set": scale_set,
            "snapshot": snapshot,
            "extensions": list(scale_set.extensions.all()),
        },
    )
