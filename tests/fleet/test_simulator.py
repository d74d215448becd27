"""The simulator driver (fleet/drivers/simulator.py): a digital twin in simulated time (SPEC 8).

Every test runs at TIME_SCALE 1 on a frozen clock, so a step due "45 simulated seconds after
boot started" is due exactly 45 s later and a test can stand one microsecond before it.
Default durations (simulated seconds): reimage 30, boot 45, extension 10, stop 10, deallocate 20.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
from collections.abc import Iterable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from fleet import clock, events, services
from fleet.clock import FrozenClock
from fleet.drivers import PowerAction, driver_for
from fleet.drivers import simulator as sim
from fleet.drivers.simulator import Durations, SimulatorDriver, chosen_share
from fleet.images import ImageRef
from fleet.models import (
    DataDisk,
    FaultProfile,
    HealthState,
    Instance,
    PowerState,
    ProvisioningState,
    ScaleSet,
    ScaleSetExtension,
)
from fleet.selectors import target_image
from tests import factories
from tests.factories import APP_HEALTH_HTTP, APP_HEALTH_TCP, NEW_VERSION, OLD_VERSION

pytestmark = pytest.mark.django_db

SEED = 7
REIMAGE, BOOT, EXTENSION, STOP, DEALLOCATE = 30.0, 45.0, 10.0, 10.0, 20.0
DEFAULTS = Durations(reimage=REIMAGE, boot=BOOT, extension=EXTENSION, stop=STOP, deallocate=DEALLOCATE)
ZERO = Durations(0, 0, 0, 0, 0)

MONITOR = {
    "name": "Monitoring",
    "publisher": "Microsoft.Azure.Monitor",
    "type": "AzureMonitorLinuxAgent",
    "type_handler_version": "1.0",
}
# Alphabetically first, but provisioned after Monitoring: the order is provisionAfterExtensions'.
CUSTOM_SCRIPT = {
    "name": "CustomScript",
    "publisher": "Microsoft.Azure.Extensions",
    "type": "CustomScript",
    "type_handler_version": "2.1",
    "provision_after_extensions": ["Monitoring"],
}
HEALTH_AFTER_ALL = {**APP_HEALTH_HTTP, "provision_after_extensions": ["CustomScript", "Monitoring"]}
APP_HEALTH_KEY = "Microsoft.ManagedServices.ApplicationHealthLinux@2.0"
CUSTOM_SCRIPT_KEY = "Microsoft.Azure.Extensions.CustomScript@2.1"


@pytest.fixture(autouse=True)
def exact_time(time_scale_1, frozen_clock: FrozenClock) -> FrozenClock:  # type: ignore[no-untyped-def]
    """Time scale 1, a fixed seed, default durations and a frozen clock for every test."""
    time_scale_1.SIMULATOR_SEED = SEED
    time_scale_1.SIMULATOR_DURATIONS = {}
    return frozen_clock


# --- helpers ----------------------------------------------------------------------------------


_operations = itertools.count(1)


def op() -> str:
    """A fresh operation id: every driver call in these tests is a new operation."""
    return f"test-op-{next(_operations)}"


def new_image(scale_set: ScaleSet) -> ImageRef:
    """Publish NEW_VERSION in the set's region; 'latest' now resolves to it."""
    factories.publish(NEW_VERSION, scale_set.region)
    image = target_image(scale_set)
    assert image is not None
    assert image.version == NEW_VERSION
    return image


def rows(scale_set: ScaleSet) -> list[Instance]:
    return list(Instance.objects.filter(scale_set=scale_set).order_by("instance_id"))


def one(scale_set: ScaleSet, instance_id: int = 0) -> Instance:
    return Instance.objects.get(scale_set=scale_set, instance_id=instance_id)


def state(instance: Instance) -> tuple[str, str, str]:
    instance.refresh_from_db()
    return instance.provisioning_state, instance.power_state, instance.health_state


def step(frozen_clock: FrozenClock, simulated_seconds: float) -> int:
    """Move the clock and let the beat apply whatever fell due."""
    return sim.advance(frozen_clock.advance_simulated(simulated_seconds))


def health_counts(scale_set: ScaleSet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for health in Instance.objects.filter(scale_set=scale_set).values_list("health_state", flat=True):
        counts[health] = counts.get(health, 0) + 1
    return counts


def ids_where(scale_set: ScaleSet, **filters: Any) -> set[int]:
    return set(Instance.objects.filter(scale_set=scale_set, **filters).values_list("instance_id", flat=True))


def disks(instances: Iterable[Instance]) -> list[tuple[int, int, int, str, str]]:
    return list(
        DataDisk.objects.filter(instance__in=list(instances))
        .order_by("pk")
        .values_list("pk", "instance_id", "lun", "content_seed", "checksum")
    )


def snapshot(scale_set: ScaleSet) -> list[dict[str, Any]]:
    fields = [*sim._WRITTEN, "updated_at"]
    return list(Instance.objects.filter(scale_set=scale_set).order_by("pk").values("pk", *fields))


# --- reimage (R-UPG-1, R-MAN-2) ---------------------------------------------------------------


def test_reimage_replaces_os_disk_from_target_image_and_keeps_the_previous_one_r_upg_1():
    scale_set = factories.scale_set(capacity=3)
    old_key = one(scale_set).os_image
    image = new_image(scale_set)

    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set)[:2], image, operation=op())

    for instance_id in (0, 1):
        instance = one(scale_set, instance_id)
        assert instance.os_image == image.key
        assert instance.os_disk == f"web_{instance_id}_OsDisk_2"
        assert instance.previous_os_disk == f"web_{instance_id}_OsDisk_1"
        assert instance.previous_os_image == old_key
        assert old_key.endswith(OLD_VERSION)
    untouched = one(scale_set, 2)
    assert (untouched.os_disk, untouched.os_image, untouched.previous_os_disk) == ("web_2_OsDisk_1", old_key, "")
    assert untouched.driver_plan == []


def test_second_reimage_makes_a_third_disk_and_keeps_the_second_for_rollback():
    scale_set = factories.scale_set(capacity=1)
    image = new_image(scale_set)
    driver = SimulatorDriver(scale_set, durations=ZERO)
    driver.reimage(rows(scale_set), image, operation=op())
    driver.reimage(rows(scale_set), image, operation=op())  # R-MAN-2: reimage again from the current model's image
    instance = one(scale_set)
    assert (instance.os_disk, instance.previous_os_disk) == ("web_0_OsDisk_3", "web_0_OsDisk_2")
    assert instance.os_image == instance.previous_os_image == image.key


