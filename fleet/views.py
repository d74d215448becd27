"""Pages of the fleet (login required by middleware): thin, one selector each."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse

from fleet import clock, selectors
from fleet.credentials import credential_warnings
from fleet.health import health_source_of
from fleet.models import Region, ScaleSet, UpgradeMode
from upgrades import forms as upgrade_forms
from upgrades import rollout_selectors
from upgrades import selectors as upgrade_selectors


def scale_set_list(request: HttpRequest) -> HttpResponse:
    """The fleet overview: every set's health, versions and run, and the fleet heatmap.

    GET parameters filter and sort it (q, region, mode, state, sort, dir), so a view is a
    link. `format=json` answers the page's script with rendered rows and heatmap rows: those
    matching the filters, or, with `ids=1,2,…`, exactly those sets (the live re-fetch, which
    the script filters itself). Queries are fixed whatever the number of sets.
    """
    filters = selectors.OverviewFilters.from_query(request.GET)
    ids = _ids(request.GET.get("ids"))
    if ids is not None:
        filters = selectors.OverviewFilters(sort=filters.sort, descending=filters.descending)
    rows = selectors.scale_set_rows(region=filters.region, mode=filters.mode, search=filters.search, ids=ids)
    runs = upgrade_selectors.latest_runs(row["scale_set"].pk for row in rows)
    # reverse() once per page, not twice per row: with hundreds of rows it was a tenth of the time
    set_url, run_url = reverse("fleet:scale-set-detail", args=[0]), reverse("upgrades:run-detail", args=[0])
    for row in rows:
        run = row["run"] = runs.get(row["scale_set"].pk)
        row["url"] = _url_with_id(set_url, row["scale_set"].pk)
        row["run_url"] = _url_with_id(run_url, run.pk) if run else ""
        row["heatmap"] = selectors.fleet_heatmap_row(row)
    rows = selectors.overview_select(rows, filters)
    if request.GET.get("format") == "json":
        return JsonResponse(
            {
                "rows": [
                    {
                        "id": row["scale_set"].pk,
                        # No request: a row needs no context processor, and they would query.
                        "html": render_to_string(_ROW_PARTIAL, {"row": row}).strip(),
                        "heatmap": row["heatmap"],
                    }
                    for row in rows
                ],
                "missing": sorted(set(ids) - {row["scale_set"].pk for row in rows}) if ids is not None else [],
            }
        )
    return render(
        request,
        "fleet/scale_set_list.html",
        {
            "rows": rows,
            "heatmap": {
                "states": selectors.fleet_heatmap_states(),
                "rows": [row["heatmap"] for row in rows],
                "detail_url": set_url,
            },
            "rollouts": rollout_selectors.open_rollouts(),
            "rollouts_limit": rollout_selectors.BANNER_LIMIT,
            "regions": Region.objects.order_by("name").values_list("name", flat=True),
            "modes": UpgradeMode.values,
            "run_states": selectors.RUN_STATES,
            "sort_columns": _SORT_COLUMNS,
            "filters": filters,
        },
    )


_SORT_COLUMNS = [
    ("name", "Name"),
    ("group", "Resource group"),
    ("region", "Region"),
    ("zones", "Zones"),
    ("capacity", "Capacity"),
    ("mode", "Upgrade mode"),
    ("auto", "Automatic OS upgrades"),
    ("health", "Health"),
    ("version", "Image versions"),
    ("run", "Upgrade run"),
]


def _url_with_id(url_of_zero: str, pk: int) -> str:
    return f"{url_of_zero.removesuffix('0/')}{pk}/"


_ROW_PARTIAL = "fleet/scale_set_list.html#overview-row"
_MAX_IDS = 500


def _ids(value: str | None) -> list[int] | None:
    """`ids=3,5,8` as integers (bad parts dropped, at most _MAX_IDS); None when absent."""
    if value is None:
        return None
    return [int(part) for part in value.split(",") if part.strip().isdigit()][:_MAX_IDS]


def scale_set_or_404(scale_set_id: int) -> ScaleSet:
    try:
        return selectors.scale_set_for_page(scale_set_id)
    except ScaleSet.DoesNotExist:
        raise Http404("No such scale set.") from None


AUDIT_PAGE_SIZE = 50


def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit log: who started, cancelled or changed what, newest first. Filters (set,
    user, action) are GET parameters matched as prefixes, so a view of it is a link."""
    filters = {name: request.GET.get(name, "").strip()[:64] for name in ("scale_set", "actor", "action")}
    page = Paginator(selectors.audit_entries(**filters), AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "fleet/audit_log.html", {"page": page, "filters": filters})


