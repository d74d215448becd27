"""Operator actions on a scale set, the history pages and a run's page.

Every action is a POST of a CSRF-protected form, for operators only (403 otherwise). It
validates, calls one service, and redirects back with a message; a refusal re-shows the
scale-set page with the bound form and the service's reason, verbatim: 400 for bad input
(ValidationError), 409 when the set's state forbids it now (OperationNotAllowed).

Actions that start a run (manual, rolling and OS upgrades; a model change in Rolling or
Automatic mode) take two steps. Posted without `confirm=1`, they answer with the plan
(upgrades.preview) and a Confirm button that posts the same fields again with confirm=1;
only then do they act. `preview=fragment` answers with the plan alone (plan.js shows it in a
dialog), `preview=whatif` with the what-if as JSON (the chart redraws from it); both take
`whatif-failure_percent` and `whatif-boot_seconds`, as does the plan page's own what-if form.
Refusals show before any plan, as the action would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms as django_forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from fleet import selectors as fleet_selectors
from fleet import services as fleet_services
from fleet.images import ImageRef
from fleet.models import ScaleSet, UpgradeMode
from fleet.roles import is_operator
from fleet.views import scale_set_or_404, scale_set_page
from upgrades import forms, preview, selectors, services
from upgrades.errors import OperationNotAllowed
from upgrades.models import Kind, RunStatus, UpgradeRun
from upgrades.whatif import Overrides

HISTORY_PAGE_SIZE = 50
EVENTS_PAGE_SIZE = 200

View = Callable[..., HttpResponse]


def operator_required(view: View) -> View:
    """Viewers read, operators act: anyone else gets 403 (login is checked before this)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_operator(request.user):
            raise PermissionDenied("Only operators can change scale sets.")
        return view(request, *args, **kwargs)

    return guarded


Previewer = Callable[[HttpRequest, ScaleSet, Any, Overrides], preview.Preview | None]
# Fields of the two-step flow itself: never re-posted as the action's own fields.
_FLOW_FIELDS = {"csrfmiddlewaretoken", "confirm", "preview", "whatif-failure_percent", "whatif-boot_seconds"}


def _action(
    name: str,
    title: str,
    make_form: Callable[[HttpRequest, ScaleSet], django_forms.Form],
    previewer: Previewer | None = None,
) -> Any:
    """Turn `do(request, scale_set, form) -> success message` into an action view. With a
    `previewer`, the action shows its plan first and acts only on confirm=1 (a previewer
    answering None means there is nothing to preview: act at once)."""

    def decorate(do: Callable[[HttpRequest, ScaleSet, Any], str]) -> View:
        @require_POST
        @operator_required
        @wraps(do)
        def view(request: HttpRequest, scale_set_id: int) -> HttpResponse:
            scale_set = scale_set_or_404(scale_set_id)
            previewing = previewer is not None and request.POST.get("confirm") != "1"
            mode = request.POST.get("preview", "page")
            # The dialog and the chart take their refusals as a fragment or JSON; the page as
            # today: the scale-set page with the bound form and a flash message.
            inline = previewing and mode in ("fragment", "whatif")
            form = make_form(request, scale_set)
            if not form.is_valid():
                text = f"{title}: nothing was done. {_form_errors_text(form)}"
                if inline:
                    return _refusal(request, mode, text, 400)
                messages.error(request, text)
                return scale_set_page(request, scale_set, bound={name: form}, status=400)
            try:
                if previewing:
                    assert previewer is not None
                    shown = _preview(request, scale_set, title, form, previewer, mode)
                    if shown is not None:
                        return shown
                done = do(request, scale_set, form)
            except OperationNotAllowed as refusal:
                if inline:
                    return _refusal(request, mode, refusal.message, 409)
                messages.error(request, refusal.message)
                return scale_set_page(request, _fresh(scale_set), bound={name: form}, status=409)
            except ValidationError as error:
                if inline:
                    return _refusal(request, mode, f"{title}: {' '.join(error.messages)}", 400)
                _errors_onto(form, error)
                messages.error(request, f"{title}: {' '.join(error.messages)}")
                return scale_set_page(request, _fresh(scale_set), bound={name: form}, status=400)
            messages.success(request, done)
            return redirect("fleet:scale-set-detail", scale_set_id=scale_set.pk)

        return view

    return decorate