def test_reimage_keeps_data_disk_checksums_through_reimage_and_restore_r_upg_1(frozen_clock):
    scale_set = factories.scale_set(capacity=4, data_disks=2)
    before = disks(rows(scale_set))
    assert len(before) == 8
    assert all(checksum == DataDisk.checksum_of(seed) for *_, seed, checksum in before)
    driver = SimulatorDriver(scale_set, durations=DEFAULTS)

    driver.reimage(rows(scale_set), new_image(scale_set), operation=op())
    step(frozen_clock, 600)
    assert {i.provisioning_state for i in rows(scale_set)} == {ProvisioningState.SUCCEEDED}
    assert disks(rows(scale_set)) == before

    driver.restore_previous_os_disk(rows(scale_set), operation=op())
    step(frozen_clock, 600)
    assert {i.os_disk for i in rows(scale_set)} == {f"web_{n}_OsDisk_1" for n in range(4)}
    assert disks(rows(scale_set)) == before
    assert all(checksum == DataDisk.checksum_of(seed) for *_, seed, checksum in disks(rows(scale_set)))


def test_reimage_state_sequence_without_health_source_is_healthy_as_soon_as_provisioned_r_h_3(frozen_clock):
    scale_set = factories.scale_set(capacity=2)
    instance = one(scale_set)
    instance.last_error = "an old error"
    instance.save()
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())

    assert state(instance) == (ProvisioningState.UPDATING, PowerState.STOPPING, HealthState.UNKNOWN)
    assert instance.last_error == ""
    step(frozen_clock, REIMAGE - 1)
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.STOPPING, HealthState.UNKNOWN)
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.STARTING, HealthState.UNKNOWN)
    step(frozen_clock, BOOT - 1)
    assert state(instance).count(PowerState.STARTING) == 1
    step(frozen_clock, 1)
    # Running, nothing to provision, no health source: Healthy at that very moment (R-H-3).
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)
    assert instance.driver_plan == []
    assert instance.driver_due_at is None
    assert state(one(scale_set, 1)) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_reimage_provisions_extensions_in_provision_after_extensions_order_r_upg_1(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[CUSTOM_SCRIPT, HEALTH_AFTER_ALL, MONITOR])
    instance = one(scale_set)
    assert set(instance.extension_states) == {"CustomScript", "HealthExtension", "Monitoring"}
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())

    step(frozen_clock, REIMAGE + BOOT)
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.RUNNING, HealthState.UNKNOWN)
    # The new OS disk has no extension yet; each appears once provisioned, in dependency order.
    seen = []
    for _ in range(3):
        step(frozen_clock, EXTENSION)
        instance.refresh_from_db()
        seen.append(set(instance.extension_states))  # sets: jsonb does not keep key order
    assert seen == [
        {"Monitoring"},
        {"Monitoring", "CustomScript"},
        {"Monitoring", "CustomScript", "HealthExtension"},
    ]
    assert instance.extension_states == {
        "Monitoring": {"version": "1.0", "state": "Succeeded"},
        "CustomScript": {"version": "2.1", "state": "Succeeded"},
        "HealthExtension": {"version": "2.0", "state": "Succeeded"},
    }


def test_provision_after_extensions_cycle_and_unknown_names_still_provision_each_extension_once(frozen_clock):
    monitor_after_script = {**MONITOR, "provision_after_extensions": ["CustomScript", "NotInTheModel"]}
    scale_set = factories.scale_set(capacity=1, extensions=[CUSTOM_SCRIPT, monitor_after_script])
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())
    step(frozen_clock, REIMAGE + BOOT + 2 * EXTENSION - 1)
    assert state(instance)[0] == ProvisioningState.UPDATING
    step(frozen_clock, 1)  # two extensions, ten seconds each: no more, no fewer
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)
    assert set(instance.extension_states) == {"CustomScript", "Monitoring"}


def test_reimage_with_application_health_is_initializing_then_healthy_r_h_2(frozen_clock):
    # interval 5 s × 3 probes: healthy after 15 s of equal answers.
    app_health = {**APP_HEALTH_HTTP, "settings": {**APP_HEALTH_HTTP["settings"], "numberOfProbes": 3}}
    scale_set = factories.scale_set(capacity=1, extensions=[app_health, MONITOR])
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())

    step(frozen_clock, REIMAGE + BOOT + 2 * EXTENSION - 1)
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.RUNNING, HealthState.UNKNOWN)
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.INITIALIZING)
    step(frozen_clock, 15 - 1)
    assert state(instance)[2] == HealthState.INITIALIZING
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)
    assert instance.driver_plan == []


def test_reimage_drops_extension_states_of_extensions_no_longer_in_the_model():
    scale_set = factories.scale_set(capacity=1, extensions=[MONITOR])
    Instance.objects.filter(scale_set=scale_set).update(
        extension_states={"Monitoring": {"version": "1.0", "state": "Succeeded"}, "Removed": {"version": "9.0"}}
    )
    SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), new_image(scale_set), operation=op())
    assert one(scale_set).extension_states == {"Monitoring": {"version": "1.0", "state": "Succeeded"}}


def test_restore_previous_os_disk_boots_the_old_image_again_r_rollback_1(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[MONITOR])
    old_key = one(scale_set).os_image
    driver = SimulatorDriver(scale_set, durations=DEFAULTS)
    driver.reimage(rows(scale_set), new_image(scale_set), operation=op())
    step(frozen_clock, 600)

    instance = one(scale_set)
    driver.restore_previous_os_disk([instance], operation=op())
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.STOPPING, HealthState.UNKNOWN)
    assert (instance.os_disk, instance.os_image) == ("web_0_OsDisk_1", old_key)
    assert (instance.previous_os_disk, instance.previous_os_image) == ("", "")
    step(frozen_clock, STOP)
    assert state(instance)[1] == PowerState.STARTING
    step(frozen_clock, BOOT)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)
    assert instance.extension_states == {"Monitoring": {"version": "1.0", "state": "Succeeded"}}


