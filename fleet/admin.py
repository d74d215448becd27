"""Admin: staff keep the reference tables (regions, supported SKUs, image catalog, galleries,
fault profiles). Scale sets and instances are read-mostly here; the actions on instances go
through the same services as the console, so open pages see them live."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from fleet import events, services
from fleet.drivers import PowerAction
from fleet.models import (
    DataDisk,
    FaultProfile,
    Gallery,
    GalleryImage,
    GalleryImageReplica,
    GalleryImageVersion,
    ImagePublication,
    Instance,
    PlatformImageVersion,
    Region,
    ScaleSet,
    ScaleSetExtension,
    SupportedOsSku,
)


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "display_name", "zones", "geo_pair"]
    search_fields = ["name", "display_name"]

    def save_model(self, request: HttpRequest, obj: Region, form: Any, change: bool) -> None:
        partner = obj.geo_pair
        obj.geo_pair = None
        obj.save()
        services.region_pair(region=obj, partner=partner)  # keeps the pair symmetric


@admin.register(SupportedOsSku)
class SupportedOsSkuAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["publisher", "offer", "sku"]
    list_filter = ["publisher"]
    search_fields = ["publisher", "offer", "sku"]


class ImagePublicationInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ImagePublication
    extra = 1


@admin.register(PlatformImageVersion)
class PlatformImageVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["publisher", "offer", "sku", "version", "published_in"]
    list_filter = ["publisher", "offer"]
    search_fields = ["publisher", "offer", "sku", "version"]
    inlines = [ImagePublicationInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PlatformImageVersion]:
        return super().get_queryset(request).prefetch_related("publications__region")

    @admin.display(description="published in")
    def published_in(self, obj: PlatformImageVersion) -> str:
        return ", ".join(sorted(p.region.name for p in obj.publications.all()))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        for scale_set_id in ScaleSet.objects.filter(
            image_publisher=form.instance.publisher, image_offer=form.instance.offer, image_sku=form.instance.sku
        ).values_list("pk", flat=True):
            events.scale_set_changed(scale_set_id)  # 'latest' may have moved


class GalleryImageInline(admin.TabularInline):  # type: ignore[type-arg]
    model = GalleryImage
    extra = 0


@admin.register(Gallery)
class GalleryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "resource_group", "region"]
    inlines = [GalleryImageInline]


class GalleryImageReplicaInline(admin.TabularInline):  # type: ignore[type-arg]
    model = GalleryImageReplica
    extra = 1


@admin.register(GalleryImageVersion)
class GalleryImageVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["image", "name", "exclude_from_latest", "published_at"]
    list_filter = ["exclude_from_latest", "image"]
    inlines = [GalleryImageReplicaInline]


@admin.register(FaultProfile)
class FaultProfileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["target", "never_healthy_share", "provisioning_failure_share", "boot_seconds"]
    search_fields = ["target"]


class ScaleSetExtensionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ScaleSetExtension
    extra = 0
    readonly_fields = (
        "name",
        "publisher",
        "type",
        "type_handler_version",
        "enable_automatic_upgrade",
        "provision_after_extensions",
    )
    fields = list(readonly_fields)
    can_delete = False


@admin.register(ScaleSet)
class ScaleSetAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: a scale set's model changes through the console and the API, which raise
    its model version and start what its upgrade mode asks for (R-MODE-1)."""

    list_display = [
        "name",
        "region",
        "capacity",
        "vm_size",
        "upgrade_mode",
        "enable_automatic_os_upgrade",
        "model_version",
    ]
    list_filter = ["region", "upgrade_mode", "os_type", "enable_automatic_os_upgrade"]
    search_fields = ["name", "resource_group"]
    list_select_related = ["region"]
    inlines = [ScaleSetExtensionInline]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class DataDiskInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DataDisk
    extra = 0
    readonly_fields = ("lun", "size_gb", "checksum")
    fields = list(readonly_fields)
    can_delete = False


def _instance_action(description: str, **change: Any) -> Any:
    def action(modeladmin: InstanceAdmin, request: HttpRequest, queryset: QuerySet[Instance]) -> None:
        by_set: dict[int, list[int]] = {}
        for scale_set_id, instance_id in queryset.values_list("scale_set_id", "instance_id"):
            by_set.setdefault(scale_set_id, []).append(instance_id)
        for scale_set in ScaleSet.objects.filter(pk__in=by_set):
            if "power" in change:
                services.instances_power(scale_set=scale_set, instance_ids=by_set[scale_set.pk], action=change["power"])
            else:
                services.instances_set_maintenance(
                    scale_set=scale_set, instance_ids=by_set[scale_set.pk], on=change["maintenance"]
                )
        modeladmin.message_user(request, f"{description}: {queryset.count()} instance(s).", messages.SUCCESS)

    action.__name__ = description.lower().replace(" ", "_").replace("-", "_")
    action.short_description = description  # type: ignore[attr-defined]
    return action


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "__str__",
        "update_domain",
        "fault_domain",
        "zone",
        "power_state",
        "provisioning_state",
        "health_state",
        "os_image",
        "model_version",
        "under_maintenance",
    ]
    list_filter = [
        "scale_set",
        "power_state",
        "health_state",
        "provisioning_state",
        "under_maintenance",
        "update_domain",
    ]
    list_select_related = ["scale_set"]
    search_fields = ["scale_set__name", "instance_id"]
    readonly_fields = [
        "scale_set",
        "instance_id",
        "placement_group",
        "update_domain",
        "fault_domain",
        "zone",
        "power_state",
        "provisioning_state",
        "health_state",
        "os_disk",
        "os_image",
        "previous_os_disk",
        "previous_os_image",
        "extension_states",
        "model_version",
        "under_maintenance",
        "last_upgrade_outcome",
        "last_error",
        "driver_due_at",
        "driver_plan",
    ]
    inlines = [DataDiskInline]
    actions = [
        _instance_action("Power off", power=PowerAction.POWER_OFF),
        _instance_action("Start", power=PowerAction.START),
        _instance_action("Restart", power=PowerAction.RESTART),
        _instance_action("Deallocate", power=PowerAction.DEALLOCATE),
        _instance_action("Begin maintenance", maintenance=True),
        _instance_action("End maintenance", maintenance=False),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Instance, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)  # only protection is editable
        events.instances_changed(obj.scale_set_id, [obj.pk])
