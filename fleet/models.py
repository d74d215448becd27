"""The fleet: regions, the image catalog, galleries, scale sets and their instances (SPEC 2).

Models hold fields, constraints, `clean()` and small derived properties. Writes that must
stay consistent (creating instances, publishing, changing state) go through fleet.services.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.dateparse import parse_duration

from fleet.versions import LATEST, parse_version, version_sort_key

# --- Reference data ---------------------------------------------------------------------


class Region(models.Model):
    """An Azure region, its availability zones and its geo pair (symmetric)."""

    name = models.SlugField(max_length=40, unique=True, help_text="ARM name, e.g. eastus")
    display_name = models.CharField(max_length=80)
    zones = models.JSONField(default=list, blank=True, help_text='e.g. ["1", "2", "3"]; empty if none')
    geo_pair = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not isinstance(self.zones, list) or not all(isinstance(z, str) and z for z in self.zones):
            raise ValidationError({"zones": 'Zones must be a list of zone names, like ["1", "2"].'})
        if len(set(self.zones)) != len(self.zones):
            raise ValidationError({"zones": "A zone is listed twice."})
        if self.geo_pair_id is not None and self.geo_pair_id == self.pk:
            raise ValidationError({"geo_pair": "A region cannot be its own geo pair."})


class SupportedOsSku(models.Model):
    """A platform image SKU that automatic OS image upgrades support (R-AUTO-1)."""

    publisher = models.CharField(max_length=100)
    offer = models.CharField(max_length=100)
    sku = models.CharField(max_length=100)

    class Meta:
        ordering = ["publisher", "offer", "sku"]
        verbose_name = "supported OS SKU"
        verbose_name_plural = "supported OS SKUs (automatic OS upgrade)"
        constraints = [models.UniqueConstraint(fields=["publisher", "offer", "sku"], name="unique_supported_sku")]

    def __str__(self) -> str:
        return f"{self.publisher}/{self.offer}/{self.sku}"


class PlatformImageVersion(models.Model):
    """A version of a marketplace image (publisher/offer/sku), published region by region."""

    publisher = models.CharField(max_length=100)
    offer = models.CharField(max_length=100)
    sku = models.CharField(max_length=100)
    version = models.CharField(max_length=64)
    sort_key = models.CharField(max_length=255, editable=False, db_index=True)
    regions = models.ManyToManyField(Region, through="ImagePublication", related_name="+")

    class Meta:
        ordering = ["publisher", "offer", "sku", "sort_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["publisher", "offer", "sku", "version"], name="unique_platform_image_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.publisher}/{self.offer}/{self.sku}/{self.version}"

    def clean(self) -> None:
        if self.version == LATEST:
            raise ValidationError({"version": "'latest' is resolved, never published."})
        try:
            self.sort_key = version_sort_key(self.version)
        except ValidationError as error:
            raise ValidationError({"version": error.messages}) from None


class ImagePublication(models.Model):
    """When a platform image version became available in a region."""

    image_version = models.ForeignKey(PlatformImageVersion, on_delete=models.CASCADE, related_name="publications")
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="+")
    published_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image_version", "region"], name="unique_publication")]

    def __str__(self) -> str:
        return f"{self.image_version_id} in {self.region_id} from {self.published_at:%Y-%m-%d %H:%M}"


class ExtensionVersion(models.Model):
    """A version of a VM extension (publisher.type) released by its publisher (R-EXT-1).

    Extension versions are global: a release reaches every region, region by region, through
    an availability-first rollout (R-AVAIL-1), not by publication per region."""

    publisher = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    version = models.CharField(max_length=64)
    sort_key = models.CharField(max_length=255, editable=False, db_index=True)
    published_at = models.DateTimeField()

    class Meta:
        ordering = ["publisher", "type", "sort_key"]
        constraints = [
            models.UniqueConstraint(fields=["publisher", "type", "version"], name="unique_extension_version")
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def key(self) -> str:
        """publisher.type@version: the identity rollouts and fault profiles use."""
        return f"{self.publisher}.{self.type}@{self.version}"

    def clean(self) -> None:
        try:
            self.sort_key = version_sort_key(self.version)
        except ValidationError as error:
            raise ValidationError({"version": error.messages}) from None


class Gallery(models.Model):
    """An Azure Compute Gallery."""

    subscription_id = models.CharField(max_length=36)
    resource_group = models.CharField(max_length=90)
    name = models.CharField(max_length=80)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")

    class Meta:
        verbose_name_plural = "galleries"
        constraints = [
            models.UniqueConstraint(fields=["subscription_id", "resource_group", "name"], name="unique_gallery")
        ]

    def __str__(self) -> str:
        return self.name


class GalleryImage(models.Model):
    """An image definition in a gallery; its versions are what scale sets boot from."""

    gallery = models.ForeignKey(Gallery, on_delete=models.CASCADE, related_name="images")
    name = models.CharField(max_length=80)
    os_type = models.CharField(max_length=10, choices=[("Linux", "Linux"), ("Windows", "Windows")])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gallery", "name"], name="unique_gallery_image")]

    def __str__(self) -> str:
        return f"{self.gallery.name}/{self.name}"

    @property
    def resource_id(self) -> str:
        g = self.gallery
        return (
            f"/subscriptions/{g.subscription_id}/resourceGroups/{g.resource_group}/providers/"
            f"Microsoft.Compute/galleries/{g.name}/images/{self.name}"
        )


class GalleryImageVersion(models.Model):
    """A gallery image version; it counts for 'latest' only where replication completed."""

    image = models.ForeignKey(GalleryImage, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=64, help_text="Major.Minor.Patch")
    sort_key = models.CharField(max_length=255, editable=False, db_index=True)
    exclude_from_latest = models.BooleanField(default=False)
    published_at = models.DateTimeField()

    class Meta:
        ordering = ["image", "sort_key"]
        constraints = [models.UniqueConstraint(fields=["image", "name"], name="unique_gallery_image_version")]

    def __str__(self) -> str:
        return f"{self.image}/{self.name}"

    def clean(self) -> None:
        try:
            if len(parse_version(self.name)) != 3:
                raise ValidationError("A gallery image version is Major.Minor.Patch, like 1.0.0.")
            self.sort_key = version_sort_key(self.name)
        except ValidationError as error:
            raise ValidationError({"name": error.messages}) from None


class ReplicationState(models.TextChoices):
    REPLICATING = "Replicating"
    COMPLETED = "Completed"


class GalleryImageReplica(models.Model):
    """A target region of a gallery image version, with its replication state."""

    version = models.ForeignKey(GalleryImageVersion, on_delete=models.CASCADE, related_name="replicas")
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="+")
    state = models.CharField(max_length=16, choices=ReplicationState.choices, default=ReplicationState.REPLICATING)
    completes_at = models.DateTimeField(null=True, blank=True, help_text="When simulated replication finishes")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "region"], name="unique_replica")]

    def __str__(self) -> str:
        return f"{self.version} in {self.region_id}: {self.state}"


class FaultProfile(models.Model):
    """The simulator's fault knobs for one image version or extension version (SPEC 8).

    `target` is an image key (fleet.images.ImageRef.key) or an extension key
    (`publisher.type@version`). Without a profile, a version is healthy and boots in the
    default time.
    """

    target = models.CharField(max_length=400, unique=True)
    never_healthy_share = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share (0–1) of instances that never become healthy on this version.",
    )
    provisioning_failure_share = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share (0–1) of instances whose provisioning fails on this version.",
    )
    boot_seconds = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(3600.0)],
        help_text="Simulated boot time in seconds; empty for the default.",
    )

    def __str__(self) -> str:
        return self.target


# --- Scale sets -------------------------------------------------------------------------


class OsType(models.TextChoices):
    LINUX = "Linux"
    WINDOWS = "Windows"


class ImageSource(models.TextChoices):
    PLATFORM = "platform", "Platform image"
    GALLERY = "gallery", "Compute Gallery image"
    CUSTOM = "custom", "Custom image (URI)"


class UpgradeMode(models.TextChoices):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"
    ROLLING = "Rolling"


class ProbeProtocol(models.TextChoices):
    TCP = "tcp"
    HTTP = "http"


class DriverName(models.TextChoices):
    """What a scale set's instances are (SPEC 8): simulated, or real processes on this machine."""

    SIMULATOR = "simulator", "Simulator"
    LOCAL = "local", "Local processes"