def test_restore_without_a_previous_os_disk_changes_nothing_but_says_why():
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).restore_previous_os_disk([instance], operation=op())
    instance.refresh_from_db()
    assert instance.last_error == "No previous OS disk to roll back to."
    assert (instance.os_disk, instance.previous_os_disk) == ("web_0_OsDisk_1", "")
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_reimage_repeated_with_the_same_operation_id_acts_once(frozen_clock):
    """base.Driver: a call repeated after a crash (same operation id) upgrades nothing twice."""
    scale_set = factories.scale_set(capacity=3)
    image = new_image(scale_set)
    driver = SimulatorDriver(scale_set, durations=DEFAULTS)
    driver.reimage(rows(scale_set)[:2], image, operation="run-1-upgrade")
    step(frozen_clock, REIMAGE)
    before = snapshot(scale_set)

    # The engine re-dispatches the same batch, plus an instance it had not sent before.
    driver.reimage(rows(scale_set), image, operation="run-1-upgrade")
    after = snapshot(scale_set)
    assert after[:2] == before[:2]  # no new disk, plan not restarted: still booting
    assert [row["os_disk"] for row in after] == ["web_0_OsDisk_2", "web_1_OsDisk_2", "web_2_OsDisk_2"]
    assert after[2]["power_state"] == PowerState.STOPPING
    assert [row["driver_operations"] for row in after] == [["run-1-upgrade"]] * 3

    driver.reimage(rows(scale_set)[:1], image, operation="run-2-upgrade")  # a new operation acts
    assert one(scale_set).os_disk == "web_0_OsDisk_3"
    assert one(scale_set).driver_operations == ["run-1-upgrade", "run-2-upgrade"]


def test_restore_repeated_with_the_same_operation_id_acts_once():
    scale_set = factories.scale_set(capacity=1)
    driver = SimulatorDriver(scale_set, durations=ZERO)
    driver.reimage(rows(scale_set), new_image(scale_set), operation="run-1-upgrade")
    driver.restore_previous_os_disk(rows(scale_set), operation="run-1-rollback")
    assert (one(scale_set).os_disk, one(scale_set).previous_os_disk) == ("web_0_OsDisk_1", "")
    driver.restore_previous_os_disk(rows(scale_set), operation="run-1-rollback")
    instance = one(scale_set)
    assert instance.last_error == ""  # not "No previous OS disk to roll back to."
    assert instance.os_disk == "web_0_OsDisk_1"


def test_an_instance_remembers_its_last_20_operation_ids():
    scale_set = factories.scale_set(capacity=1)
    image = new_image(scale_set)
    driver = SimulatorDriver(scale_set, durations=ZERO)
    for n in range(25):
        driver.reimage(rows(scale_set), image, operation=f"op-{n}")
    instance = one(scale_set)
    assert instance.driver_operations == [f"op-{n}" for n in range(5, 25)]
    assert instance.os_disk == "web_0_OsDisk_26"


def test_time_scale_compresses_every_step(settings, frozen_clock):
    settings.TIME_SCALE = 60.0
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    start = clock.now()
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())
    instance.refresh_from_db()
    assert instance.driver_due_at == start + dt.timedelta(seconds=REIMAGE / 60)
    assert [dt.datetime.fromisoformat(s["at"]) - start for s in instance.driver_plan] == [
        dt.timedelta(seconds=REIMAGE / 60),
        dt.timedelta(seconds=(REIMAGE + BOOT) / 60),
        dt.timedelta(seconds=(REIMAGE + BOOT) / 60),
        dt.timedelta(seconds=(REIMAGE + BOOT) / 60),
    ]
    frozen_clock.advance((REIMAGE + BOOT) / 60)
    sim.advance(clock.now())
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


# --- fault knobs (SPEC 8) -------------------------------------------------------------------------


def test_never_healthy_share_with_http_application_health_ends_exactly_that_many_unknown_r_h_2(frozen_clock):
    app_health = {**APP_HEALTH_HTTP, "settings": {**APP_HEALTH_HTTP["settings"], "gracePeriod": 600}}
    scale_set = factories.scale_set(capacity=20, extensions=[app_health])
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, never_healthy_share=0.3)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), image, operation=op())

    step(frozen_clock, REIMAGE + BOOT + EXTENSION)
    assert health_counts(scale_set) == {HealthState.INITIALIZING: 20}
    step(frozen_clock, 5)  # one 5 s probe: the good ones answer Healthy
    assert health_counts(scale_set) == {HealthState.HEALTHY: 14, HealthState.INITIALIZING: 6}
    step(frozen_clock, 600 - 5 - 1)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 14, HealthState.INITIALIZING: 6}
    step(frozen_clock, 1)  # the grace period ends: http answers nothing healthy -> Unknown
    assert health_counts(scale_set) == {HealthState.HEALTHY: 14, HealthState.UNKNOWN: 6}
    never = ids_where(scale_set, health_state=HealthState.UNKNOWN)
    assert {i.last_error for i in rows(scale_set) if i.instance_id in never} == {"Application never reported healthy."}
    assert ids_where(scale_set, provisioning_state=ProvisioningState.SUCCEEDED) == set(range(20))
    step(frozen_clock, 3600)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 14, HealthState.UNKNOWN: 6}  # never means never


def test_never_healthy_share_with_tcp_application_health_ends_unhealthy_r_h_2(frozen_clock):
    scale_set = factories.scale_set(capacity=20, extensions=[APP_HEALTH_TCP])
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, never_healthy_share=0.3)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, 3600)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 14, HealthState.UNHEALTHY: 6}


def test_never_healthy_share_with_load_balancer_probe_ends_unhealthy_r_h_2(frozen_clock):
    scale_set = factories.scale_set(
        capacity=20, health_probe_protocol="http", health_probe_port=80, health_probe_path="/health"
    )
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, never_healthy_share=0.3)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, REIMAGE + BOOT + 15 - 1)  # probe interval 15 s (the model default)
    assert health_counts(scale_set) == {HealthState.INITIALIZING: 20}
    step(frozen_clock, 1)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 14, HealthState.UNHEALTHY: 6}


def test_never_healthy_share_of_an_extension_version_applies_on_reimage(frozen_clock):
    scale_set = factories.scale_set(capacity=20, extensions=[APP_HEALTH_HTTP])
    FaultProfile.objects.create(target=APP_HEALTH_KEY, never_healthy_share=0.5)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), new_image(scale_set), operation=op())
    step(frozen_clock, 3600)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 10, HealthState.UNKNOWN: 10}


