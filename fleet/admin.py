"""Admin: staff keep the reference tables (regions, supported SKUs, image catalog, galleries,
extension versions, fault profiles). Scale sets and instances are read-mostly here; the
actions on instances go through the same services as the console, so open pages see them live.

Publishing (an image version, a gallery image version, an extension version) goes through the
same services as the CLI: the add pages take what those services take, and the services write.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminSplitDateTime
from django.db.models import QuerySet
from django.http import HttpRequest

from fleet import events, services
from fleet.drivers import PowerAction
from fleet.models import (
    AuditEntry,
    DataDisk,
    ExtensionVersion,
    FaultProfile,
    Gallery,
    GalleryImage,
    GalleryImageReplica,
    GalleryImageVersion,
    ImagePublication,
    Instance,
    InstanceProcess,
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


def _published_at_field() -> forms.SplitDateTimeField:
    return forms.SplitDateTimeField(
        required=False, widget=AdminSplitDateTime, help_text="Leave empty for now.", label="Published at"
    )


class PlatformImagePublishForm(forms.ModelForm):  # type: ignore[type-arg]
    """Publish a version in regions (services.platform_image_publish): a version that exists
    already is published in the regions it is not in yet, not refused."""

    publish_in = forms.ModelMultipleChoiceField(
        queryset=Region.objects.all(), widget=forms.CheckboxSelectMultiple, label="Publish in regions"
    )
    published_at = _published_at_field()

    class Meta:
        model = PlatformImageVersion
        fields = ["publisher", "offer", "sku", "version"]

    def validate_constraints(self) -> None:
        """Publishing an existing version again (in more regions) is allowed."""


@admin.register(PlatformImageVersion)
class PlatformImageVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Adding publishes through the service; a version's page edits its publications."""

    list_display = ["publisher", "offer", "sku", "version", "published_in"]
    list_filter = ["publisher", "offer"]
    search_fields = ["publisher", "offer", "sku", "version"]
    inlines = [ImagePublicationInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PlatformImageVersion]:
        return super().get_queryset(request).prefetch_related("publications__region")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = PlatformImagePublishForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [] if obj is None else list(self.inlines)

    @admin.display(description="published in")
    def published_in(self, obj: PlatformImageVersion) -> str:
        return ", ".join(sorted(p.region.name for p in obj.publications.all()))

    def save_model(self, request: HttpRequest, obj: PlatformImageVersion, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        regions = list(form.cleaned_data["publish_in"])
        published = services.platform_image_publish(
            publisher=obj.publisher,
            offer=obj.offer,
            sku=obj.sku,
            version=obj.version,
            regions=regions,
            at=form.cleaned_data["published_at"],
        )
        obj.pk = published.pk
        obj.refresh_from_db()
        self.message_user(request, f"Published {obj} in {', '.join(r.name for r in regions)}.", messages.SUCCESS)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        for scale_set_id in ScaleSet.objects.filter(
            image_publisher=form.instance.publisher, image_offer=form.instance.offer, image_sku=form.instance.sku
        ).values_list("pk", flat=True):
            events.scale_set_changed(scale_set_id)  # 'latest' may have moved


class ExtensionVersionPublishForm(forms.ModelForm):  # type: ignore[type-arg]
    """Release an extension version (services.extension_version_publish)."""

    published_at = _published_at_field()

    class Meta:
        model = ExtensionVersion
        fields = ["publisher", "type", "version", "published_at"]


@admin.register(ExtensionVersion)
class ExtensionVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A release is a fact that rollouts are keyed on: added through the service, never edited
    (a mistaken one can be deleted)."""

    form = ExtensionVersionPublishForm
    list_display = ["publisher", "type", "version", "published_at"]
    list_filter = ["publisher", "type"]
    search_fields = ["publisher", "type", "version"]
    date_hierarchy = "published_at"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ExtensionVersion, form: Any, change: bool) -> None:
        release = services.extension_version_publish(
            publisher=obj.publisher, type=obj.type, version=obj.version, at=form.cleaned_data["published_at"]
        )
        obj.pk = release.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"Released {release.key}. Sets whose {release.publisher}.{release.type} extension has automatic "
            "upgrades on get it through an availability-first rollout.",
            messages.SUCCESS,
        )


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


class GalleryImageVersionPublishForm(forms.ModelForm):  # type: ignore[type-arg]
    """Create a version replicated to target regions (services.gallery_image_version_publish)."""

    target_regions = forms.ModelMultipleChoiceField(queryset=Region.objects.all(), widget=forms.CheckboxSelectMultiple)
    replication_seconds = forms.FloatField(
        min_value=0.0,
        initial=0.0,
        help_text="Simulated seconds until each replica completes; 0 for at once.",
    )

    class Meta:
        model = GalleryImageVersion
        fields = ["image", "name", "exclude_from_latest"]


@admin.register(GalleryImageVersion)
class GalleryImageVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Adding creates the version and its replicas through the service; a version's page
    shows and edits its replicas."""

    list_display = ["image", "name", "exclude_from_latest", "published_at", "replication"]
    list_filter = ["exclude_from_latest", "image"]
    list_select_related = ["image__gallery"]
    inlines = [GalleryImageReplicaInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[GalleryImageVersion]:
        return super().get_queryset(request).prefetch_related("replicas__region")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = GalleryImageVersionPublishForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [] if obj is None else list(self.inlines)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Instances record the version they boot from by image and name.
        return ["image", "name"] if obj is not None else []

    @admin.display(description="replication")
    def replication(self, obj: GalleryImageVersion) -> str:
        return ", ".join(sorted(f"{r.region.name}: {r.state}" for r in obj.replicas.all()))

    def save_model(self, request: HttpRequest, obj: GalleryImageVersion, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        version = services.gallery_image_version_publish(
            image=obj.image,
            name=obj.name,
            target_regions=list(form.cleaned_data["target_regions"]),
            exclude_from_latest=obj.exclude_from_latest,
            replication_seconds=form.cleaned_data["replication_seconds"],
        )
        obj.pk = version.pk
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        for scale_set_id in ScaleSet.objects.filter(gallery_image=form.instance.image_id).values_list("pk", flat=True):
            events.scale_set_changed(scale_set_id)  # 'latest' may have moved


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
        "driver",
        "enable_automatic_os_upgrade",
        "model_version",
    ]
    list_filter = ["region", "upgrade_mode", "driver", "os_type", "enable_automatic_os_upgrade"]
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


class InstanceProcessInline(admin.StackedInline):  # type: ignore[type-arg]
    """The real process behind an instance of a local-process set (SPEC 8), shown when there is
    one. Read-only: only the local-process driver starts, stops and probes it."""

    model = InstanceProcess
    extra = 0
    readonly_fields = ("pid", "port", "started_at", "last_answer", "probe_due_at")
    fields = list(readonly_fields)
    can_delete = False
    verbose_name = verbose_name_plural = "process"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
        "process_summary",
    ]
    list_filter = [
        "scale_set",
        "power_state",
        "health_state",
        "provisioning_state",
        "under_maintenance",
        "update_domain",
    ]
    # The process comes in the same query (a reverse one-to-one joins): no query per row.
    list_select_related = ["scale_set", "process"]
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
    inlines = [InstanceProcessInline, DataDiskInline]
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

    @admin.display(description="process")
    def process_summary(self, obj: Instance) -> str:
        """pid and port of a local-process instance's process as last recorded; blank for a
        simulated instance (shown as the admin's empty value). A stopped process keeps its port
        (it is started on it again)."""
        try:
            process = obj.process
        except InstanceProcess.DoesNotExist:
            return ""
        port = f"127.0.0.1:{process.port}" if process.port else "no port yet"
        return f"pid {process.pid}, {port}" if process.pid else f"not running ({port})"

    def save_model(self, request: HttpRequest, obj: Instance, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)  # only protection is editable
        events.instances_changed(obj.scale_set_id, [obj.pk])


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read only: an audit log that staff could edit would prove nothing."""

    list_display = ("at", "actor_name", "via", "action", "scale_set_name", "run_id", "summary")
    list_filter = ("via", "action")
    search_fields = ("actor_name", "scale_set_name", "summary")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