class ServiceFabricDurability(models.TextChoices):
    BRONZE = "Bronze"
    SILVER = "Silver"
    GOLD = "Gold"


def _percent(low: int) -> list[Any]:
    return [MinValueValidator(low), MaxValueValidator(100)]


class ScaleSet(models.Model):
    """A virtual machine scale set and its whole model (SPEC 2, 3.1).

    Every change to the model goes through a service that raises `model_version` (R-MODE-1);
    an instance whose applied model version is lower is not on the latest model.
    """

    subscription_id = models.CharField(max_length=36)
    resource_group = models.CharField(max_length=90)
    name = models.CharField(max_length=64)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="scale_sets")
    zones = models.JSONField(default=list, blank=True)
    vm_size = models.CharField("VM size", max_length=64, default="Standard_D2s_v3")
    capacity = models.PositiveIntegerField(default=0)
    os_type = models.CharField(max_length=10, choices=OsType.choices, default=OsType.LINUX)
    driver = models.CharField(
        max_length=32,
        choices=DriverName.choices,
        default=DriverName.SIMULATOR,
        help_text="Simulated instances, or each instance a real process on this machine",
    )

    # imageReference: one of platform (publisher/offer/sku/version), gallery, custom URI.
    image_source = models.CharField(max_length=10, choices=ImageSource.choices, default=ImageSource.PLATFORM)
    image_publisher = models.CharField(max_length=100, blank=True)
    image_offer = models.CharField(max_length=100, blank=True)
    image_sku = models.CharField(max_length=100, blank=True)
    image_version = models.CharField(max_length=64, blank=True, default=LATEST)
    gallery_image = models.ForeignKey(GalleryImage, null=True, blank=True, on_delete=models.PROTECT)
    custom_image_uri = models.CharField(max_length=400, blank=True)

    # upgradePolicy
    upgrade_mode = models.CharField(max_length=10, choices=UpgradeMode.choices, default=UpgradeMode.MANUAL)
    max_batch_instance_percent = models.PositiveSmallIntegerField(default=20, validators=_percent(5))
    max_unhealthy_instance_percent = models.PositiveSmallIntegerField(default=20, validators=_percent(5))
    max_unhealthy_upgraded_instance_percent = models.PositiveSmallIntegerField(default=20, validators=_percent(0))
    pause_time_between_batches = models.CharField(
        max_length=32, default="PT0S", help_text="ISO 8601 duration, e.g. PT0S, PT30S, PT5M"
    )
    enable_cross_zone_upgrade = models.BooleanField(default=False)
    prioritize_unhealthy_instances = models.BooleanField(default=False)
    rollback_failed_instances_on_policy_breach = models.BooleanField(default=False)
    max_surge = models.BooleanField(default=False)
    enable_automatic_os_upgrade = models.BooleanField(default=False)
    automatic_os_upgrade_enabled_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When automatic OS upgrades were last turned on"
    )
    disable_automatic_rollback = models.BooleanField(default=False)
    use_rolling_upgrade_policy = models.BooleanField(default=False)
    os_rolling_upgrade_deferral = models.BooleanField(default=False)

    # Health source: a load-balancer probe here, or the Application Health extension (R-H-1).
    health_probe_protocol = models.CharField(max_length=8, choices=ProbeProtocol.choices, blank=True)
    health_probe_port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    health_probe_path = models.CharField(max_length=200, blank=True)
    health_probe_interval_seconds = models.PositiveIntegerField(default=15)

    # osProfile.windowsConfiguration and Service Fabric
    enable_automatic_updates = models.BooleanField(null=True, blank=True, help_text="Windows only")
    service_fabric_durability = models.CharField(max_length=8, choices=ServiceFabricDurability.choices, blank=True)
    service_fabric_stateless = models.BooleanField(default=False, help_text="Stateless node type")

    platform_fault_domain_count = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    single_placement_group = models.BooleanField(default=True)
    model_version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["subscription_id", "resource_group", "name"], name="unique_scale_set")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.Compute/virtualMachineScaleSets/{self.name}"
        )

    @property
    def has_health_probe(self) -> bool:
        return bool(self.health_probe_protocol)

    @property
    def pause_between_batches(self) -> dt.timedelta:
        return parse_iso_duration(self.pause_time_between_batches)

    @property
    def max_capacity(self) -> int:
        if self.single_placement_group:
            return 100
        return 600 if self.image_source == ImageSource.CUSTOM else 1000

    def clean(self) -> None:
        errors: dict[str, str] = {}
        try:
            parse_iso_duration(self.pause_time_between_batches)
        except ValidationError as error:
            errors["pause_time_between_batches"] = error.messages[0]
        if self.capacity > self.max_capacity:
            if self.single_placement_group:
                errors["capacity"] = (
                    f"Capacity {self.capacity} is over 100, the limit of a single placement group: "
                    "set singlePlacementGroup to false for up to 1,000 instances."
                )
            else:
                errors["capacity"] = (
                    f"Capacity {self.capacity} is over {self.max_capacity}, the limit for "
                    f"{self.get_image_source_display().lower()}s across placement groups."
                )
        errors.update(self._image_errors())
        errors.update(self._probe_errors())
        if self.zones:
            if not isinstance(self.zones, list) or not all(isinstance(z, str) for z in self.zones):
                errors["zones"] = 'Zones must be a list of zone names, like ["1", "2"].'
            elif self.region_id is not None and (unknown := set(self.zones) - set(self.region.zones)):
                errors["zones"] = (
                    f"Region {self.region.name} has no zone {', '.join(sorted(unknown))} "
                    f"(its zones: {', '.join(self.region.zones) or 'none'})."
                )
        if self.enable_automatic_updates is not None and self.os_type != OsType.WINDOWS:
            errors["enable_automatic_updates"] = "enableAutomaticUpdates applies to Windows only."
        if errors:
            raise ValidationError(errors)

    def _image_errors(self) -> dict[str, str]:
        errors = {}
        if self.image_source == ImageSource.PLATFORM:
            for field in ("image_publisher", "image_offer", "image_sku"):
                if not getattr(self, field):
                    errors[field] = "A platform image needs a publisher, an offer and a SKU."
            if self.image_version and self.image_version != LATEST:
                try:
                    parse_version(self.image_version)
                except ValidationError as error:
                    errors["image_version"] = error.messages[0]
            if not self.image_version:
                errors["image_version"] = "Give a version, or 'latest'."
        elif self.image_source == ImageSource.GALLERY and self.gallery_image_id is None:
            errors["gallery_image"] = "A gallery image source needs a gallery image."
        elif self.image_source == ImageSource.CUSTOM and not self.custom_image_uri:
            errors["custom_image_uri"] = "A custom image source needs the image URI."
        return errors

    def _probe_errors(self) -> dict[str, str]:
        if not self.health_probe_protocol:
            return {}
        errors = {}
        if self.health_probe_port is None:
            errors["health_probe_port"] = "A health probe needs a port (1–65535)."
        if self.health_probe_protocol == ProbeProtocol.HTTP and not self.health_probe_path:
            errors["health_probe_path"] = "An http health probe needs a request path, like /health."
        if self.health_probe_protocol == ProbeProtocol.TCP and self.health_probe_path:
            errors["health_probe_path"] = "A tcp health probe takes no request path."
        if not 5 <= self.health_probe_interval_seconds < 120:
            errors["health_probe_interval_seconds"] = (
                "The probe interval must be at least 5 seconds and under 2 minutes."
            )
        return errors