def test_never_healthy_share_follows_the_installed_extension_version_not_the_model(frozen_clock):
    """R-EXT-1: an extension upgrade installs a version the model may not name; the fault knob
    of the version actually installed decides, and going back to the old version heals."""
    scale_set = factories.scale_set(capacity=10, extensions=[APP_HEALTH_HTTP])
    FaultProfile.objects.create(target="Microsoft.ManagedServices.ApplicationHealthLinux@2.1", never_healthy_share=0.5)
    driver = SimulatorDriver(scale_set, durations=DEFAULTS)

    driver.install_extensions(rows(scale_set), {"HealthExtension": "2.1"})
    assert {i.provisioning_state for i in rows(scale_set)} == {ProvisioningState.UPDATING}
    step(frozen_clock, 3600)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 5, HealthState.UNKNOWN: 5}
    assert {i.extension_states["HealthExtension"]["version"] for i in rows(scale_set)} == {"2.1"}

    SimulatorDriver(scale_set, durations=DEFAULTS).install_extensions(rows(scale_set), {"HealthExtension": "2.0"})
    step(frozen_clock, 3600)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 10}


def test_never_healthy_share_has_no_effect_without_a_health_source_r_h_3(frozen_clock):
    """Without a health source nobody asks the application: running with every extension
    provisioned is healthy (R-H-3), whatever the image's never-healthy share."""
    scale_set = factories.scale_set(capacity=10)
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, never_healthy_share=0.5)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, 3600)
    assert health_counts(scale_set) == {HealthState.HEALTHY: 10}


def test_provisioning_failure_share_of_the_image_fails_provisioning_and_health(frozen_clock):
    scale_set = factories.scale_set(capacity=20)
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, provisioning_failure_share=0.25)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, REIMAGE + BOOT)

    failed = [i for i in rows(scale_set) if i.provisioning_state == ProvisioningState.FAILED]
    assert len(failed) == 5
    assert {(i.power_state, i.health_state, i.last_error) for i in failed} == {
        (PowerState.RUNNING, HealthState.UNHEALTHY, "Provisioning failed: OS provisioning")
    }
    assert health_counts(scale_set) == {HealthState.HEALTHY: 15, HealthState.UNHEALTHY: 5}
    assert all(i.driver_plan == [] for i in failed)


def test_provisioning_failure_share_of_an_extension_names_it_in_last_error(frozen_clock):
    scale_set = factories.scale_set(capacity=10, extensions=[MONITOR, CUSTOM_SCRIPT])
    FaultProfile.objects.create(target=CUSTOM_SCRIPT_KEY, provisioning_failure_share=0.4)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), new_image(scale_set), operation=op())
    step(frozen_clock, 600)

    failed = [i for i in rows(scale_set) if i.provisioning_state == ProvisioningState.FAILED]
    assert len(failed) == 4
    for instance in failed:
        assert instance.health_state == HealthState.UNHEALTHY  # R-H-3: not every extension provisioned
        assert instance.last_error == "Provisioning failed: CustomScript 2.1"
        assert instance.extension_states == {
            "Monitoring": {"version": "1.0", "state": "Succeeded"},
            "CustomScript": {"version": "2.1", "state": "Failed"},
        }
    assert health_counts(scale_set) == {HealthState.HEALTHY: 6, HealthState.UNHEALTHY: 4}


def key_vault(expires_on: str) -> dict[str, Any]:
    return {
        "name": "KeyVault",
        "publisher": "Microsoft.Azure.KeyVault",
        "type": "KeyVaultForLinux",
        "type_handler_version": "2.0",
        "protected_settings": {"credential": {"secret": "s3cret", "expiresOn": expires_on}},
    }


@pytest.mark.parametrize(
    ("expires_on", "fails"),
    [
        (lambda now: (now - dt.timedelta(days=1)).isoformat(), True),
        # still valid when the reimage starts, expired when the extension is provisioned (85 s)
        (lambda now: (now + dt.timedelta(seconds=60)).isoformat(), True),
        (lambda now: (now - dt.timedelta(days=1)).replace(tzinfo=None).isoformat(), True),  # naive: UTC
        (lambda now: (now + dt.timedelta(days=365)).isoformat(), False),
        (lambda now: "not a date", False),
    ],
    ids=["expired", "expires-during-the-reimage", "expired-naive", "valid", "unparseable"],
)
def test_an_expired_credential_in_protected_settings_fails_that_extension_r_cred_1(frozen_clock, expires_on, fails):
    expiry = expires_on(clock.now())
    scale_set = factories.scale_set(capacity=2, extensions=[key_vault(expiry), MONITOR])
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), new_image(scale_set), operation=op())
    step(frozen_clock, 600)
    for instance in rows(scale_set):
        assert instance.extension_states["Monitoring"]["state"] == "Succeeded"  # the others still run
        assert instance.extension_states["KeyVault"]["state"] == ("Failed" if fails else "Succeeded")
        if fails:
            assert (instance.provisioning_state, instance.health_state) == ("failed", HealthState.UNHEALTHY)
            assert instance.last_error == f"Provisioning failed: KeyVault 2.0 (its credential expired on {expiry})"
        else:
            assert (instance.provisioning_state, instance.health_state) == ("succeeded", HealthState.HEALTHY)


def test_a_fresh_credential_in_the_model_lets_the_next_reimage_succeed_r_cred_1(frozen_clock):
    expired = (clock.now() - dt.timedelta(days=1)).isoformat()
    scale_set = factories.scale_set(capacity=2, extensions=[key_vault(expired)])
    image = new_image(scale_set)
    SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), image, operation=op())
    assert {i.provisioning_state for i in rows(scale_set)} == {ProvisioningState.FAILED}

    fresh = (clock.now() + dt.timedelta(days=365)).isoformat()
    scale_set.extensions.update(protected_settings={"credential": {"secret": "n3w", "expiresOn": fresh}})
    SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), image, operation=op())
    assert {(i.provisioning_state, i.health_state, i.last_error) for i in rows(scale_set)} == {
        (ProvisioningState.SUCCEEDED, HealthState.HEALTHY, "")
    }


def test_installing_an_extension_with_an_expired_credential_fails_it_r_cred_1(frozen_clock):
    expired = (clock.now() - dt.timedelta(days=1)).isoformat()
    scale_set = factories.scale_set(capacity=1, extensions=[key_vault(expired)])
    SimulatorDriver(scale_set, durations=DEFAULTS).install_extensions(rows(scale_set), {"KeyVault": "2.1"})
    step(frozen_clock, EXTENSION)
    instance = one(scale_set)
    assert instance.extension_states["KeyVault"] == {"version": "2.1", "state": "Failed"}
    assert instance.last_error == f"Provisioning failed: KeyVault 2.1 (its credential expired on {expired})"


