"""Hostile input to the validators of a scale set's model and policies (SPEC 7: "never a 500 for
bad input"; SPEC 9: "bad input answered with a clear error and no state lost").

(a) PATCH of a scale set through the API with generated bodies built from every property path
the body parser reads (api.bodies); (b) the console's model, rolling-upgrade, automatic OS
upgrade and manual-upgrade forms with generated fields. Every answer is a success or a 4xx
(the API's with an ARM error body), and a refusal changes nothing at all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api import bodies
from fleet.models import Instance, ScaleSet, ScaleSetExtension
from tests import factories
from tests.api.conftest import ApiClient, api_client_for
from tests.factories import APP_HEALTH_HTTP, NEW_VERSION, OLD_VERSION, UBUNTU
from upgrades.models import UpgradeRun

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def rolling_set() -> ScaleSet:
    """Rolling mode, the Application Health extension, a newer image published: a PATCH that
    passes can save the model and start a rolling upgrade."""
    return factories.outdated_scale_set(4, upgrade_mode="Rolling")


def set_state(scale_set: ScaleSet) -> dict[str, Any]:
    """What a PATCH or a form could write: the set's row, its extensions, its instances (their
    model version among them) and the runs."""
    return {
        "set": ScaleSet.objects.filter(pk=scale_set.pk).values().get(),
        "extensions": list(ScaleSetExtension.objects.filter(scale_set=scale_set).order_by("pk").values()),
        "instances": list(Instance.objects.filter(scale_set=scale_set).order_by("pk").values()),
        "runs": list(UpgradeRun.objects.order_by("pk").values()),
    }


@contextmanager
def each_example_from_the_same_fleet() -> Iterator[None]:
    """A savepoint an example's writes are rolled back to, whatever its outcome: every example
    starts from the same fleet, so a failure reproduces from its own input alone."""
    with transaction.atomic():
        try:
            yield
        finally:
            transaction.set_rollback(True)


# --- (a) the API's body parser ---------------------------------------------------------------------

HUGE = [-1, -(2**31), 2**31, 2**31 - 1, 2**63, 10**30, -(10**30)]
STRANGE_TEXT = ["", " ", "\x00", "null", "💥", "é" * 3, "a" * 5000, "<script>", "../../etc", "PT-5S", "1e999"]
hostile: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HUGE),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20),
    st.sampled_from(STRANGE_TEXT),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)

PROBE = "/subscriptions/s/resourceGroups/rg-test/providers/Microsoft.Network/loadBalancers/web-lb/probes"


def arm_extension(**changes: Any) -> dict[str, Any]:
    """The Application Health extension as ARM spells it, with `changes` to its properties."""
    properties = {
        "publisher": APP_HEALTH_HTTP["publisher"],
        "type": APP_HEALTH_HTTP["type"],
        "typeHandlerVersion": APP_HEALTH_HTTP["type_handler_version"],
        "settings": APP_HEALTH_HTTP["settings"],
    }
    return {"name": APP_HEALTH_HTTP["name"], "properties": {**properties, **changes}}


EXTENSION_NAMES = [APP_HEALTH_HTTP["name"], "DependencyAgent", "KeyVault", "healthextension"]


def agent_extension(name: str, after: list[str]) -> dict[str, Any]:
    """An extension that is not a health source, provisioned after `after` (R-EXT-4)."""
    properties = {
        "publisher": "Microsoft.Azure.Monitoring.DependencyAgent",
        "type": "DependencyAgentLinux",
        "typeHandlerVersion": "9.10",
        "enableAutomaticUpgrade": True,
        "provisionAfterExtensions": after,
    }
    return {"name": name, "properties": properties}


extension = st.one_of(
    st.just(arm_extension()),
    st.builds(arm_extension, typeHandlerVersion=st.sampled_from(["2.0", "1.0", "99.9", ""])),
    st.builds(arm_extension, enableAutomaticUpgrade=hostile),
    st.builds(arm_extension, settings=hostile),
    st.builds(arm_extension, provisionAfterExtensions=hostile),
    st.builds(lambda name: {**arm_extension(), "name": name}, hostile),
    st.builds(
        agent_extension,
        st.sampled_from(EXTENSION_NAMES),
        st.lists(st.sampled_from([*EXTENSION_NAMES, "Nope"]), max_size=2),
    ),
    hostile,
)
percent = st.integers(min_value=0, max_value=101)
# Plausible values per property path: what a client that means well sends.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "sku.name": st.sampled_from(["Standard_D2s_v3", "Standard_D4s_v3", "Standard_B1s", "NoSuchSize"]),
    "sku.capacity": st.integers(min_value=0, max_value=8),
    "location": st.sampled_from(["eastus", "East US", "westus"]),
    "zones": st.sampled_from([[], ["1"], ["1", "2"]]),
    "properties.upgradePolicy.mode": st.sampled_from(["Manual", "Rolling", "Automatic", "rolling", "Sideways"]),
    "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent": percent,
    "properties.upgradePolicy.rollingUpgradePolicy.maxUnhealthyInstancePercent": percent,
    "properties.upgradePolicy.rollingUpgradePolicy.maxUnhealthyUpgradedInstancePercent": percent,
    "properties.upgradePolicy.rollingUpgradePolicy.pauseTimeBetweenBatches": st.sampled_from(
        ["PT0S", "PT5S", "PT1M30S", "P1D", "PT", "5 seconds", "PT99999999999999999999S"]
    ),
    "properties.platformFaultDomainCount": st.sampled_from([1, 2, 5]),
    "properties.driver": st.sampled_from(["simulator", "Simulator", "local", "kubernetes"]),
    "properties.virtualMachineProfile.storageProfile.osDisk.osType": st.sampled_from(["Linux", "Windows", "BeOS"]),
    "properties.virtualMachineProfile.storageProfile.imageReference.publisher": st.sampled_from(
        [UBUNTU["image_publisher"], "MicrosoftWindowsServer"]
    ),
    "properties.virtualMachineProfile.storageProfile.imageReference.offer": st.sampled_from(
        [UBUNTU["image_offer"], "WindowsServer"]
    ),
    "properties.virtualMachineProfile.storageProfile.imageReference.sku": st.sampled_from(
        [UBUNTU["image_sku"], "22.04-LTS"]
    ),
    "properties.virtualMachineProfile.storageProfile.imageReference.version": st.sampled_from(
        [OLD_VERSION, NEW_VERSION, "latest", "LATEST", "1.2.3"]
    ),
    "properties.virtualMachineProfile.storageProfile.imageReference.id": st.sampled_from(
        [
            "https://images.example/a.vhd",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i/versions/1.0.0",
            "not a uri",
        ]
    ),
    "properties.virtualMachineProfile.networkProfile.healthProbe.id": st.sampled_from(
        [f"{PROBE}/tcp-80", f"{PROBE}/http-8080", f"{PROBE}/https-0", f"{PROBE}/tcp-99999", "probe"]
    ),
    "properties.virtualMachineProfile.extensionProfile.extensions": st.lists(extension, max_size=3),
    "properties.provisionAfterExtensions": st.lists(st.sampled_from([*EXTENSION_NAMES, "Nope"]), max_size=3),
}
# Every path the parser reads (api.bodies fills FIELD_PATHS), each with a plausible strategy
# (a bool property: true/false) or a hostile one.
PATHS = sorted(set(bodies.FIELD_PATHS.values()))
# The objects on the way, replaced whole by something that is not an object.
CONTAINERS = [
    "sku",
    "properties",
    "properties.upgradePolicy",
    "properties.upgradePolicy.rollingUpgradePolicy",
    "properties.upgradePolicy.automaticOSUpgradePolicy",
    "properties.virtualMachineProfile",
    "properties.virtualMachineProfile.storageProfile",
    "properties.virtualMachineProfile.storageProfile.imageReference",
    "properties.virtualMachineProfile.networkProfile.healthProbe",
    "properties.virtualMachineProfile.extensionProfile",
]


def test_the_fuzz_covers_every_path_the_parser_reads() -> None:
    """A property the parser learns to read needs a plausible strategy here (bools have one)."""
    flags = {".".join(path) for path, _, kind in bodies.PLAIN if kind is bool}
    assert len(PATHS) >= 25
    assert set(PATHS) == set(PLAUSIBLE) | flags


def plausible(path: str) -> st.SearchStrategy[Any]:
    return PLAUSIBLE.get(path, st.booleans())


def _put(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return  # a container replaced by a hostile value: the deeper property cannot sit there
    node[leaf] = value


@st.composite
def patch_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(PATHS), unique=True, min_size=1, max_size=5)):
        _put(body, path, draw(st.one_of(plausible(path), plausible(path), plausible(path), hostile)))
    for path in draw(st.lists(st.sampled_from(CONTAINERS), unique=True, max_size=1)):
        _put(body, path, draw(hostile))
    return body


def assert_arm_error(response: Any) -> None:
    payload = json.loads(response.content)
    error = payload["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["code"]
    assert error["message"]


@pytest.fixture
def operator_api(db: None) -> ApiClient:
    return api_client_for("operators")


@pytest.fixture
def set_path(rolling_set: ScaleSet) -> str:
    return (
        f"/subscriptions/{rolling_set.subscription_id}/resourceGroups/{rolling_set.resource_group}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{rolling_set.name}"
    )


def patch_answers(operator_api: ApiClient, path: str, scale_set: ScaleSet, body: Any) -> None:
    with each_example_from_the_same_fleet():
        before = set_state(scale_set)
        response = operator_api.patch(path, body)
        status = response.status_code
        event(f"status {status}")
        assert status in (200, 202) or 400 <= status < 500, (status, response.content[:500])
        if status >= 400:
            assert_arm_error(response)
            assert set_state(scale_set) == before, f"a {status} changed the set"


@FUZZ
@given(body=patch_bodies())
def test_r_mode_1_any_patch_body_is_applied_or_refused_whole(
    operator_api: ApiClient, set_path: str, rolling_set: ScaleSet, body: dict[str, Any]
) -> None:
    patch_answers(operator_api, set_path, rolling_set, body)


@settings(FUZZ, max_examples=15)
@given(body=hostile)
def test_a_patch_body_of_any_json_value_is_answered_whole(
    operator_api: ApiClient, set_path: str, rolling_set: ScaleSet, body: Any
) -> None:
    patch_answers(operator_api, set_path, rolling_set, body)


# --- (b) the console's forms -------------------------------------------------------------------------

form_text = st.one_of(
    st.sampled_from(
        ["", "0", "-1", "1001", "86401", "99999999999999999999", "1e309", "nan", "inf", "-inf", "0.5"]
        + ["true", "3-0", "0-999999", "\x00", "ftp://x", "a" * 5000, "fragment", "whatif", "Standard D4"]
    ),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20),
)


def _one_of(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


# The fields each action's form reads (with their prefixes), each with what an operator types.
FORM_FIELDS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "upgrades:model-change": {
        "model-image_sku": _one_of(UBUNTU["image_sku"], "22.04-LTS"),
        "model-image_version": _one_of("latest", OLD_VERSION, NEW_VERSION),
        "model-custom_image_uri": _one_of("https://images.example/b.vhd", "/subscriptions/s/images/i"),
        "model-vm_size": _one_of("Standard_D2s_v3", "Standard_D4s_v3"),
        "model-confirm_all_at_once": _one_of("on"),
    },
    "upgrades:rolling-upgrade": {
        "rolling-batch_size": _one_of("", "1", "2", "1000"),
        "rolling-pause_seconds": _one_of("", "0", "5", "86400"),
    },
    "upgrades:automatic-os-upgrade": {
        "auto_os-enabled": _one_of("on", "off"),
        "auto_os-disable_automatic_rollback": _one_of("", "on"),
    },
    "upgrades:manual-upgrade": {
        "manual-scope": _one_of("update_domain", "fault_domain", "zone", "instance_ids"),
        "manual-update_domain": _one_of("0", "1", "4"),
        "manual-fault_domain": _one_of("0", "2"),
        "manual-zone": _one_of("", "1"),
        "manual-instance_ids": _one_of("*", "0", "0-2", "1, 3"),
    },
}
# The two-step flow's own fields (upgrades.views): confirm acts, preview picks the plan's form.
FLOW_FIELDS: dict[str, st.SearchStrategy[str]] = {
    "confirm": _one_of("1"),
    "preview": _one_of("page", "fragment", "whatif"),
    "whatif-failure_percent": _one_of("0", "50", "100"),
    "whatif-boot_seconds": _one_of("0", "60", "3600"),
}


@st.composite
def form_posts(draw: st.DrawFn, action: str) -> dict[str, str]:
    """Every field typed as an operator would or left out, then up to two of them hostile."""
    fields = FORM_FIELDS[action] | FLOW_FIELDS
    posted = {}
    for name, typed in fields.items():
        value = draw(st.one_of(typed, typed, typed, typed, st.none()))
        if value is not None:
            posted[name] = value
    for name in draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=2)):
        posted[name] = draw(form_text)
    return posted


@pytest.fixture
def console_sets() -> list[ScaleSet]:
    """A set per way the forms differ: platform image in Rolling mode, Automatic mode (the
    confirmation box), and a custom image in Manual mode."""
    rolling = factories.outdated_scale_set(4, upgrade_mode="Rolling")
    automatic = factories.scale_set("auto", 3, zones=[], upgrade_mode="Automatic")
    custom = factories.scale_set(
        "custom", 2, zones=[], image_source="custom", custom_image_uri="https://images.example/a.vhd"
    )
    return [rolling, automatic, custom]


@pytest.fixture
def operator_client(db: None) -> Client:
    client = Client()
    client.force_login(factories.user("olga", "operators"))
    return client


def form_answers(client: Client, scale_set: ScaleSet, action: str, data: dict[str, str]) -> None:
    with each_example_from_the_same_fleet():
        before = set_state(scale_set)
        response = client.post(reverse(action, args=[scale_set.pk]), data)
        status = response.status_code
        event(f"{action} {status}")
        assert status in (200, 302, 400, 409), (status, response.content[:500])
        if status != 302:  # a plan, a form error or a refusal: nothing saved, nothing started
            assert set_state(scale_set) == before, f"a {status} changed the set"


@FUZZ
@given(data=st.data())
def test_any_form_post_is_done_or_refused_whole(
    operator_client: Client, console_sets: list[ScaleSet], data: st.DataObject
) -> None:
    action = data.draw(st.sampled_from(list(FORM_FIELDS)), label="action")
    scale_set = data.draw(st.sampled_from(console_sets), label="scale set")
    form_answers(operator_client, scale_set, action, data.draw(form_posts(action), label="fields"))
