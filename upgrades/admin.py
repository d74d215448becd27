"""Admin: rollouts and runs, read-only. The engine and the rollouts write these rows; a hand
edit would break the state machines (and the history operators rely on), so staff only look."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from upgrades.models import Rollout, RolloutStep, UpgradeBatch, UpgradeRun


def _is_staff(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff)


class ReadOnlyForStaff:
    """Every staff member may look (no model permission needed); nobody adds, changes or
    deletes here."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_staff(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RolloutStepInline(ReadOnlyForStaff, admin.TabularInline):  # type: ignore[type-arg]
    model = RolloutStep
    readonly_fields = ("phase_number", "region", "zone", "position", "status", "started_at", "ended_at", "sets")
    fields = list(readonly_fields)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RolloutStep]:
        return super().get_queryset(request).select_related("region").prefetch_related("targets__scale_set")

    @admin.display(description="phase")
    def phase_number(self, step: RolloutStep) -> int:
        return step.phase + 1  # phases read from 1, as on the rollout page and in haltReason

    @admin.display(description="sets")
    def sets(self, step: RolloutStep) -> str:
        return "; ".join(
            f"{t.scale_set.name}: {t.status}" + (f" ({t.message})" if t.message else "") for t in step.targets.all()
        )


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyForStaff, admin.ModelAdmin):  # type: ignore[type-arg]
    """Availability-first rollouts of published versions (R-AVAIL-1), with their steps."""

    list_display = ["id", "kind", "target", "status", "created_at", "halt_reason"]
    list_filter = ["kind", "status"]
    search_fields = ["target"]
    date_hierarchy = "created_at"
    inlines = [RolloutStepInline]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class UpgradeBatchInline(ReadOnlyForStaff, admin.TabularInline):  # type: ignore[type-arg]
    model = UpgradeBatch
    readonly_fields = ("index", "update_domain", "zone", "size", "status", "started_at", "upgraded_at", "ended_at")
    fields = list(readonly_fields)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UpgradeRun)
class UpgradeRunAdmin(ReadOnlyForStaff, admin.ModelAdmin):  # type: ignore[type-arg]
    """Upgrade runs and their batches (the history pages show them in full)."""

    list_display = [
        "id",
        "scale_set",
        "kind",
        "started_by",
        "status",
        "started_at",
        "ended_at",
        "successful_count",
        "failed_count",
        "rolled_back_count",
    ]
    list_filter = ["status", "kind", "started_by"]
    list_select_related = ["scale_set"]
    search_fields = ["scale_set__name", "target_image", "error_code"]
    date_hierarchy = "started_at"
    inlines = [UpgradeBatchInline]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