def test_boot_seconds_of_the_image_sets_when_power_becomes_running(frozen_clock):
    scale_set = factories.scale_set(capacity=1)
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, boot_seconds=120)
    start = clock.now()
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], image, operation=op())

    step(frozen_clock, REIMAGE)
    assert state(instance)[1] == PowerState.STARTING
    assert instance.driver_due_at == start + dt.timedelta(seconds=REIMAGE + 120)
    assert instance.driver_plan[0] == {
        "at": (start + dt.timedelta(seconds=150)).isoformat(),
        "set": {"power_state": "running"},
    }
    step(frozen_clock, 120 - 1)
    assert state(instance)[1] == PowerState.STARTING
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_boot_seconds_belong_to_the_image_booted_so_rollback_boots_at_the_default_speed(frozen_clock):
    scale_set = factories.scale_set(capacity=1)
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, boot_seconds=300)
    driver = SimulatorDriver(scale_set, durations=DEFAULTS)
    driver.reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, 3600)
    start = clock.now()
    driver.restore_previous_os_disk(rows(scale_set), operation=op())
    step(frozen_clock, STOP)
    instance = one(scale_set)
    assert instance.power_state == PowerState.STARTING
    assert instance.driver_due_at == start + dt.timedelta(seconds=STOP + BOOT)


# --- determinism (SPEC 8) --------------------------------------------------------------------------


class _Discard(Exception):
    """Raised to roll a savepoint back: the set, its instances and the profile vanish."""


def failing_ids_after_reimage(frozen_clock: FrozenClock, *, capacity: int = 20, share: float = 0.3) -> set[int]:
    """Create the set, reimage it onto a faulty image, record who never got healthy, and
    delete everything again (by rollback, so no cascade into other apps' tables is needed)."""
    failing: set[int] = set()
    with contextlib.suppress(_Discard), transaction.atomic():
        scale_set = factories.scale_set(capacity=capacity, extensions=[APP_HEALTH_TCP])
        image = target_image(scale_set)
        assert image is not None
        FaultProfile.objects.create(target=image.key, never_healthy_share=share)
        SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), image, operation=op())
        step(frozen_clock, 3600)
        failing = ids_where(scale_set, health_state=HealthState.UNHEALTHY)
        raise _Discard
    assert not ScaleSet.objects.exists()
    assert len(failing) == round(share * capacity)
    return failing


def test_same_seed_picks_the_same_failing_instances_in_a_recreated_identical_set(frozen_clock):
    first = failing_ids_after_reimage(frozen_clock)
    second = failing_ids_after_reimage(frozen_clock)
    assert first == second
    assert len(first) == 6


def test_a_different_seed_picks_a_different_subset(settings, frozen_clock):
    with_seed_7 = failing_ids_after_reimage(frozen_clock, capacity=100)
    settings.SIMULATOR_SEED = 8
    with_seed_8 = failing_ids_after_reimage(frozen_clock, capacity=100)
    assert len(with_seed_7) == len(with_seed_8) == 30
    assert with_seed_7 != with_seed_8


def test_the_db_pick_is_chosen_share_salted_with_seed_set_image_and_fault(frozen_clock):
    scale_set = factories.scale_set(capacity=20, extensions=[APP_HEALTH_TCP])
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, never_healthy_share=0.3)
    SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, 3600)
    salt = f"{SEED}|{scale_set.resource_id}|{image.key}|never_healthy"
    assert ids_where(scale_set, health_state=HealthState.UNHEALTHY) == chosen_share(range(20), share=0.3, salt=salt)


def test_two_sets_with_different_names_fail_different_instances(frozen_clock):
    picks = []
    for name in ("web", "api"):
        scale_set = factories.scale_set(name=name, capacity=100, extensions=[APP_HEALTH_TCP])
        image = target_image(scale_set)
        assert image is not None
        FaultProfile.objects.get_or_create(target=image.key, defaults={"never_healthy_share": 0.3})
        SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), image, operation=op())
        step(frozen_clock, 3600)
        picks.append(ids_where(scale_set, health_state=HealthState.UNHEALTHY))
    assert len(picks[0]) == len(picks[1]) == 30
    assert picks[0] != picks[1]


@pytest.mark.parametrize(
    ("share", "count", "expected"),
    [(0.3, 20, 6), (0.0, 20, 0), (1.0, 20, 20), (0.5, 1, 0), (0.6, 1, 1), (0.25, 10, 2), (0.05, 7, 0)],
)
def test_chosen_share_picks_exactly_round_share_times_count(share, count, expected):
    assert len(chosen_share(range(count), share=share, salt="s")) == expected


def test_chosen_share_ignores_duplicate_ids_and_order():
    assert chosen_share([3, 1, 2, 1, 3], share=1.0, salt="s") == {1, 2, 3}
    assert chosen_share([5, 4, 3, 2, 1], share=0.4, salt="s") == chosen_share([1, 2, 3, 4, 5], share=0.4, salt="s")


@given(
    ids=st.sets(st.integers(min_value=0, max_value=10_000), max_size=200),
    shares=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    salt=st.text(max_size=20),
)
def test_chosen_share_is_exact_deterministic_and_monotone_in_share(ids, shares, salt):
    small, large = sorted(shares)
    pick_small = chosen_share(ids, share=small, salt=salt)
    pick_large = chosen_share(ids, share=large, salt=salt)
    assert len(pick_small) == round(small * len(ids))
    assert len(pick_large) == round(large * len(ids))
    assert pick_large <= ids
    assert chosen_share(sorted(ids, reverse=True), share=large, salt=salt) == pick_large
    assert pick_small <= pick_large  # a prefix of one ranking: more share never un-picks anyone


# --- power actions and maintenance (SPEC 3.3, 8) -----------------------------------------------------


def power(scale_set: ScaleSet, action: PowerAction, *ids: int) -> None:
    services.instances_power(scale_set=scale_set, instance_ids=list(ids) or "*", action=action)


