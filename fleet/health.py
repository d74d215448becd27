"""Where a scale set's health comes from, and how long its answers take (SPEC 4).

Pure: takes the set and its extensions, reads nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from fleet.models import ApplicationHealthSettings, HealthState, ScaleSet, ScaleSetExtension

DEFAULT_HEALTH_WAIT_SECONDS = 300.0  # PT5M (SPEC 3.1)


@dataclass(frozen=True)
class HealthSource:
    """How health is read: `kind` is "probe" (load balancer), "extension" (Application
    Health) or "" (none: R-H-3, running with every extension provisioned is healthy)."""

    kind: str
    protocol: str = ""
    interval_seconds: float = 0.0
    number_of_probes: int = 1
    grace_period_seconds: float = 0.0
    # Whether gracePeriod was given in the extension's settings. Without it the grace period
    # defaults to interval × probes (the time of the first verdict, R-H-2), which must not
    # shorten the PT5M health wait of an upgrade batch (SPEC 3.1: "its grace period when set").
    grace_period_set: bool = False

    @property
    def settle_seconds(self) -> float:
        """How long after boot the first verdict takes: numberOfProbes equal answers."""
        return self.interval_seconds * self.number_of_probes

    @property
    def unanswered_state(self) -> str:
        """What an endpoint that never answers 'Healthy' becomes after the grace period
        (R-H-2): Unknown for http(s), Unhealthy for tcp and load-balancer probes."""
        if self.kind == "extension" and self.protocol in ("http", "https"):
            return HealthState.UNKNOWN
        return HealthState.UNHEALTHY

    @property
    def health_wait_seconds(self) -> float:
        """How long a batch may take to become healthy (SPEC 3.1): PT5M, or the grace period."""
        if self.kind == "extension" and self.grace_period_set and self.grace_period_seconds:
            return self.grace_period_seconds
        return DEFAULT_HEALTH_WAIT_SECONDS


def health_source_of(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> HealthSource:
    """The set's one health source (R-H-1); two at once is refused by validation."""
    app_health = [e for e in extensions if e.is_application_health]
    if scale_set.has_health_probe:
        return HealthSource(
            kind="probe",
            protocol=scale_set.health_probe_protocol,
            interval_seconds=scale_set.health_probe_interval_seconds,
            number_of_probes=1,
            grace_period_seconds=scale_set.health_probe_interval_seconds,
        )
    if app_health:
        settings = ApplicationHealthSettings.from_settings(app_health[0].settings)
        return HealthSource(
            kind="extension",
            protocol=settings.protocol,
            interval_seconds=settings.interval_seconds,
            number_of_probes=settings.number_of_probes,
            grace_period_seconds=settings.grace_period_seconds,
            grace_period_set="gracePeriod" in app_health[0].settings,
        )
    return HealthSource(kind="")


def validate_health_sources(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> None:
    """R-H-1: at most one health source per set."""
    app_health = [e.name for e in extensions if e.is_application_health]
    if len(app_health) > 1:
        raise ValidationError(f"Only one Application Health extension per scale set (found {', '.join(app_health)}).")
    if app_health and scale_set.has_health_probe:
        raise ValidationError(
            "A scale set has at most one health source: remove the load-balancer health probe "
            f"or the Application Health extension {app_health[0]}."
        )
