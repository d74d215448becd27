"""Every field range of the scale-set model is refused with a clear message (SPEC 3.1, R-H-1)."""

import pytest
from django.core.exceptions import ValidationError

from fleet import services
from fleet.models import FaultProfile, Instance, ScaleSet, ScaleSetExtension
from tests import factories


def errors_of(scale_set: ScaleSet) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        scale_set.full_clean()
    return caught.value.message_dict


@pytest.fixture
def valid(db):
    region = factories.region()
    factories.publish(factories.OLD_VERSION, region)
    return ScaleSet(
        subscription_id=factories.SUBSCRIPTION,
        resource_group="rg",
        name="web",
        region=region,
        capacity=10,
        **factories.UBUNTU,
        image_version="latest",
    )


def test_a_valid_model_passes(valid):
    valid.full_clean()


@pytest.mark.parametrize(
    ("field", "low", "high", "too_low", "too_high"),
    [
        ("max_batch_instance_percent", 5, 100, 4, 101),
        ("max_unhealthy_instance_percent", 5, 100, 4, 101),
        ("max_unhealthy_upgraded_instance_percent", 0, 100, None, 101),
        ("platform_fault_domain_count", 1, 5, 0, 6),
    ],
)
def test_rolling_policy_ranges_accept_bounds_and_refuse_outside(valid, field, low, high, too_low, too_high):
    for good in (low, high):
        setattr(valid, field, good)
        valid.full_clean()
    if too_low is not None:
        setattr(valid, field, too_low)
        assert f"greater than or equal to {low}" in errors_of(valid)[field][0]
    setattr(valid, field, too_high)
    assert f"less than or equal to {high}" in errors_of(valid)[field][0]


def test_policy_defaults_are_the_arm_defaults(valid):
    assert (valid.max_batch_instance_percent, valid.max_unhealthy_instance_percent) == (20, 20)
    assert valid.max_unhealthy_upgraded_instance_percent == 20
    assert valid.pause_time_between_batches == "PT0S"
    assert not any(
        [
            valid.enable_cross_zone_upgrade,
            valid.prioritize_unhealthy_instances,
            valid.rollback_failed_instances_on_policy_breach,
            valid.max_surge,
            valid.enable_automatic_os_upgrade,
            valid.disable_automatic_rollback,
            valid.use_rolling_upgrade_policy,
            valid.os_rolling_upgrade_deferral,
        ]
    )
    assert valid.platform_fault_domain_count == 5
    assert valid.single_placement_group is True


@pytest.mark.parametrize("pause", ["PT0S", "PT30S", "PT5M", "PT1H30M", "P1DT2H"])
def test_pause_between_batches_accepts_iso8601_durations(valid, pause):
    valid.pause_time_between_batches = pause
    valid.full_clean()


@pytest.mark.parametrize("pause", ["30s", "PT", "P", "P1DT", "5 minutes", "PTXS", "-PT5S"])
def test_pause_between_batches_refuses_what_is_not_an_iso8601_duration(valid, pause):
    valid.pause_time_between_batches = pause
    message = errors_of(valid)["pause_time_between_batches"][0]
    assert "is not an ISO 8601 duration: use a form like PT0S" in message or "negative" in message


def test_single_placement_group_caps_capacity_at_100(valid):
    valid.capacity = 100
    valid.full_clean()
    valid.capacity = 101
    assert "singlePlacementGroup to false" in errors_of(valid)["capacity"][0]


def test_many_placement_groups_allow_1000_platform_instances_but_not_1001(valid):
    valid.single_placement_group = False
    valid.capacity = 1000
    valid.full_clean()
    valid.capacity = 1001
    assert "over 1000" in errors_of(valid)["capacity"][0]