def test_driver_for_a_simulator_set_is_the_simulator_with_configured_durations(settings):
    settings.SIMULATOR_DURATIONS = {"boot": 5.0}
    driver = driver_for(factories.scale_set(capacity=1))
    assert isinstance(driver, SimulatorDriver)
    assert driver.durations == Durations(boot=5.0)


def test_power_off_goes_stopping_then_stopped(frozen_clock):
    scale_set = factories.scale_set(capacity=2)
    instance = one(scale_set)
    power(scale_set, PowerAction.POWER_OFF, 0)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.STOPPING, HealthState.UNKNOWN)
    step(frozen_clock, STOP - 1)
    assert state(instance)[1] == PowerState.STOPPING
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.STOPPED, HealthState.UNKNOWN)
    assert state(one(scale_set, 1)) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_deallocate_goes_deallocating_then_deallocated(frozen_clock):
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    power(scale_set, PowerAction.DEALLOCATE)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.DEALLOCATING, HealthState.UNKNOWN)
    step(frozen_clock, DEALLOCATE - 1)
    assert state(instance)[1] == PowerState.DEALLOCATING
    step(frozen_clock, 1)
    assert state(instance)[1] == PowerState.DEALLOCATED


@pytest.mark.parametrize("down", [PowerAction.POWER_OFF, PowerAction.DEALLOCATE])
def test_start_from_stopped_or_deallocated_goes_starting_running_healthy(frozen_clock, down):
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    power(scale_set, down)
    step(frozen_clock, 600)
    assert state(instance)[1] in (PowerState.STOPPED, PowerState.DEALLOCATED)

    power(scale_set, PowerAction.START)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.STARTING, HealthState.UNKNOWN)
    step(frozen_clock, BOOT - 1)
    assert state(instance)[1] == PowerState.STARTING
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_start_with_application_health_is_initializing_before_healthy(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[APP_HEALTH_HTTP])
    instance = one(scale_set)
    power(scale_set, PowerAction.POWER_OFF)
    step(frozen_clock, 600)
    power(scale_set, PowerAction.START)
    step(frozen_clock, BOOT)  # a plain start provisions no extension
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.INITIALIZING)
    step(frozen_clock, 5)
    assert state(instance)[2] == HealthState.HEALTHY


def test_restart_goes_stopping_starting_running_healthy(frozen_clock):
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    power(scale_set, PowerAction.RESTART)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.STOPPING, HealthState.UNKNOWN)
    step(frozen_clock, STOP)
    assert state(instance)[1] == PowerState.STARTING
    step(frozen_clock, BOOT - 1)
    assert state(instance)[1] == PowerState.STARTING
    step(frozen_clock, 1)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_start_on_a_running_instance_changes_nothing():
    scale_set = factories.scale_set(capacity=1)
    before = snapshot(scale_set)
    power(scale_set, PowerAction.START)
    assert [{**row, "updated_at": None} for row in snapshot(scale_set)] == [
        {**row, "updated_at": None} for row in before
    ]


def test_start_on_a_running_instance_still_provisioning_keeps_its_pending_plan(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[APP_HEALTH_HTTP])
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())
    step(frozen_clock, REIMAGE + BOOT)
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.RUNNING, HealthState.UNKNOWN)

    power(scale_set, PowerAction.START)  # nothing to start: the reimage must still finish
    step(frozen_clock, 600)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)


def test_maintenance_makes_a_running_instance_unhealthy_at_once_and_healthy_when_it_ends():
    scale_set = factories.scale_set(capacity=3)
    services.instances_set_maintenance(scale_set=scale_set, instance_ids=[1], on=True)
    assert state(one(scale_set, 1)) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.UNHEALTHY)
    assert one(scale_set, 1).under_maintenance
    assert health_counts(scale_set) == {HealthState.HEALTHY: 2, HealthState.UNHEALTHY: 1}

    services.instances_set_maintenance(scale_set=scale_set, instance_ids=[1], on=False)
    assert state(one(scale_set, 1)) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.HEALTHY)
    assert not one(scale_set, 1).under_maintenance


def test_maintenance_ending_on_a_never_healthy_instance_leaves_it_unanswered_r_h_2(frozen_clock):
    scale_set = factories.scale_set(capacity=10, extensions=[APP_HEALTH_HTTP])
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, never_healthy_share=0.5)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), image, operation=op())
    step(frozen_clock, 3600)
    unknown = ids_where(scale_set, health_state=HealthState.UNKNOWN)
    assert len(unknown) == 5

    services.instances_set_maintenance(scale_set=scale_set, instance_ids="*", on=True)
    assert health_counts(scale_set) == {HealthState.UNHEALTHY: 10}
    services.instances_set_maintenance(scale_set=scale_set, instance_ids="*", on=False)
    assert ids_where(scale_set, health_state=HealthState.UNKNOWN) == unknown
    assert health_counts(scale_set) == {HealthState.HEALTHY: 5, HealthState.UNKNOWN: 5}


def test_maintenance_during_a_reimage_keeps_the_instance_unhealthy_when_its_plan_says_healthy(frozen_clock):
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage([instance], new_image(scale_set), operation=op())
    step(frozen_clock, 10)
    services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    instance.refresh_from_db()
    assert instance.under_maintenance
    assert len(instance.driver_plan) == 4  # the reimage plan is untouched
    assert state(instance)[1] == PowerState.STOPPING

    step(frozen_clock, 600)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.UNHEALTHY)
    services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=False)
    assert state(instance)[2] == HealthState.HEALTHY


def test_maintenance_on_a_stopped_instance_takes_effect_when_it_starts(frozen_clock):
    scale_set = factories.scale_set(capacity=1)
    instance = one(scale_set)
    power(scale_set, PowerAction.POWER_OFF)
    step(frozen_clock, 600)
    services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.STOPPED, HealthState.UNKNOWN)
    power(scale_set, PowerAction.START)
    step(frozen_clock, 600)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.UNHEALTHY)


def test_maintenance_on_a_running_instance_mid_extension_install_is_unhealthy_at_once(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[MONITOR])
    instance = one(scale_set)
    SimulatorDriver(scale_set, durations=DEFAULTS).install_extensions([instance], {"Monitoring": "1.1"})
    assert state(instance) == (ProvisioningState.UPDATING, PowerState.RUNNING, HealthState.HEALTHY)

    services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0], on=True)
    assert state(instance)[2] == HealthState.UNHEALTHY
    step(frozen_clock, 600)
    assert state(instance) == (ProvisioningState.SUCCEEDED, PowerState.RUNNING, HealthState.UNHEALTHY)
    assert instance.extension_states == {"Monitoring": {"version": "1.1", "state": "Succeeded"}}