class ScaleSetExtension(models.Model):
    """An extension in the scale set's model (virtualMachineProfile.extensionProfile)."""

    scale_set = models.ForeignKey(ScaleSet, on_delete=models.CASCADE, related_name="extensions")
    name = models.CharField(max_length=80)
    publisher = models.CharField(max_length=100)
    type = models.CharField(max_length=100)
    type_handler_version = models.CharField(max_length=32)
    auto_upgrade_minor_version = models.BooleanField(default=True)
    enable_automatic_upgrade = models.BooleanField(default=False)
    provision_after_extensions = models.JSONField(default=list, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    protected_settings = models.JSONField(default=dict, blank=True)
    auto_upgraded_version = models.CharField(
        max_length=32,
        blank=True,
        help_text="The newer version automatic extension upgrades brought every instance to (R-EXT-1)",
    )

    class Meta:
        ordering = ["scale_set", "name"]
        constraints = [models.UniqueConstraint(fields=["scale_set", "name"], name="unique_extension")]

    def __str__(self) -> str:
        return f"{self.name} ({self.publisher}.{self.type} {self.type_handler_version})"

    @property
    def effective_version(self) -> str:
        """The version a new OS disk gets: the model's, or the newer one an automatic
        extension upgrade landed on every instance (it does not change the model, as on Azure)."""
        return self.auto_upgraded_version or self.type_handler_version

    @property
    def key(self) -> str:
        """The identity the simulator's fault profiles use: publisher.type@version."""
        return f"{self.publisher}.{self.type}@{self.effective_version}"

    @property
    def is_application_health(self) -> bool:
        return self.type in APPLICATION_HEALTH_TYPES

    @property
    def is_service_fabric(self) -> bool:
        return self.type in SERVICE_FABRIC_TYPES

    def clean(self) -> None:
        errors: dict[str, str] = {}
        try:
            parse_version(self.type_handler_version)
        except ValidationError as error:
            errors["type_handler_version"] = error.messages[0]
        if not isinstance(self.provision_after_extensions, list):
            errors["provision_after_extensions"] = "A list of extension names."
        elif self.name in self.provision_after_extensions:
            errors["provision_after_extensions"] = "An extension cannot be provisioned after itself."
        if not isinstance(self.settings, dict):
            errors["settings"] = "Settings are a JSON object."
        elif self.is_application_health:
            try:
                ApplicationHealthSettings.from_settings(self.settings)
            except ValidationError as error:
                errors["settings"] = " ".join(error.messages)
        if not isinstance(self.protected_settings, dict):
            errors["protected_settings"] = "Protected settings are a JSON object."
        if errors:
            raise ValidationError(errors)


APPLICATION_HEALTH_TYPES = {"ApplicationHealthLinux", "ApplicationHealthWindows"}
SERVICE_FABRIC_TYPES = {"ServiceFabricNode", "ServiceFabricLinuxNode"}


class ApplicationHealthSettings:
    """The Application Health extension's settings, with their ranges and defaults (R-H-1)."""

    def __init__(
        self,
        *,
        protocol: str,
        port: int | None,
        request_path: str,
        interval_seconds: int,
        number_of_probes: int,
        grace_period_seconds: int,
    ) -> None:
        self.protocol = protocol
        self.port = port
        self.request_path = request_path
        self.interval_seconds = interval_seconds
        self.number_of_probes = number_of_probes
        self.grace_period_seconds = grace_period_seconds

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ApplicationHealthSettings:
        problems = []
        protocol = settings.get("protocol")
        if protocol not in ("http", "https", "tcp"):
            problems.append(f"protocol must be http, https or tcp (got {protocol!r}).")
        port = settings.get("port")
        if port is not None and (not isinstance(port, int) or not 1 <= port <= 65535):
            problems.append(f"port must be a whole number from 1 to 65535 (got {port!r}).")
        if protocol == "tcp" and port is None:
            problems.append("port is required for tcp.")
        request_path = settings.get("requestPath", "")
        if protocol == "tcp" and request_path:
            problems.append("requestPath is for http and https only, not tcp.")
        if protocol in ("http", "https") and not request_path:
            problems.append("requestPath is required for http and https, like /health.")

        def bounded(key: str, low: int, high: int, default: int) -> int:
            value = settings.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                problems.append(f"{key} must be a whole number from {low} to {high} (got {value!r}).")
                return default
            return value

        interval = bounded("intervalInSeconds", 5, 60, 5)
        probes = bounded("numberOfProbes", 1, 24, 1)
        grace = bounded("gracePeriod", 0, 14400, interval * probes)
        if problems:
            raise ValidationError(["Application Health extension: " + p for p in problems])
        return cls(
            protocol=str(protocol),
            port=port,
            request_path=request_path,
            interval_seconds=interval,
            number_of_probes=probes,
            grace_period_seconds=grace,
        )


# --- Instances --------------------------------------------------------------------------


class PowerState(models.TextChoices):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEALLOCATING = "deallocating"
    DEALLOCATED = "deallocated"


class ProvisioningState(models.TextChoices):
    CREATING = "creating"
    UPDATING = "updating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class HealthState(models.TextChoices):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    INITIALIZING = "Initializing"
    UNKNOWN = "Unknown"


class UpgradeOutcome(models.TextChoices):
    """The outcome of the last upgrade that touched the instance (written by the engine)."""

    NONE = "", "None"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"


class Instance(models.Model):
    """One VM of a scale set: its placement, states, disks and applied model version.

    `driver_due_at`/`driver_plan` belong to the driver: the simulator keeps the state changes
    still to come (boot finished, health settled, …) there, applied when due by a beat task.
    """

    scale_set = models.ForeignKey(ScaleSet, on_delete=models.CASCADE, related_name="instances")
    instance_id = models.PositiveIntegerField()
    placement_group = models.PositiveSmallIntegerField(default=0)
    update_domain = models.PositiveSmallIntegerField()
    fault_domain = models.PositiveSmallIntegerField()
    zone = models.CharField(max_length=8, blank=True)
    power_state = models.CharField(max_length=16, choices=PowerState.choices, default=PowerState.RUNNING)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningState.choices, default=ProvisioningState.SUCCEEDED
    )
    health_state = models.CharField(max_length=16, choices=HealthState.choices, default=HealthState.HEALTHY)
    os_disk = models.CharField(max_length=64, help_text="OS disk id")
    os_image = models.CharField(max_length=400, help_text="Image key the OS disk was made from")
    previous_os_disk = models.CharField(max_length=64, blank=True, help_text="Kept for rollback")
    previous_os_image = models.CharField(max_length=400, blank=True)
    extension_states = models.JSONField(
        default=dict, blank=True, help_text='{"name": {"version": "1.0", "state": "Succeeded"}}'
    )
    model_version = models.PositiveIntegerField(default=1, help_text="Model version applied")
    protected_from_scale_set_actions = models.BooleanField(default=False)
    under_maintenance = models.BooleanField(default=False, help_text="Made unhealthy by maintenance")
    last_upgrade_outcome = models.CharField(max_length=16, choices=UpgradeOutcome.choices, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    driver_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    driver_plan = models.JSONField(default=list, blank=True)
    driver_operations = models.JSONField(
        default=list, blank=True, help_text="Recent operation ids the driver applied (acts once per id)"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scale_set", "instance_id"]
        constraints = [models.UniqueConstraint(fields=["scale_set", "instance_id"], name="unique_instance_id")]
        indexes = [models.Index(fields=["scale_set", "placement_group", "update_domain"])]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{self.scale_set.name}_{self.instance_id}"


class InstanceProcess(models.Model):
    """The real process behind an instance of a local-process set (SPEC 8), and what its
    health probes have said (R-H-2). Written by fleet.drivers.local only.

    `pid` and `started_at` say which process is the instance now; `probe` is the probe
    tracker's state between probes (fleet.drivers.local.probe.ProbeTracker), and
    `probe_due_at` when it is probed next."""

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="process")
    pid = models.PositiveIntegerField(null=True, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True, help_text="Its own port on 127.0.0.1")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When this process was started")
    probe = models.JSONField(default=dict, blank=True)
    probe_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_answer = models.CharField(max_length=200, blank=True, help_text="What the last probe heard")

    def __str__(self) -> str:
        return f"process {self.pid} of instance {self.instance_id}"


class DataDisk(models.Model):
    """A data disk of an instance. Its content must survive every upgrade and rollback;
    `checksum` is the digest of that content, written once when the disk is made."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="data_disks")
    lun = models.PositiveSmallIntegerField()
    size_gb = models.PositiveIntegerField(default=128)
    content_seed = models.CharField(max_length=300)
    checksum = models.CharField(max_length=64)

    class Meta:
        ordering = ["instance", "lun"]
        constraints = [models.UniqueConstraint(fields=["instance", "lun"], name="unique_lun")]

    def __str__(self) -> str:
        return f"lun {self.lun} of instance {self.instance_id}"

    @staticmethod
    def checksum_of(content_seed: str) -> str:
        return hashlib.sha256(content_seed.encode()).hexdigest()


# --- helpers ----------------------------------------------------------------------------


def parse_iso_duration(value: str) -> dt.timedelta:
    """An ISO 8601 duration like PT0S, PT30S, PT1H30M; refused clearly when malformed."""
    well_formed = isinstance(value, str) and value.startswith("P") and not value.endswith("T")
    parsed = parse_duration(value) if well_formed and any(c.isdigit() for c in value) else None
    if parsed is None:
        raise ValidationError(f"'{value}' is not an ISO 8601 duration: use a form like PT0S, PT30S, PT5M or PT1H.")
    if parsed < dt.timedelta(0):
        raise ValidationError(f"'{value}' is negative; a pause cannot be.")
    return parsed


# --- The audit log ------------------------------------------------------------------------


class Via(models.TextChoices):
    """The door a change came through."""

    CONSOLE = "console", "console"
    API = "api", "API"
    CLI = "cli", "command line"
    ADMIN = "admin", "admin"
    PLATFORM = "platform", "platform"


class AuditEntry(models.Model):
    """Who started, cancelled or changed what, written by fleet.audit in the transaction of the
    change itself. Names are copied, not only linked: an entry outlives the user and the scale
    set it speaks of. `run_id` names an upgrades.UpgradeRun (no foreign key: fleet does not
    depend on upgrades). Entries are never edited."""

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_name = models.CharField(max_length=150, help_text="the user's name then; 'platform' for automatic actions")
    via = models.CharField(max_length=16, choices=Via.choices)
    action = models.CharField(max_length=40, help_text="e.g. run.start, run.cancel, scale_set.update")
    scale_set = models.ForeignKey(
        ScaleSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    scale_set_name = models.CharField(max_length=64, blank=True)
    run_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["scale_set", "-at", "-id"], name="audit_newest_per_set")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"