def _preview(
    request: HttpRequest,
    scale_set: ScaleSet,
    title: str,
    form: django_forms.Form,
    previewer: Previewer,
    mode: str,
) -> HttpResponse | None:
    """The plan of what confirming would do, or None when there is nothing to preview.
    Refusals propagate (the caller shows them, before any plan)."""
    what_if = forms.WhatIfForm(request.POST, prefix="whatif")
    if not what_if.is_valid():
        text = f"What if: {_form_errors_text(what_if)}"
        if mode == "whatif":
            return JsonResponse({"error": text}, status=400)
        raise ValidationError(text)
    shown = previewer(request, scale_set, form, what_if.overrides())
    if shown is None:
        if mode == "whatif":  # a what-if never acts, even when there is no run to play
            return JsonResponse({"error": f"{title}: this starts no run, so there is nothing to play."}, status=400)
        return None
    if mode == "whatif":
        return JsonResponse(preview.whatif_json(shown))
    fields = [(key, value) for key in request.POST for value in request.POST.getlist(key) if key not in _FLOW_FIELDS]
    context = {
        "scale_set": scale_set,
        "preview": shown,
        "fields": fields,
        "action_url": request.path,
        "whatif_json": preview.whatif_json(shown),
        "failure_percent": _percent(shown.assumption.failure_share),
        "boot_seconds": _number(shown.assumption.boot_seconds),
        "fragment": mode == "fragment",
    }
    template = "upgrades/_plan.html" if mode == "fragment" else "upgrades/plan_page.html"
    return render(request, template, context)


def _refusal(request: HttpRequest, mode: str, text: str, status: int) -> HttpResponse:
    """A refusal for the dialog (a fragment) or the chart (JSON): shown before any plan."""
    if mode == "whatif":
        return JsonResponse({"error": text}, status=status)
    return render(request, "upgrades/_plan_refusal.html", {"message": text}, status=status)


def _percent(share: float) -> str:
    return _number(share * 100)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _fresh(scale_set: ScaleSet) -> ScaleSet:
    """A refused service may have left unsaved values on the instance (update_model sets
    them before validating): show the page from what is stored."""
    return scale_set_or_404(scale_set.pk)