def test_custom_uri_images_allow_600_instances_across_placement_groups(valid):
    valid.image_source = "custom"
    valid.custom_image_uri = "https://images.example/vhds/app.vhd"
    valid.single_placement_group = False
    valid.capacity = 600
    valid.full_clean()
    valid.capacity = 601
    assert "over 600" in errors_of(valid)["capacity"][0]


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"image_publisher": ""}, "image_publisher", "publisher, an offer and a SKU"),
        ({"image_version": ""}, "image_version", "'latest'"),
        ({"image_version": "1.x.3"}, "image_version", "not a version"),
        ({"image_source": "gallery"}, "gallery_image", "needs a gallery image"),
        ({"image_source": "custom"}, "custom_image_uri", "needs the image URI"),
        ({"zones": ["4"]}, "zones", "has no zone 4"),
        ({"zones": "1,2"}, "zones", "list of zone names"),
        ({"enable_automatic_updates": False}, "enable_automatic_updates", "Windows only"),
        ({"health_probe_protocol": "http", "health_probe_port": 80}, "health_probe_path", "request path"),
        ({"health_probe_protocol": "tcp"}, "health_probe_port", "needs a port"),
        (
            {"health_probe_protocol": "tcp", "health_probe_port": 80, "health_probe_path": "/x"},
            "health_probe_path",
            "takes no request path",
        ),
        (
            {"health_probe_protocol": "tcp", "health_probe_port": 80, "health_probe_interval_seconds": 120},
            "health_probe_interval_seconds",
            "under 2 minutes",
        ),
        ({"health_probe_protocol": "tcp", "health_probe_port": 70000}, "health_probe_port", "65535"),
        ({"upgrade_mode": "Sometimes"}, "upgrade_mode", "not a valid choice"),
    ],
)
def test_model_errors_name_the_field_and_say_what_to_do(valid, changes, field, text):
    for name, value in changes.items():
        setattr(valid, name, value)
    messages = errors_of(valid)[field]
    assert any(text in m for m in messages), messages


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"protocol": "udp", "port": 80}, "protocol must be http, https or tcp"),
        ({"protocol": "http", "port": 80}, "requestPath is required"),
        ({"protocol": "tcp", "port": 80, "requestPath": "/h"}, "requestPath is for http and https only"),
        ({"protocol": "tcp"}, "port is required for tcp"),
        ({"protocol": "http", "port": 0, "requestPath": "/h"}, "port must be a whole number from 1 to 65535"),
        ({"protocol": "http", "requestPath": "/h", "intervalInSeconds": 4}, "intervalInSeconds must be"),
        ({"protocol": "http", "requestPath": "/h", "intervalInSeconds": 61}, "intervalInSeconds must be"),
        ({"protocol": "http", "requestPath": "/h", "numberOfProbes": 0}, "numberOfProbes must be"),
        ({"protocol": "http", "requestPath": "/h", "numberOfProbes": 25}, "numberOfProbes must be"),
        ({"protocol": "http", "requestPath": "/h", "gracePeriod": 14401}, "gracePeriod must be"),
        ({"protocol": "http", "requestPath": "/h", "gracePeriod": "PT5M"}, "gracePeriod must be"),
    ],
)
def test_application_health_settings_out_of_range_are_refused_r_h_1(settings, text):
    extension = ScaleSetExtension(
        name="health",
        publisher="Microsoft.ManagedServices",
        type="ApplicationHealthLinux",
        type_handler_version="2.0",
        settings=settings,
    )
    with pytest.raises(ValidationError) as caught:
        extension.full_clean(exclude=["scale_set"])
    assert any(text in m for m in caught.value.message_dict["settings"]), caught.value.message_dict


def test_application_health_defaults_interval_5_probes_1_grace_interval_times_probes():
    from fleet.models import ApplicationHealthSettings

    parsed = ApplicationHealthSettings.from_settings({"protocol": "http", "requestPath": "/h", "numberOfProbes": 3})
    assert (parsed.interval_seconds, parsed.number_of_probes, parsed.grace_period_seconds) == (5, 3, 15)


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"type_handler_version": "two"}, "type_handler_version", "not a version"),
        ({"provision_after_extensions": ["dep"]}, "provision_after_extensions", "after itself"),
        ({"provision_after_extensions": "other"}, "provision_after_extensions", "list of extension names"),
        ({"settings": []}, "settings", "JSON object"),
        ({"protected_settings": "secret"}, "protected_settings", "JSON object"),
    ],
)
def test_extension_model_errors(changes, field, text):
    extension = ScaleSetExtension(
        **{"name": "dep", "publisher": "p", "type": "T", "type_handler_version": "1.0", **changes}
    )
    with pytest.raises(ValidationError) as caught:
        extension.full_clean(exclude=["scale_set"])
    assert any(text in m for m in caught.value.message_dict[field])


def test_two_health_sources_are_refused_and_nothing_is_written_r_h_1(db):
    with pytest.raises(ValidationError, match="at most one health source"):
        factories.scale_set(health_probe_protocol="tcp", health_probe_port=80, extensions=[factories.APP_HEALTH_HTTP])
    assert not ScaleSet.objects.exists()
    assert not Instance.objects.exists()


def test_an_invalid_set_writes_nothing(db):
    with pytest.raises(ValidationError):
        factories.scale_set(capacity=101, single_placement_group=True)
    assert not ScaleSet.objects.exists()
    assert not Instance.objects.exists()


def test_an_invalid_extension_writes_nothing(db):
    with pytest.raises(ValidationError):
        factories.scale_set(extensions=[{**factories.APP_HEALTH_HTTP, "settings": {"protocol": "udp"}}])
    assert not ScaleSet.objects.exists()


def test_a_set_on_an_image_not_published_in_its_region_is_refused(db):
    elsewhere = factories.region("westus", zones=[])
    factories.publish(factories.OLD_VERSION, factories.region("eastus"))
    with pytest.raises(ValidationError, match="No version of this image is available in westus"):
        services.scale_set_create(
            subscription_id="s",
            resource_group="rg",
            name="w",
            region=elsewhere,
            capacity=1,
            **factories.UBUNTU,
            image_version="latest",
        )


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_fault_shares_are_between_0_and_1(db, share):
    with pytest.raises(ValidationError) as caught:
        FaultProfile(target="x", never_healthy_share=share, provisioning_failure_share=share).full_clean()
    assert set(caught.value.message_dict) == {"never_healthy_share", "provisioning_failure_share"}


def test_a_region_cannot_be_its_own_geo_pair(db):
    eastus = factories.region()
    with pytest.raises(ValidationError, match="own geo pair"):
        services.region_pair(region=eastus, partner=eastus)


def test_geo_pairs_are_symmetric_and_repairing_unpairs_the_old_partner(db):
    eastus, westus, centralus = factories.region("eastus"), factories.region("westus"), factories.region("centralus")
    services.region_pair(region=eastus, partner=westus)
    assert (eastus.geo_pair, westus.geo_pair) == (westus, eastus)
    services.region_pair(region=eastus, partner=centralus)
    westus.refresh_from_db()
    assert (eastus.geo_pair, centralus.geo_pair, westus.geo_pair) == (centralus, eastus, None)