def test_maintenance_does_not_heal_an_instance_whose_provisioning_failed(frozen_clock):
    scale_set = factories.scale_set(capacity=4)
    image = new_image(scale_set)
    FaultProfile.objects.create(target=image.key, provisioning_failure_share=0.5)
    SimulatorDriver(scale_set, durations=ZERO).reimage(rows(scale_set), image, operation=op())
    services.instances_set_maintenance(scale_set=scale_set, instance_ids="*", on=True)
    services.instances_set_maintenance(scale_set=scale_set, instance_ids="*", on=False)
    assert ids_where(scale_set, health_state=HealthState.UNHEALTHY) == ids_where(
        scale_set, provisioning_state=ProvisioningState.FAILED
    )
    assert health_counts(scale_set) == {HealthState.HEALTHY: 2, HealthState.UNHEALTHY: 2}


def test_installing_extensions_on_a_stopped_instance_does_not_make_it_healthy_r_h_3(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[MONITOR])
    instance = one(scale_set)
    power(scale_set, PowerAction.POWER_OFF)
    step(frozen_clock, 600)
    SimulatorDriver(scale_set, durations=DEFAULTS).install_extensions([instance], {"Monitoring": "1.1"})
    step(frozen_clock, 600)
    assert state(instance)[1:] == (PowerState.STOPPED, HealthState.UNKNOWN)


def test_install_extensions_applies_versions_one_after_another_r_ext_3(frozen_clock):
    scale_set = factories.scale_set(capacity=1, extensions=[MONITOR, CUSTOM_SCRIPT])
    instance = one(scale_set)
    FaultProfile.objects.create(
        target="Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@1.1", provisioning_failure_share=1
    )
    SimulatorDriver(scale_set, durations=DEFAULTS).install_extensions(
        [instance], {"Monitoring": "1.1", "CustomScript": "2.2"}
    )
    step(frozen_clock, EXTENSION)
    assert state(instance)[0] == ProvisioningState.UPDATING
    assert instance.extension_states["Monitoring"] == {"version": "1.1", "state": "Failed"}
    assert instance.extension_states["CustomScript"] == {"version": "2.1", "state": "Succeeded"}
    step(frozen_clock, EXTENSION)
    assert state(instance) == (ProvisioningState.FAILED, PowerState.RUNNING, HealthState.UNHEALTHY)
    # one failing does not stop the others (R-EXT-3)
    assert instance.extension_states["CustomScript"] == {"version": "2.2", "state": "Succeeded"}
    assert instance.last_error == "Provisioning failed: Monitoring 1.1"


# --- bulk (query counts independent of the instance count) -------------------------------------------


def reimage_queries(name: str, capacity: int, durations: Durations = ZERO) -> tuple[int, ScaleSet]:
    """Queries of one reimage call on a fresh set with an extension and a fault profile (so
    the fault-choosing path runs too; without a health source it changes nothing, R-H-3)."""
    scale_set = factories.scale_set(name=name, capacity=capacity, extensions=[MONITOR])
    image = target_image(scale_set)
    assert image is not None
    target = ImageRef(image.source, image.name, NEW_VERSION)
    FaultProfile.objects.get_or_create(target=target.key, defaults={"never_healthy_share": 0.1})
    instances = rows(scale_set)
    with CaptureQueriesContext(connection) as queries:
        SimulatorDriver(scale_set, durations=durations).reimage(instances, target, operation=op())
    return len(queries), scale_set


def extra_update_batches(small: int, large: int, fields: list[str], batch_size: int | None = None) -> int:
    """How many more UPDATE statements bulk_update needs for `large` rows than for `small`:
    the backend's batch size (SQLite: its variable limit / fields; PostgreSQL: unlimited)
    capped by the caller's batch_size."""
    rows_ = [Instance()] * large
    batch = connection.ops.bulk_batch_size(["pk", "pk", *fields], rows_)
    batch = min(batch, batch_size) if batch_size else batch
    return math.ceil(large / batch) - math.ceil(small / batch)


def test_reimaging_200_instances_with_zero_durations_completes_at_once():
    _, scale_set = reimage_queries("big", 200)
    assert ids_where(
        scale_set,
        provisioning_state=ProvisioningState.SUCCEEDED,
        power_state=PowerState.RUNNING,
        health_state=HealthState.HEALTHY,
        os_image__endswith=NEW_VERSION,
        driver_due_at=None,
    ) == set(range(200))
    assert {tuple(i.driver_plan) for i in rows(scale_set)} == {()}
    assert {i.extension_states["Monitoring"]["state"] for i in rows(scale_set)} == {"Succeeded"}


def test_reimage_queries_do_not_grow_with_the_instance_count():
    small, _ = reimage_queries("small", 20)
    large, _ = reimage_queries("big", 200)
    # Fixed: fault profiles of the images, savepoint, SELECT … FOR UPDATE, the model's
    # extensions and their profiles, the set's instance ids (to choose faulty ones), release.
    # Only bulk_update's UPDATE may repeat, once per batch the backend needs.
    assert small <= 10
    assert large <= small + extra_update_batches(20, 200, sim._WRITTEN)


def test_advance_queries_do_not_grow_with_the_instance_count(frozen_clock):
    counts = []
    for name, capacity in (("small", 20), ("big", 200)):
        reimage_queries(name, capacity, durations=DEFAULTS)
    now = frozen_clock.advance_simulated(REIMAGE)
    for name in ("small", "big"):
        scale_set = ScaleSet.objects.get(name=name)
        with CaptureQueriesContext(connection) as queries:
            assert sim.advance(now, scale_set_ids=[scale_set.pk]) == scale_set.capacity
        counts.append(len(queries))
    assert {i.power_state for i in Instance.objects.all()} == {PowerState.STARTING}
    assert counts[0] <= 4  # savepoint, SELECT … FOR UPDATE, UPDATE, release
    assert counts[1] <= counts[0] + extra_update_batches(20, 200, sim._WRITTEN, batch_size=500)


# --- advance -------------------------------------------------------------------------------------------