def _errors_onto(form: django_forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError on the form: on the field it names when the form has
    that field, else above the form."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


def _form_errors_text(form: django_forms.Form) -> str:
    parts = []
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else None
        text = " ".join(str(e) for e in errors)
        parts.append(f"{label}: {text}" if label and field != "confirm_all_at_once" else text)
    return " ".join(parts)


def _plural(count: int, word: str, many: str = "") -> str:
    return f"{count} {word if count == 1 else many or word + 's'}"


# --- actions -----------------------------------------------------------------------------------


def _model_form(request: HttpRequest, scale_set: ScaleSet) -> django_forms.Form:
    return forms.ModelChangeForm(
        request.POST, scale_set=scale_set, choices=selectors.ModelChoices(scale_set), prefix="model"
    )


def _model_preview(
    request: HttpRequest, scale_set: ScaleSet, form: forms.ModelChangeForm, overrides: Overrides
) -> preview.Preview | None:
    return preview.model_change_preview(scale_set=scale_set, changes=form.changes(), overrides=overrides)


@_action("model", "Model change", _model_form, _model_preview)
def model_change(request: HttpRequest, scale_set: ScaleSet, form: forms.ModelChangeForm) -> str:
    """R-MODE-1 through update_model; what happens next depends on the upgrade mode."""
    run = services.update_model(scale_set=scale_set, changes=form.changes(), actor=request.user)
    saved = f"Model v{scale_set.model_version} saved."
    if run is None:
        outdated = scale_set.instances.count()
        return (
            f"{saved} Upgrade mode is Manual: nothing happens until you upgrade instances; "
            f"until then {_plural(outdated, 'instance')} show latest model applied: no."
        )
    if scale_set.upgrade_mode == UpgradeMode.AUTOMATIC:
        return f"{saved} Every instance is being upgraded at once ({run.get_kind_display().lower()} #{run.pk})."
    return f"{saved} Rolling model upgrade #{run.pk} started: {_plural(run.batch_count, 'batch', 'batches')}."


def _manual_preview(
    request: HttpRequest, scale_set: ScaleSet, form: forms.ManualUpgradeForm, overrides: Overrides
) -> preview.Preview:
    return preview.manual_preview(scale_set=scale_set, what=form.describe(), overrides=overrides, **form.target())


@_action(
    "manual",
    "Manual upgrade",
    lambda request, _: forms.ManualUpgradeForm(request.POST, prefix="manual"),
    _manual_preview,
)
def manual_upgrade(request: HttpRequest, scale_set: ScaleSet, form: forms.ManualUpgradeForm) -> str:
    run = services.manual_upgrade(scale_set=scale_set, actor=request.user, **form.target())
    return (
        f"Manual upgrade #{run.pk} started: {form.describe()}, "
        f"{_plural(run.pending_count, 'instance')} to model v{run.target_model_version}"
        + (f" ({run.skipped_count} already there or protected, skipped)." if run.skipped_count else ".")
    )


def _rolling_preview(
    request: HttpRequest, scale_set: ScaleSet, form: forms.RollingUpgradeForm, overrides: Overrides
) -> preview.Preview:
    batch_size, pause_seconds = form.choices()
    return preview.rolling_preview(
        scale_set=scale_set, batch_size=batch_size, pause_seconds=pause_seconds, overrides=overrides
    )


@_action(
    "rolling",
    "Rolling upgrade",
    lambda request, _: forms.RollingUpgradeForm(request.POST, prefix="rolling"),
    _rolling_preview,
)
def rolling_upgrade(request: HttpRequest, scale_set: ScaleSet, form: forms.RollingUpgradeForm) -> str:
    batch_size, pause_seconds = form.choices()
    run = services.rolling_upgrade(
        scale_set=scale_set, actor=request.user, batch_size=batch_size, pause_seconds=pause_seconds
    )
    return (
        f"Rolling upgrade #{run.pk} started: {_plural(run.pending_count, 'instance')} "
        f"in {_plural(run.batch_count, 'batch', 'batches')}."
    )


def _os_upgrade_preview(
    request: HttpRequest, scale_set: ScaleSet, form: django_forms.Form, overrides: Overrides
) -> preview.Preview:
    return preview.os_upgrade_preview(scale_set=scale_set, overrides=overrides)


@_action("os_upgrade", "OS upgrade", lambda request, _: django_forms.Form(request.POST), _os_upgrade_preview)
def os_upgrade_now(request: HttpRequest, scale_set: ScaleSet, form: django_forms.Form) -> str:
    run = services.os_upgrade_now(scale_set=scale_set, actor=request.user)
    target = ImageRef.from_key(run.target_image).label
    return (
        f"OS upgrade #{run.pk} started: {_plural(run.pending_count, 'instance')} to {target} "
        f"in {_plural(run.batch_count, 'batch', 'batches')}. "
        "Failed instances stay failed (no rollback when started by hand)."
    )


@_action("cancel", "Cancel", lambda request, _: django_forms.Form(request.POST))
def cancel(request: HttpRequest, scale_set: ScaleSet, form: django_forms.Form) -> str:
    run = services.run_cancel(scale_set=scale_set, actor=request.user)
    return (
        f"Cancel requested for {run.get_kind_display().lower()} #{run.pk}: "
        "no new batch starts; the batch in flight finishes."
    )


@_action("reimage", "Reimage", lambda request, _: forms.InstancesForm(request.POST, prefix="reimage"))
def reimage(request: HttpRequest, scale_set: ScaleSet, form: forms.InstancesForm) -> str:
    instances = services.reimage(
        scale_set=scale_set, instance_ids=form.cleaned_data["instance_ids"], actor=request.user
    )
    return f"Reimaging {_plural(len(instances), 'instance')} ({forms.ids_text([i.instance_id for i in instances])})."


@_action("power", "Power", lambda request, _: forms.PowerForm(request.POST, prefix="power"))
def power(request: HttpRequest, scale_set: ScaleSet, form: forms.PowerForm) -> str:
    action = form.power_action()
    instances = fleet_services.instances_power(
        scale_set=scale_set, instance_ids=form.cleaned_data["instance_ids"], action=action
    )
    verb = dict(forms.PowerForm.ACTIONS)[action.value]
    return f"{verb}: {_plural(len(instances), 'instance')} ({forms.ids_text([i.instance_id for i in instances])})."


@_action(
    "auto_os",
    "Automatic OS upgrade",
    lambda request, _: forms.AutomaticOsUpgradeForm(request.POST, prefix="auto_os"),
)
def automatic_os_upgrade(request: HttpRequest, scale_set: ScaleSet, form: forms.AutomaticOsUpgradeForm) -> str:
    """R-AUTO-1 when turning on; turning off always works and leaves a run in progress (R-AUTO-5)."""
    enabled = form.cleaned_data["enabled"]
    saved = services.automatic_os_upgrade_set(
        scale_set=scale_set, enabled=enabled, disable_automatic_rollback=form.rollback_choice(), actor=request.user
    )
    if enabled:
        rollback = " without automatic rollback" if saved.disable_automatic_rollback else ""
        return f"Automatic OS upgrade on{rollback}: new 'latest' images roll out under the rolling policy."
    running = UpgradeRun.objects.filter(
        scale_set=scale_set, kind=Kind.AUTOMATIC_OS, status=RunStatus.ROLLING_FORWARD
    ).exists()
    return "Automatic OS upgrade off: no new automatic run starts." + (
        " The automatic upgrade in progress goes on; cancel it above to stop it." if running else ""
    )


# --- history -----------------------------------------------------------------------------------


def history(request: HttpRequest) -> HttpResponse:
    """Every run of the fleet, newest first, filtered and paginated."""
    return _history_page(request, scale_set=None)


def scale_set_history(request: HttpRequest, scale_set_id: int) -> HttpResponse:
    return _history_page(request, scale_set=scale_set_or_404(scale_set_id))


def _history_page(request: HttpRequest, *, scale_set: ScaleSet | None) -> HttpResponse:
    form = forms.HistoryFilterForm(request.GET)
    context: dict[str, Any] = {"form": form, "scale_set": scale_set, "page": None, "rows": []}
    if not form.is_valid():
        return render(request, "upgrades/history.html", context, status=400)
    runs = selectors.run_history(scale_set_id=scale_set.pk if scale_set else None, **form.selector_filters())
    page = Paginator(runs, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    context.update(page=page, rows=selectors.history_rows(page.object_list))
    return render(request, "upgrades/history.html", context)


def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """A run's page: summary, policy, rollback and error, batch timeline, outcomes, events."""
    try:
        detail = selectors.run_detail(run_id)
    except UpgradeRun.DoesNotExist:
        raise Http404("No such run.") from None
    events = Paginator(selectors.run_events(detail.run), EVENTS_PAGE_SIZE).get_page(request.GET.get("events"))
    return render(
        request,
        "upgrades/run_detail.html",
        {
            "detail": detail,
            "run": detail.run,
            "scale_set": detail.run.scale_set,
            "events": events,
            "policy": _policy_rows(detail.run.policy),
            "socket_path": f"/ws/scale-sets/{detail.run.scale_set_id}/",
            "audit": fleet_selectors.audit_of_run(detail.run.pk),
        },
    )


# The policy snapshot under ARM's names where there is one (SPEC 3.1).
POLICY_LABELS = {
    "max_batch_instance_percent": ("maxBatchInstancePercent", "%"),
    "max_unhealthy_instance_percent": ("maxUnhealthyInstancePercent", "%"),
    "max_unhealthy_upgraded_instance_percent": ("maxUnhealthyUpgradedInstancePercent", "%"),
    "pause_seconds": ("pauseTimeBetweenBatches", "s"),
    "health_wait_seconds": ("health wait", "s"),
    "enable_cross_zone_upgrade": ("enableCrossZoneUpgrade", ""),
    "prioritize_unhealthy_instances": ("prioritizeUnhealthyInstances", ""),
    "rollback_failed_instances_on_policy_breach": ("rollbackFailedInstancesOnPolicyBreach", ""),
    "disable_automatic_rollback": ("disableAutomaticRollback", ""),
    "batch_size": ("batch size (chosen by the operator)", ""),
    "all_at_once": ("all instances at once", ""),
}


def _policy_rows(policy: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in policy.items():
        label, unit = POLICY_LABELS.get(key, (key, ""))
        if value is None:
            text = "—"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, float) and value.is_integer():
            text = f"{int(value)}{' ' + unit if unit else ''}"
        else:
            text = f"{value}{' ' + unit if unit else ''}"
        rows.append((label, text))
    return rows