def scale_set_detail(request: HttpRequest, scale_set_id: int) -> HttpResponse:
    return scale_set_page(request, scale_set_or_404(scale_set_id))


def scale_set_page(
    request: HttpRequest,
    scale_set: ScaleSet,
    *,
    bound: dict[str, forms.Form] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The scale-set page: heatmap, current run, notices and (for operators) the action forms.

    Notices: credentials about to expire (R-CRED-1), instances that automatic OS upgrades skip
    until they are on the latest model (R-AUTO-4), and the rollouts that have the set
    scheduled or running. The first two come from rows already read.

    Action views re-show it with their bound form (`bound`, by name) when they refuse, so the
    operator sees why and keeps what they typed.
    """
    snapshot = selectors.heatmap_snapshot(scale_set)
    snapshot["run"] = upgrade_selectors.run_panel(scale_set.pk)
    action_forms = _action_forms(scale_set)
    action_forms.update(bound or {})
    extensions = list(scale_set.extensions.all())
    placement = _placement(snapshot)
    return render(
        request,
        "fleet/scale_set_detail.html",
        {
            "scale_set": scale_set,
            "snapshot": snapshot,
            "run": snapshot["run"],
            "placement": placement,
            "extensions": extensions,
            "credential_warnings": credential_warnings(extensions, clock.now()),
            "skipped_by_automatic_upgrades": _skipped_by_automatic_upgrades(scale_set, placement),
            "rollout_notices": rollout_selectors.scale_set_rollout_notices(
                scale_set, extensions=extensions, run=snapshot["run"]
            ),
            "health_source": health_source_of(scale_set, extensions),
            "forms": action_forms,
            "failed_form": next(iter(bound)) if bound else "",
            "audit": selectors.audit_of_scale_set(scale_set.pk),
        },
        status=status,
    )


def _skipped_by_automatic_upgrades(scale_set: ScaleSet, placement: dict[str, Any]) -> int:
    """Instances automatic OS upgrades leave alone: in Manual mode, those not on the latest
    model (R-AUTO-4)."""
    if not scale_set.enable_automatic_os_upgrade or scale_set.upgrade_mode != UpgradeMode.MANUAL:
        return 0
    return int(placement["outdated_model"])


def _action_forms(scale_set: ScaleSet) -> dict[str, forms.Form]:
    """Unbound forms; nothing is read until one is drawn (viewers never see them)."""
    return {
        "model": upgrade_forms.ModelChangeForm(
            scale_set=scale_set, choices=upgrade_selectors.ModelChoices(scale_set), prefix="model"
        ),
        "manual": upgrade_forms.ManualUpgradeForm(prefix="manual"),
        "rolling": upgrade_forms.RollingUpgradeForm(prefix="rolling"),
        "reimage": upgrade_forms.InstancesForm(prefix="reimage"),
        "power": upgrade_forms.PowerForm(prefix="power"),
        "auto_os": upgrade_forms.AutomaticOsUpgradeForm(prefix="auto_os"),
    }


def _placement(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The set's update domains, fault domains and zones, and how many instances are not on
    the latest model (R-AUTO-4), read from the heatmap cells already in hand (no query)."""
    columns = snapshot["columns"]
    at = {name: columns.index(name) for name in ("update_domain", "fault_domain", "zone", "model_applied")}
    cells = snapshot["cells"]

    def counts(column: str) -> list[tuple[Any, int]]:
        found: dict[Any, int] = {}
        for cell in cells:
            found[cell[at[column]]] = found.get(cell[at[column]], 0) + 1
        return sorted(found.items(), key=lambda item: (str(type(item[0])), item[0]))

    return {
        "update_domains": counts("update_domain"),
        "fault_domains": counts("fault_domain"),
        "zones": [(zone, n) for zone, n in counts("zone") if zone],
        "outdated_model": sum(1 for cell in cells if not cell[at["model_applied"]]),
        "instances": len(cells),
    }
