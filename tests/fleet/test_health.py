"""fleet/health.py: where a set's health comes from and how long its answers take (SPEC 3.1, 4).

health.py is pure (no ORM reads), so these tests use unsaved model objects and no database.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from fleet.health import DEFAULT_HEALTH_WAIT_SECONDS, HealthSource, health_source_of, validate_health_sources
from fleet.models import HealthState, ScaleSet, ScaleSetExtension
from tests.factories import APP_HEALTH_HTTP, APP_HEALTH_TCP

CUSTOM_SCRIPT = {
    "name": "CustomScript",
    "publisher": "Microsoft.Azure.Extensions",
    "type": "CustomScript",
    "type_handler_version": "2.1",
    "settings": {"commandToExecute": "echo hi"},
}


def probe_set(protocol: str = "tcp", interval: int = 15) -> ScaleSet:
    return ScaleSet(
        name="web",
        health_probe_protocol=protocol,
        health_probe_port=80,
        health_probe_path="/health" if protocol == "http" else "",
        health_probe_interval_seconds=interval,
    )


def bare_set() -> ScaleSet:
    return ScaleSet(name="web")


def extension(spec: dict[str, Any], **settings: Any) -> ScaleSetExtension:
    fields = {**spec, "settings": {**spec.get("settings", {}), **settings}}
    return ScaleSetExtension(**fields)


# --- health_source_of --------------------------------------------------------------------


def test_load_balancer_probe_is_the_health_source_with_its_protocol_and_interval():
    source = health_source_of(probe_set("http", interval=20), [extension(CUSTOM_SCRIPT)])
    assert source == HealthSource(
        kind="probe", protocol="http", interval_seconds=20, number_of_probes=1, grace_period_seconds=20
    )


def test_application_health_extension_is_the_health_source_with_its_settings():
    ext = extension(APP_HEALTH_HTTP, intervalInSeconds=10, numberOfProbes=3, gracePeriod=600)
    source = health_source_of(bare_set(), [extension(CUSTOM_SCRIPT), ext])
    assert (source.kind, source.protocol) == ("extension", "http")
    assert (source.interval_seconds, source.number_of_probes, source.grace_period_seconds) == (10, 3, 600)


def test_application_health_grace_period_defaults_to_interval_times_probes_r_h_1():
    ext = extension(APP_HEALTH_TCP, intervalInSeconds=7, numberOfProbes=4)
    assert health_source_of(bare_set(), [ext]).grace_period_seconds == 28


def test_without_probe_or_application_health_extension_there_is_no_health_source_r_h_3():
    source = health_source_of(bare_set(), [extension(CUSTOM_SCRIPT)])
    assert source.kind == ""
    assert not source.kind  # the simulator tests `if not source.kind` for R-H-3


# --- settle_seconds and unanswered_state ------------------------------------------------------


def test_settle_seconds_is_number_of_probes_equal_answers_r_h_2():
    ext = extension(APP_HEALTH_HTTP, intervalInSeconds=10, numberOfProbes=3)
    assert health_source_of(bare_set(), [ext]).settle_seconds == 30


def test_probe_settles_after_one_interval():
    assert health_source_of(probe_set(interval=15), []).settle_seconds == 15


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (HealthSource(kind="extension", protocol="http"), HealthState.UNKNOWN),
        (HealthSource(kind="extension", protocol="https"), HealthState.UNKNOWN),
        (HealthSource(kind="extension", protocol="tcp"), HealthState.UNHEALTHY),
        (HealthSource(kind="probe", protocol="http"), HealthState.UNHEALTHY),
        (HealthSource(kind="probe", protocol="tcp"), HealthState.UNHEALTHY),
    ],
    ids=["extension-http", "extension-https", "extension-tcp", "probe-http", "probe-tcp"],
)
def test_endpoint_never_answering_healthy_ends_unknown_for_http_and_unhealthy_for_tcp_r_h_2(source, expected):
    assert source.unanswered_state == expected


# --- health_wait_seconds (SPEC 3.1) ------------------------------------------------------------


def test_health_wait_is_pt5m_without_a_health_source():
    assert DEFAULT_HEALTH_WAIT_SECONDS == 300
    assert health_source_of(bare_set(), []).health_wait_seconds == 300


def test_health_wait_is_pt5m_with_a_load_balancer_probe():
    assert health_source_of(probe_set(interval=15), []).health_wait_seconds == 300


def test_health_wait_is_the_application_health_grace_period_when_set():
    ext = extension(APP_HEALTH_HTTP, gracePeriod=900)
    assert health_source_of(bare_set(), [ext]).health_wait_seconds == 900


def test_health_wait_is_pt5m_with_application_health_when_grace_period_is_not_set():
    """SPEC 3.1: "PT5M by default; with the Application Health extension, its grace period
    *when set*". The extension's implicit grace period (interval × probes, 5 s here) is how
    long the first verdict takes, not how long a batch may wait for health."""
    ext = extension(APP_HEALTH_HTTP)
    assert "gracePeriod" not in ext.settings
    source = health_source_of(bare_set(), [ext])
    assert source.grace_period_seconds == 5  # still the R-H-2 verdict time
    assert source.health_wait_seconds == 300


# --- validate_health_sources (R-H-1) -----------------------------------------------------------


def test_one_health_source_is_accepted_r_h_1():
    validate_health_sources(probe_set(), [extension(CUSTOM_SCRIPT)])
    validate_health_sources(bare_set(), [extension(APP_HEALTH_HTTP), extension(CUSTOM_SCRIPT)])
    validate_health_sources(bare_set(), [])


def test_probe_and_application_health_extension_together_are_refused_r_h_1():
    with pytest.raises(ValidationError) as error:
        validate_health_sources(probe_set(), [extension(APP_HEALTH_HTTP)])
    message = " ".join(error.value.messages)
    assert "at most one health source" in message
    assert "load-balancer health probe" in message
    assert "HealthExtension" in message


def test_two_application_health_extensions_are_refused_naming_both_r_h_1():
    windows = {**APP_HEALTH_TCP, "name": "WinHealth", "type": "ApplicationHealthWindows"}
    with pytest.raises(ValidationError) as error:
        validate_health_sources(bare_set(), [extension(APP_HEALTH_HTTP), extension(windows)])
    assert error.value.messages == [
        "Only one Application Health extension per scale set (found HealthExtension, WinHealth)."
    ]