def test_advance_applies_only_the_steps_that_fell_due(frozen_clock):
    scale_set = factories.scale_set(capacity=3)
    driver = SimulatorDriver(scale_set, durations=DEFAULTS)
    driver.reimage(rows(scale_set)[:1], new_image(scale_set), operation=op())
    frozen_clock.advance_simulated(REIMAGE / 2)
    driver.reimage(rows(scale_set)[1:2], new_image(scale_set), operation=op())  # started 15 s later

    assert step(frozen_clock, REIMAGE / 2 - 1) == 0
    assert [i.power_state for i in rows(scale_set)] == [PowerState.STOPPING, PowerState.STOPPING, PowerState.RUNNING]
    assert step(frozen_clock, 1) == 1
    assert [i.power_state for i in rows(scale_set)] == [PowerState.STARTING, PowerState.STOPPING, PowerState.RUNNING]
    assert len(one(scale_set, 0).driver_plan) == 3
    assert step(frozen_clock, REIMAGE / 2) == 1
    assert [i.power_state for i in rows(scale_set)] == [PowerState.STARTING, PowerState.STARTING, PowerState.RUNNING]


def test_advance_twice_at_the_same_moment_changes_nothing_the_second_time(frozen_clock):
    scale_set = factories.scale_set(capacity=5, extensions=[APP_HEALTH_HTTP])
    SimulatorDriver(scale_set, durations=DEFAULTS).reimage(rows(scale_set), new_image(scale_set), operation=op())
    now = frozen_clock.advance_simulated(REIMAGE + BOOT + EXTENSION)
    assert sim.advance(now) == 5
    after_first = snapshot(scale_set)
    assert {row["health_state"] for row in after_first} == {HealthState.INITIALIZING}
    assert sim.advance(now) == 0
    assert snapshot(scale_set) == after_first


async def _receive(channel: str) -> dict[str, Any]:
    """The next message on a channel; the timeout only matters when a test is failing."""
    layer = get_channel_layer()
    return await asyncio.wait_for(layer.receive(channel), timeout=10)


def test_advance_publishes_the_changed_cells_once_per_set_and_nothing_when_nothing_changed(
    frozen_clock, django_capture_on_commit_callbacks
):
    web = factories.scale_set(name="web", capacity=3)
    api = factories.scale_set(name="api", capacity=2)
    image = new_image(web)
    SimulatorDriver(web, durations=DEFAULTS).reimage(rows(web), image, operation=op())
    SimulatorDriver(api, durations=DEFAULTS).reimage(rows(api)[:1], image, operation=op())
    now = frozen_clock.advance_simulated(REIMAGE)
    layer = get_channel_layer()
    inbox = {}
    for scale_set in (web, api):  # listen like an open scale-set page does
        inbox[scale_set.pk] = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(events.scale_set_group(scale_set.pk), inbox[scale_set.pk])

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert sim.advance(now) == 4
    assert len(callbacks) == 2  # one message per set, with every changed cell
    web_message = async_to_sync(_receive)(inbox[web.pk])
    api_message = async_to_sync(_receive)(inbox[api.pk])
    assert web_message["type"] == api_message["type"] == "heatmap.delta"
    assert [(cell[0], cell[8]) for cell in web_message["cells"]] == [(n, PowerState.STARTING) for n in range(3)]
    assert [(cell[0], cell[8]) for cell in api_message["cells"]] == [(0, PowerState.STARTING)]

    # Publishing happens only in on-commit callbacks: none registered means nothing is sent.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert sim.advance(now) == 0
        assert sim.advance(frozen_clock.advance_simulated(BOOT - 1)) == 0
    assert callbacks == []


def test_driver_advance_only_touches_its_own_set(frozen_clock):
    web = factories.scale_set(name="web", capacity=2)
    api = factories.scale_set(name="api", capacity=2)
    image = new_image(web)
    web_driver = SimulatorDriver(web, durations=DEFAULTS)
    web_driver.reimage(rows(web), image, operation=op())
    SimulatorDriver(api, durations=DEFAULTS).reimage(rows(api), image, operation=op())
    frozen_clock.advance_simulated(REIMAGE)
    assert web_driver.advance(clock.now()) == 2
    assert {i.power_state for i in rows(web)} == {PowerState.STARTING}
    assert {i.power_state for i in rows(api)} == {PowerState.STOPPING}


def test_advance_skips_sets_run_by_another_driver_and_honours_the_limit(frozen_clock):
    web = factories.scale_set(name="web", capacity=5)
    other = factories.scale_set(name="other", capacity=2)
    image = new_image(web)
    SimulatorDriver(web, durations=DEFAULTS).reimage(rows(web), image, operation=op())
    SimulatorDriver(other, durations=DEFAULTS).reimage(rows(other), image, operation=op())
    ScaleSet.objects.filter(pk=other.pk).update(driver="real")
    now = frozen_clock.advance_simulated(REIMAGE)

    assert sim.advance(now, limit=3) == 3
    assert sorted(i.power_state for i in rows(web)) == [PowerState.STARTING] * 3 + [PowerState.STOPPING] * 2
    assert services.simulator_advance(now) == 2
    assert {i.power_state for i in rows(web)} == {PowerState.STARTING}
    assert {i.power_state for i in rows(other)} == {PowerState.STOPPING}


def test_extension_keys_are_publisher_type_at_version():
    scale_set = factories.scale_set(capacity=1, extensions=[CUSTOM_SCRIPT])
    assert ScaleSetExtension.objects.get(scale_set=scale_set).key == CUSTOM_SCRIPT_KEY


@pytest.mark.django_db
def test_a_power_off_mid_reimage_fails_that_provisioning_instead_of_leaving_it_updating(frozen_clock, time_scale_1):
    from fleet.drivers import PowerAction
    from fleet.drivers.simulator import SimulatorDriver, advance
    from fleet.selectors import target_image

    scale_set = factories.scale_set(capacity=2, zones=[])
    factories.publish(factories.NEW_VERSION, scale_set.region)
    driver = SimulatorDriver(scale_set)
    instance = scale_set.instances.get(instance_id=0)
    driver.reimage([instance], target_image(scale_set), operation="op-1")
    frozen_clock.advance_simulated(10)
    advance(clock.now())
    driver.power([scale_set.instances.get(instance_id=0)], PowerAction.POWER_OFF)
    frozen_clock.advance_simulated(3600)
    advance(clock.now())
    instance.refresh_from_db()
    assert (instance.power_state, instance.provisioning_state) == ("stopped", "failed")
    assert "interrupted" in instance.last_error
