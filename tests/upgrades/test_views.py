"""The dashboard's actions on a scale set (SPEC 5, R-MAN-1, R-MODE-1, R-ONE-1) and its run panel:
operators act through forms that call the services; viewers see no buttons and get 403;
refusals come back as clear errors on the page, never a 500, and nothing is lost."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from fleet.models import Instance, ScaleSet
from tests import factories
from upgrades import services
from upgrades.forms import parse_instance_ids
from upgrades.models import Kind, OutcomeStatus, RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db

AUTOMATIC_CONFIRMATION = (
    "This set is in Automatic mode: saving upgrades every instance at once, so the whole set goes down together. "
    "Tick the box to confirm."
)

ACTIONS = [
    "model-change",
    "manual-upgrade",
    "rolling-upgrade",
    "os-upgrade",
    "cancel",
    "reimage",
    "power",
    "automatic-os-upgrade",
]


# The second step of an action that starts a run: without it the action answers with its plan.
CONFIRM = {"confirm": "1"}


def fleet(capacity: int = 10, **model) -> ScaleSet:
    """A set on the old image, with a newer one published: there is work to do."""
    model.setdefault("zones", [])
    scale_set = factories.scale_set(capacity=capacity, **model)
    factories.publish(factories.NEW_VERSION, scale_set.region)
    return scale_set


def logged_in(role: str, username: str | None = None) -> Client:
    client = Client()
    client.force_login(factories.user(username or role.rstrip("s"), role))
    return client


@pytest.fixture
def operator() -> Client:
    return logged_in("operators", "olga")


@pytest.fixture
def viewer() -> Client:
    return logged_in("viewers", "vera")


def action(name: str, scale_set: ScaleSet) -> str:
    return reverse(f"upgrades:{name}", args=[scale_set.pk])


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def flashes(response) -> list[str]:
    found = re.findall(r'<div class="flash ([a-z ]+)"[^>]*>(.*?)</div>', response.content.decode(), re.S)
    return [f"{kind}: {html.unescape(text)}" for kind, text in found]


# --- who may act -------------------------------------------------------------------------------


def test_a_viewer_sees_no_action_buttons_and_an_operator_does(viewer, operator):
    scale_set = fleet()
    services.os_upgrade_now(scale_set=scale_set)  # an active run: the cancel button would show
    seen = page_text(viewer.get(f"/scale-sets/{scale_set.pk}/"))
    for name in ACTIONS:
        assert f'action="{action(name, scale_set)}"' not in seen, name
    assert "Cancel upgrade" not in seen
    assert "Edit the model" not in seen
    assert 'id="plan-dialog"' not in seen
    shown = page_text(operator.get(f"/scale-sets/{scale_set.pk}/"))
    for name in ACTIONS:
        assert f'action="{action(name, scale_set)}"' in shown, name
    assert "Cancel upgrade" in shown
    assert "Edit the model" in shown


@pytest.mark.parametrize("name", ACTIONS)
def test_every_action_post_from_a_viewer_is_refused_with_403_and_changes_nothing(viewer, name):
    scale_set = fleet()
    response = viewer.post(
        action(name, scale_set),
        {
            "model-vm_size": "Standard_D8s_v3",
            "model-image_sku": "18.04-LTS",
            "model-image_version": "latest",
            "manual-scope": "instance_ids",
            "manual-instance_ids": "*",
            "reimage-instance_ids": "0",
            "power-instance_ids": "0",
            "power-action": "powerOff",
            "auto_os-enabled": "on",
        },
    )
    assert response.status_code == 403
    assert not UpgradeRun.objects.exists()
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade
    assert (scale_set.vm_size, scale_set.model_version) == ("Standard_D2s_v3", 1)
    assert set(Instance.objects.values_list("power_state", flat=True)) == {"running"}


@pytest.mark.parametrize("name", ACTIONS)
def test_an_anonymous_action_post_is_sent_to_login(client, name):
    scale_set = fleet(2)
    response = client.post(action(name, scale_set))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("name", ACTIONS)
def test_actions_take_post_only(operator, name):
    scale_set = fleet(2)
    assert operator.get(action(name, scale_set)).status_code == 405


def test_an_action_needs_the_csrf_token_of_the_page():
    scale_set = fleet(3)
    client = Client(enforce_csrf_checks=True)
    client.force_login(factories.user("olga", "operators"))
    assert client.post(action("os-upgrade", scale_set)).status_code == 403
    assert not UpgradeRun.objects.exists()
    token = re.search(
        r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    )[1]
    response = client.post(action("os-upgrade", scale_set), {"csrfmiddlewaretoken": token, **CONFIRM})
    assert response.status_code == 302
    assert UpgradeRun.objects.get().kind == Kind.MANUAL_OS


def test_an_action_on_an_unknown_scale_set_is_a_404(operator):
    assert operator.post("/scale-sets/424242/os-upgrade/").status_code == 404


# --- manual upgrades (R-MAN-1) -----------------------------------------------------------------


def test_upgrading_an_update_domain_starts_a_manual_run_of_exactly_that_domain(operator):
    scale_set = fleet(20)
    response = operator.post(
        action("manual-upgrade", scale_set), {"manual-scope": "update_domain", "manual-update_domain": "2", **CONFIRM}
    )
    assert response.status_code == 302
    assert response["Location"] == f"/scale-sets/{scale_set.pk}/"
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.MANUAL
    assert run.actor.username == "olga"
    domain_2 = set(scale_set.instances.filter(update_domain=2).values_list("instance_id", flat=True))
    assert domain_2 == {2, 7, 12, 17}
    assert set(run.outcomes.values_list("instance_id_number", flat=True)) == domain_2
    assert run.batch_count == 1
    followed = operator.get(response["Location"])
    assert f"success: Manual upgrade #{run.pk} started: update domain 2, 4 instances to model v1." in flashes(followed)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"manual-scope": "fault_domain", "manual-fault_domain": "1"}, {1, 6}),
        ({"manual-scope": "instance_ids", "manual-instance_ids": "0,3,5-7"}, {0, 3, 5, 6, 7}),
        ({"manual-scope": "instance_ids", "manual-instance_ids": " 9  8, 8 "}, {8, 9}),
        ({"manual-scope": "instance_ids", "manual-instance_ids": "*"}, set(range(10))),
    ],
)
def test_manual_upgrade_by_fault_domain_or_chosen_instances(operator, fields, expected):
    scale_set = fleet(10)
    assert operator.post(action("manual-upgrade", scale_set), {**fields, **CONFIRM}).status_code == 302
    run = UpgradeRun.objects.get()
    assert set(run.outcomes.values_list("instance_id_number", flat=True)) == expected


def test_manual_upgrade_by_zone(operator):
    scale_set = fleet(9, zones=["1", "2", "3"])
    assert (
        operator.post(
            action("manual-upgrade", scale_set), {"manual-scope": "zone", "manual-zone": "2", **CONFIRM}
        ).status_code
        == 302
    )
    run = UpgradeRun.objects.get()
    in_zone_2 = set(scale_set.instances.filter(zone="2").values_list("instance_id", flat=True))
    assert in_zone_2
    assert set(run.outcomes.values_list("instance_id_number", flat=True)) == in_zone_2


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("0,x,3", "'x' is not an instance id or a range like 5-9."),
        ("9-5", "The range 9-5 runs backwards: write 5-9."),
        ("", "Choose the chosen instances to upgrade."),
        ("0-5000", "The range 0-5000 is longer than any scale set (1,000 at most)."),
        ("99999999999999", "'99999999999999' is too large for an instance id."),
        ("3,12", "web has no instance 12."),
    ],
)
def test_a_bad_instance_id_list_is_a_clear_form_error_that_keeps_the_input(operator, typed, message):
    scale_set = fleet(10)
    response = operator.post(
        action("manual-upgrade", scale_set), {"manual-scope": "instance_ids", "manual-instance_ids": typed}
    )
    assert response.status_code == 400
    text = page_text(response)
    assert message in text
    assert f'name="manual-instance_ids" value="{typed}"' in text
    assert any(message in flash for flash in flashes(response) if flash.startswith("error"))
    assert not UpgradeRun.objects.exists()


def test_an_update_domain_with_no_instances_is_refused_by_name(operator):
    scale_set = fleet(3)
    response = operator.post(
        action("manual-upgrade", scale_set), {"manual-scope": "update_domain", "manual-update_domain": "4"}
    )
    assert response.status_code == 400
    assert "web has no instance in update domain 4." in page_text(response)


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0,3,5-9", [0, 3, 5, 6, 7, 8, 9]), ("5 - 7, 2", [2, 5, 6, 7]), ("1,,1", [1]), ("*", "*"), ("10 9", [9, 10])],
)
def test_instance_id_lists_parse_as_operators_write_them(text, ids):
    assert parse_instance_ids(text) == ids


@pytest.mark.parametrize("text", ["a", "1-", "-1", "1-2-3", "1.5", "0-1000", "   "])
def test_instance_id_lists_refuse_anything_else(text):
    with pytest.raises(ValidationError):
        parse_instance_ids(text)


# --- rolling, OS upgrade now, cancel -----------------------------------------------------------


def test_a_rolling_upgrade_runs_with_the_chosen_batch_size_and_pause(operator):
    scale_set = fleet(10)
    response = operator.post(
        action("rolling-upgrade", scale_set), {"rolling-batch_size": "3", "rolling-pause_seconds": "45", **CONFIRM}
    )
    assert response.status_code == 302
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.ROLLING_MODEL
    assert (run.policy["batch_size"], run.policy["pause_seconds"]) == (3, 45.0)
    assert list(run.batches.values_list("size", flat=True)) == [2, 2, 2, 2, 2]  # cut at update domains
    assert "in 5 batches" in " ".join(flashes(operator.get(response["Location"])))


def test_a_rolling_upgrade_without_choices_uses_the_policy(operator):
    scale_set = fleet(10)
    assert (
        operator.post(
            action("rolling-upgrade", scale_set), {"rolling-batch_size": "", "rolling-pause_seconds": "", **CONFIRM}
        ).status_code
        == 302
    )
    run = UpgradeRun.objects.get()
    assert (run.policy["batch_size"], run.policy["pause_seconds"]) == (None, 0.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rolling-batch_size": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"rolling-batch_size": "two"}, "Enter a whole number."),
        ({"rolling-pause_seconds": "-5"}, "Ensure this value is greater than or equal to 0."),
    ],
)
def test_a_rolling_upgrade_with_bad_numbers_is_a_form_error(operator, fields, message):
    scale_set = fleet(10)
    response = operator.post(action("rolling-upgrade", scale_set), fields)
    assert response.status_code == 400
    assert message in page_text(response)
    assert not UpgradeRun.objects.exists()


def test_os_upgrade_now_starts_a_manual_os_upgrade_to_the_latest_image(operator):
    scale_set = fleet(10)
    assert operator.post(action("os-upgrade", scale_set), CONFIRM).status_code == 302
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.MANUAL_OS
    assert run.target_image.endswith(factories.NEW_VERSION)


def test_a_second_start_while_one_runs_is_refused_with_409_and_a_flash_error(operator):
    scale_set = fleet(10)
    operator.post(action("os-upgrade", scale_set), CONFIRM)
    response = operator.post(action("rolling-upgrade", scale_set), {"rolling-batch_size": "4"})  # its plan: refused
    assert response.status_code == 409
    refusal = (
        "An upgrade is already rolling forward on web; wait for it to finish or cancel it before starting another."
    )
    assert f"error: {refusal}" in flashes(response)
    assert 'name="rolling-batch_size" min="1" max="1000" value="4"' in response.content.decode()  # kept
    assert UpgradeRun.objects.count() == 1


def test_cancel_with_no_run_is_refused_with_arms_message(operator):
    scale_set = fleet(3)
    response = operator.post(action("cancel", scale_set))
    assert response.status_code == 409
    assert "error: There is no ongoing Rolling Upgrade to cancel." in flashes(response)


def test_cancel_asks_the_running_upgrade_to_stop(operator):
    scale_set = fleet(10)
    run = services.os_upgrade_now(scale_set=scale_set)
    response = operator.post(action("cancel", scale_set))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested
    assert run.last_action == "Cancel"
    assert f"Cancel requested for os upgrade (started by hand) #{run.pk}" in " ".join(
        flashes(operator.get(response["Location"]))
    )


def test_nothing_to_upgrade_is_a_refusal_not_an_error_page(operator):
    scale_set = factories.scale_set(capacity=3, zones=[])  # already on the latest image and model
    response = operator.post(action("os-upgrade", scale_set))
    assert response.status_code == 409
    assert any("Nothing to upgrade" in flash for flash in flashes(response))


# --- reimage and power -------------------------------------------------------------------------


def test_reimage_chosen_instances(operator):
    scale_set = fleet(5)
    disks = dict(scale_set.instances.values_list("instance_id", "os_disk"))
    response = operator.post(action("reimage", scale_set), {"reimage-instance_ids": "1-2"})
    assert response.status_code == 302
    assert "success: Reimaging 2 instances (1–2)." in flashes(operator.get(response["Location"]))
    states = dict(scale_set.instances.values_list("instance_id", "provisioning_state"))
    assert (states[1], states[2], states[0]) == ("updating", "updating", "succeeded")
    assert dict(scale_set.instances.values_list("instance_id", "os_disk"))[0] == disks[0]


def test_reimage_while_a_run_rolls_forward_is_refused(operator):
    scale_set = fleet(5)
    services.os_upgrade_now(scale_set=scale_set)
    response = operator.post(action("reimage", scale_set), {"reimage-instance_ids": "0"})
    assert response.status_code == 409
    assert any("already rolling forward" in flash for flash in flashes(response))


@pytest.mark.parametrize(("verb", "state"), [("powerOff", "stopping"), ("deallocate", "deallocating")])
def test_power_actions_on_chosen_instances(operator, verb, state):
    scale_set = fleet(5)
    assert (
        operator.post(action("power", scale_set), {"power-instance_ids": "0,4", "power-action": verb}).status_code
        == 302
    )
    powers = dict(scale_set.instances.values_list("instance_id", "power_state"))
    assert (powers[0], powers[4], powers[2]) == (state, state, "running")


def test_a_power_action_that_does_not_exist_is_a_form_error(operator):
    scale_set = fleet(3)
    response = operator.post(action("power", scale_set), {"power-instance_ids": "0", "power-action": "explode"})
    assert response.status_code == 400
    assert "Select a valid choice. explode is not one of the available choices." in page_text(response)
    assert set(scale_set.instances.values_list("power_state", flat=True)) == {"running"}


# --- the model (R-MODE-1) ----------------------------------------------------------------------


def model_fields(scale_set: ScaleSet, **changes: str) -> dict[str, str]:
    fields = {
        "model-image_sku": scale_set.image_sku,
        "model-image_version": scale_set.image_version,
        "model-vm_size": scale_set.vm_size,
    }
    fields.update({f"model-{name}": value for name, value in changes.items()})
    return fields


def test_automatic_mode_warns_that_every_instance_is_upgraded_at_once(operator):
    scale_set = fleet(6, upgrade_mode="Automatic")
    text = page_text(operator.get(f"/scale-sets/{scale_set.pk}/"))
    assert "Upgrade mode is Automatic: saving upgrades EVERY instance at once." in text
    assert "I understand every instance is upgraded at once (downtime)" in text


def test_an_automatic_mode_model_change_without_the_confirmation_is_refused_and_changes_nothing(operator):
    scale_set = fleet(6, upgrade_mode="Automatic")
    response = operator.post(action("model-change", scale_set), model_fields(scale_set, vm_size="Standard_D8s_v3"))
    assert response.status_code == 400
    assert AUTOMATIC_CONFIRMATION in page_text(response)
    assert 'value="Standard_D8s_v3"' in response.content.decode()  # what was typed is kept
    scale_set.refresh_from_db()
    assert (scale_set.vm_size, scale_set.model_version) == ("Standard_D2s_v3", 1)
    assert not UpgradeRun.objects.exists()


def test_an_automatic_mode_model_change_with_the_confirmation_upgrades_every_instance_at_once(operator):
    scale_set = fleet(6, upgrade_mode="Automatic")
    fields = model_fields(scale_set, vm_size="Standard_D8s_v3", confirm_all_at_once="on")
    response = operator.post(action("model-change", scale_set), {**fields, **CONFIRM})
    assert response.status_code == 302
    scale_set.refresh_from_db()
    assert (scale_set.vm_size, scale_set.model_version) == ("Standard_D8s_v3", 2)
    run = UpgradeRun.objects.get()
    assert (run.kind, run.batch_count, run.pending_count) == (Kind.MANUAL, 1, 6)
    assert "Every instance is being upgraded at once" in " ".join(flashes(operator.get(response["Location"])))


def test_a_rolling_mode_model_change_starts_a_rolling_model_upgrade(operator):
    scale_set = fleet(10, upgrade_mode="Rolling")
    response = operator.post(
        action("model-change", scale_set), {**model_fields(scale_set, image_version=factories.OLD_VERSION), **CONFIRM}
    )
    assert response.status_code == 302
    scale_set.refresh_from_db()
    assert (scale_set.image_version, scale_set.model_version) == (factories.OLD_VERSION, 2)
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.ROLLING_MODEL
    assert run.target_image.endswith(factories.OLD_VERSION)
    assert f"Rolling model upgrade #{run.pk} started" in " ".join(flashes(operator.get(response["Location"])))


def test_a_manual_mode_model_change_starts_nothing_and_says_so(operator):
    scale_set = fleet(4, upgrade_mode="Manual")
    response = operator.post(action("model-change", scale_set), model_fields(scale_set, vm_size="Standard_D4s_v3"))
    assert response.status_code == 302
    assert not UpgradeRun.objects.exists()
    followed = operator.get(response["Location"])
    assert any("nothing happens until you upgrade instances" in flash for flash in flashes(followed))
    assert "4 of 4 instances not on the latest model" in page_text(followed)


def test_a_model_change_that_changes_nothing_is_a_form_error(operator):
    scale_set = fleet(4, upgrade_mode="Manual")
    response = operator.post(action("model-change", scale_set), model_fields(scale_set))
    assert response.status_code == 400
    assert "Nothing changed in the model." in page_text(response)


def test_a_rolling_mode_model_change_while_a_run_rolls_forward_is_refused_and_saves_nothing(operator):
    scale_set = fleet(10, upgrade_mode="Rolling")
    services.os_upgrade_now(scale_set=scale_set)
    response = operator.post(action("model-change", scale_set), model_fields(scale_set, vm_size="Standard_D8s_v3"))
    assert response.status_code == 409
    assert any("A model change would start a new one." in flash for flash in flashes(response))
    scale_set.refresh_from_db()
    assert scale_set.vm_size == "Standard_D2s_v3"
    assert f"{scale_set.capacity} × Standard_D2s_v3" in page_text(response)


def test_the_model_form_offers_latest_and_the_versions_published_in_the_sets_region(operator):
    scale_set = fleet(2, upgrade_mode="Manual")
    factories.publish("18.04.209901010", factories.region("westus", zones=[]))  # elsewhere only
    factories.publish("1.0.0", scale_set.region, image_sku="20.04-LTS")
    text = page_text(operator.get(f"/scale-sets/{scale_set.pk}/"))
    form = re.search(r'<form method="post" action="[^"]*/model/".*?</form>', text, re.S)[0]
    versions = re.findall(
        r'<option value="([^"]+)"', re.search(r'name="model-image_version".*?</select>', form, re.S)[0]
    )
    assert versions == ["latest", factories.NEW_VERSION, factories.OLD_VERSION, "1.0.0"]
    skus = re.findall(r'<option value="([^"]+)"', re.search(r'name="model-image_sku".*?</select>', form, re.S)[0])
    assert skus == ["18.04-LTS", "20.04-LTS"]


def test_a_version_not_offered_is_a_form_error(operator):
    scale_set = fleet(2, upgrade_mode="Manual")
    response = operator.post(
        action("model-change", scale_set), model_fields(scale_set, image_version="18.04.209901010")
    )
    assert response.status_code == 400
    assert "Select a valid choice." in page_text(response)


def test_a_version_of_another_sku_is_refused_by_the_service_on_the_form(operator):
    scale_set = fleet(2, upgrade_mode="Manual")
    factories.publish("1.0.0", scale_set.region, image_sku="20.04-LTS")
    response = operator.post(action("model-change", scale_set), model_fields(scale_set, image_version="1.0.0"))
    assert response.status_code == 400
    assert "Image version 1.0.0 is not available in eastus." in page_text(response)
    scale_set.refresh_from_db()
    assert (scale_set.image_version, scale_set.model_version) == ("latest", 1)


def test_a_custom_image_set_edits_its_uri(operator):
    where = factories.region()
    scale_set = factories.scale_set(
        capacity=2, zones=[], where=where, image_source="custom", custom_image_uri="https://images.example/a.vhd"
    )
    text = page_text(operator.get(f"/scale-sets/{scale_set.pk}/"))
    assert 'name="model-custom_image_uri"' in text
    assert 'name="model-image_version"' not in text
    bad = operator.post(
        action("model-change", scale_set), {"model-custom_image_uri": "ftp://x", "model-vm_size": "Standard_D2s_v3"}
    )
    assert bad.status_code == 400
    assert "A custom image is an https:// URI" in page_text(bad)
    good = operator.post(
        action("model-change", scale_set),
        {"model-custom_image_uri": "https://images.example/b.vhd", "model-vm_size": "Standard_D2s_v3"},
    )
    assert good.status_code == 302
    scale_set.refresh_from_db()
    assert (scale_set.custom_image_uri, scale_set.model_version) == ("https://images.example/b.vhd", 2)


# --- the run panel -----------------------------------------------------------------------------


def embedded_snapshot(response) -> dict:
    match = re.search(
        r'<script id="heatmap-snapshot" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    return json.loads(match[1])


def test_the_run_panel_shows_the_active_run_with_its_batches(viewer):
    scale_set = fleet(10)
    run = services.rolling_upgrade(scale_set=scale_set, actor=factories.user("olga", "operators"), batch_size=2)
    response = viewer.get(f"/scale-sets/{scale_set.pk}/")
    text = page_text(response)
    assert "Upgrade in progress" in text
    assert f'<a href="/runs/{run.pk}/">Rolling model upgrade #{run.pk}</a>' in text
    assert "started by User (olga)" in text
    assert "5 batches planned: Checking the set's health before the next batch" in text
    panel = embedded_snapshot(response)["run"]
    assert (panel["id"], panel["status"], panel["actor"]) == (run.pk, RunStatus.ROLLING_FORWARD, "olga")
    assert [b["update_domain"] for b in panel["batches"]] == [0, 1, 2, 3, 4]
    assert panel["progress"]["pending"] == 10


def test_the_run_panel_shows_the_latest_finished_run_with_a_link(viewer):
    scale_set = fleet(3)
    run = services.os_upgrade_now(scale_set=scale_set)
    UpgradeRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, phase="done", ended_at=run.started_at)
    text = page_text(viewer.get(f"/scale-sets/{scale_set.pk}/"))
    assert "Last upgrade" in text
    assert f'href="/runs/{run.pk}/"' in text
    assert "Upgrade in progress" not in text


def test_a_set_that_never_ran_an_upgrade_says_so(viewer):
    scale_set = fleet(3)
    response = viewer.get(f"/scale-sets/{scale_set.pk}/")
    assert "No upgrade has run on this scale set yet." in page_text(response)
    assert embedded_snapshot(response)["run"] is None


def test_the_scale_set_list_shows_each_sets_run(viewer):
    scale_set = fleet(5)
    run = services.os_upgrade_now(scale_set=scale_set)
    factories.scale_set("quiet", capacity=1, zones=[])
    text = page_text(viewer.get("/"))
    link = f'<a href="/runs/{run.pk}/" title="OS upgrade (started by hand) #{run.pk}">'
    assert f'{link}<span class="status s-RollingForward">upgrading</span></a>' in text
    assert f'<div class="sub">batch 1/{run.batch_count} · 0/5</div>' in text
    assert "none yet" in text


def test_the_scale_set_page_costs_the_same_queries_for_10_and_1000_instances_with_a_run(
    operator, django_assert_num_queries
):
    small = factories.scale_set("small", capacity=10, zones=[])
    large = factories.scale_set("large", capacity=1000)
    factories.publish(factories.NEW_VERSION, factories.region())
    for scale_set in (small, large):
        run = services.os_upgrade_now(scale_set=scale_set, actor=factories.user(f"u{scale_set.pk}", "operators"))
        UpgradeRun.objects.filter(pk=run.pk).update(current_batch=0)
    # session + user + groups, the set, its target image, its instances, its extensions,
    # the latest run (with its actor), its batches, the model form's catalog, the audit entries
    with django_assert_num_queries(11):
        assert operator.get(f"/scale-sets/{small.pk}/").status_code == 200
    with django_assert_num_queries(11):
        assert operator.get(f"/scale-sets/{large.pk}/").status_code == 200


def test_the_outcomes_of_a_domain_upgrade_are_pending_in_one_batch(operator):
    scale_set = fleet(10)
    operator.post(
        action("manual-upgrade", scale_set), {"manual-scope": "update_domain", "manual-update_domain": "0", **CONFIRM}
    )
    run = UpgradeRun.objects.get()
    assert set(run.outcomes.values_list("status", flat=True)) == {OutcomeStatus.PENDING}
    assert run.batches.get().update_domain == -1  # all at once


def test_a_gallery_image_set_picks_among_versions_replicated_to_its_region(operator):
    from fleet import services as fleet_services
    from fleet.models import Gallery, GalleryImage

    eastus, westus = factories.region("eastus"), factories.region("westus", zones=[])
    gallery = Gallery.objects.create(subscription_id="s", resource_group="rg", name="g", region=eastus)
    image = GalleryImage.objects.create(gallery=gallery, name="app", os_type="Linux")
    fleet_services.gallery_image_version_publish(image=image, name="1.0.0", target_regions=[eastus, westus])
    fleet_services.gallery_image_version_publish(image=image, name="1.1.0", target_regions=[westus])
    fleet_services.gallery_image_version_publish(
        image=image, name="1.2.0", target_regions=[eastus], replication_seconds=600
    )
    scale_set = factories.scale_set(
        capacity=2, zones=[], where=eastus, image_source="gallery", gallery_image=image, image_version="latest"
    )
    text = page_text(operator.get(f"/scale-sets/{scale_set.pk}/"))
    select = re.search(r'name="model-image_version".*?</select>', text, re.S)[0]
    assert re.findall(r'<option value="([^"]+)"', select) == ["latest", "1.0.0"]  # 1.1.0 elsewhere, 1.2.0 replicating
    assert 'name="model-image_sku"' not in text
    response = operator.post(
        action("model-change", scale_set), {"model-image_version": "1.0.0", "model-vm_size": "Standard_D2s_v3"}
    )
    assert response.status_code == 302
    scale_set.refresh_from_db()
    assert (scale_set.image_version, scale_set.model_version) == ("1.0.0", 2)


# --- automatic OS upgrade on/off (R-AUTO-1, R-AUTO-5) ------------------------------------------

PROBE = {"health_probe_protocol": "tcp", "health_probe_port": 80}


def test_an_operator_turns_automatic_os_upgrade_on(operator):
    scale_set = fleet(4, **PROBE)
    assert "Turn automatic OS upgrade on" in page_text(operator.get(f"/scale-sets/{scale_set.pk}/"))
    response = operator.post(
        action("automatic-os-upgrade", scale_set), {"auto_os-enabled": "on", "auto_os-disable_automatic_rollback": "on"}
    )
    assert response.status_code == 302
    scale_set.refresh_from_db()
    assert (scale_set.enable_automatic_os_upgrade, scale_set.disable_automatic_rollback) == (True, True)
    assert scale_set.model_version == 1
    followed = operator.get(response["Location"])
    assert "success: Automatic OS upgrade on without automatic rollback" in " ".join(flashes(followed))
    assert "Turn automatic OS upgrade off" in page_text(followed)


def test_r_auto_1_an_operator_turning_it_on_where_the_rule_forbids_sees_each_reason_and_nothing_changes(operator):
    scale_set = fleet(4, image_version=factories.OLD_VERSION)  # pinned, and no health source
    response = operator.post(action("automatic-os-upgrade", scale_set), {"auto_os-enabled": "on"})
    assert response.status_code == 400
    pinned = (
        f"Automatic OS upgrades need image version 'latest', not a pinned version ({factories.OLD_VERSION}): "
        "set the image version to latest."
    )
    health = (
        "Automatic OS upgrades need a health source: add a load-balancer health probe "
        "or the Application Health extension."
    )
    assert f"error: Automatic OS upgrade: {pinned} {health}" in flashes(response)
    errors = re.search(r'id="action-auto-os".*?</div>', page_text(response), re.S)[0]
    assert pinned in errors  # on the form too
    assert health in errors
    assert 'class="action failed" id="action-auto-os"' in response.content.decode()
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade


def test_r_auto_5_an_operator_turns_it_off_and_a_run_in_progress_goes_on(operator):
    scale_set = fleet(10, **PROBE, enable_automatic_os_upgrade=True)
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by="Platform")
    # Even a set that no longer meets R-AUTO-1 can always turn it off.
    ScaleSet.objects.filter(pk=scale_set.pk).update(health_probe_protocol="")
    response = operator.post(action("automatic-os-upgrade", scale_set), {"auto_os-enabled": "off"})
    assert response.status_code == 302
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade
    run.refresh_from_db()
    assert run.status == RunStatus.ROLLING_FORWARD
    assert not run.cancel_requested
    assert (
        "success: Automatic OS upgrade off: no new automatic run starts. "
        "The automatic upgrade in progress goes on; cancel it above to stop it."
    ) in flashes(operator.get(response["Location"]))


def test_automatic_os_upgrade_from_a_viewer_is_a_403_and_changes_nothing(viewer):
    scale_set = fleet(3, **PROBE)
    assert viewer.post(action("automatic-os-upgrade", scale_set), {"auto_os-enabled": "on"}).status_code == 403
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade


def test_automatic_os_upgrade_without_a_choice_is_a_form_error(operator):
    scale_set = fleet(3, **PROBE)
    response = operator.post(action("automatic-os-upgrade", scale_set), {"auto_os-enabled": "maybe"})
    assert response.status_code == 400
    assert any(flash.startswith("error: Automatic OS upgrade: nothing was done.") for flash in flashes(response))
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade


# --- the plan before the action (two steps) ------------------------------------------------------


def hidden_fields(response, form_id: str) -> dict[str, str]:
    """The hidden inputs of one form of a page, as a browser would post them back."""
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', response.content.decode(), re.S)[0]
    return {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)
    }


def test_r_man_1_an_update_domain_upgrade_shows_its_plan_first_and_writes_nothing(operator):
    scale_set = fleet(20)
    response = operator.post(
        action("manual-upgrade", scale_set), {"manual-scope": "update_domain", "manual-update_domain": "2"}
    )
    assert response.status_code == 200
    text = page_text(response)
    assert "Plan: nothing has been done yet" in text
    assert "Upgrade update domain 2: 4 instances, all at once, no health gate" in text
    assert '<td class="ids">2, 7, 12, 17</td>' in text
    assert "No rollback: a manual upgrade leaves failed instances Failed." in text
    assert not UpgradeRun.objects.exists()
    assert hidden_fields(response, "plan-confirm") == {
        "csrfmiddlewaretoken": hidden_fields(response, "plan-confirm")["csrfmiddlewaretoken"],
        "manual-scope": "update_domain",
        "manual-update_domain": "2",
        "confirm": "1",
    }


def test_confirming_the_plan_runs_exactly_the_batches_shown(operator):
    scale_set = fleet(23)
    shown = operator.post(action("rolling-upgrade", scale_set), {"rolling-batch_size": "", "rolling-pause_seconds": ""})
    assert shown.status_code == 200
    previewed = re.findall(r'<tr data-batch="\d+">.*?<td class="ids">([^<]*)</td>', shown.content.decode(), re.S)
    assert len(previewed) == 8  # 5, 5, 5, 4, 4 instances per update domain, 4 per batch
    assert "20 % of 23 instances = 4.6 → 4 per batch" in page_text(shown)
    assert "Rolling: 8 batches of at most 4, 23 instances, gated on health" in page_text(shown)
    assert "Stops before a batch if more than 4 of the 23 instances are unhealthy" in page_text(shown)
    response = operator.post(action("rolling-upgrade", scale_set), hidden_fields(shown, "plan-confirm"))
    assert response.status_code == 302
    run = UpgradeRun.objects.get()
    written = [
        forms_ids_text(sorted(batch.outcomes.values_list("instance_id_number", flat=True)))
        for batch in run.batches.order_by("index")
    ]
    assert written == [html.unescape(ids) for ids in previewed]


def forms_ids_text(ids: list[int]) -> str:
    from upgrades.forms import ids_text

    return ids_text(ids)


def test_os_upgrade_now_shows_its_plan_with_no_rollback_and_the_eta(operator):
    scale_set = fleet(10)
    text = page_text(operator.post(action("os-upgrade", scale_set)))
    assert "OS upgrade (rolling): 5 batches of at most 2, 10 instances, gated on health" in text
    assert "No rollback: an OS upgrade started by hand leaves failed instances Failed (R-ROLLBACK-1)." in text
    assert "if every instance becomes healthy" in text
    assert "simulated" in text
    assert not UpgradeRun.objects.exists()


def test_r_mode_1_a_rolling_mode_model_change_shows_the_plan_of_the_new_model_and_saves_nothing(operator):
    scale_set = fleet(10, upgrade_mode="Rolling")
    response = operator.post(action("model-change", scale_set), model_fields(scale_set, vm_size="Standard_D8s_v3"))
    assert response.status_code == 200
    text = page_text(response)
    assert "Model change (Rolling mode), rolling: 5 batches of at most 2, 10 instances, gated on health" in text
    assert "model v2" in text
    scale_set.refresh_from_db()
    assert (scale_set.vm_size, scale_set.model_version) == ("Standard_D2s_v3", 1)
    assert not UpgradeRun.objects.exists()


def test_r_mode_1_an_automatic_mode_model_change_plan_says_every_instance_at_once(operator):
    scale_set = fleet(6, upgrade_mode="Automatic")
    fields = model_fields(scale_set, vm_size="Standard_D8s_v3", confirm_all_at_once="on")
    text = page_text(operator.post(action("model-change", scale_set), fields))
    assert "Model change (Automatic mode): 6 instances, all at once, no health gate" in text
    assert not UpgradeRun.objects.exists()


def test_the_plan_fragment_is_the_plan_alone_for_the_dialog(operator):
    scale_set = fleet(10)
    response = operator.post(
        action("manual-upgrade", scale_set),
        {"manual-scope": "update_domain", "manual-update_domain": "1", "preview": "fragment"},
    )
    assert response.status_code == 200
    text = page_text(response)
    assert "<html" not in text
    assert 'id="plan-confirm"' in text
    assert "data-plan-dismiss" in text
    assert "Upgrade update domain 1: 2 instances, all at once, no health gate" in text


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        (
            {"manual-scope": "update_domain", "manual-update_domain": "4"},
            400,
            "web has no instance in update domain 4.",
        ),
        ({"manual-scope": "instance_ids", "manual-instance_ids": "x"}, 400, "'x' is not an instance id"),
    ],
)
def test_a_refusal_shows_in_the_dialog_before_any_plan(operator, fields, status, message):
    scale_set = fleet(3)
    response = operator.post(action("manual-upgrade", scale_set), {**fields, "preview": "fragment"})
    assert response.status_code == status
    assert message in page_text(response)
    assert 'id="plan-refusal"' in response.content.decode()
    assert 'id="plan-confirm"' not in response.content.decode()


def test_r_one_1_a_busy_set_refuses_in_the_dialog_with_409(operator):
    scale_set = fleet(10)
    services.os_upgrade_now(scale_set=scale_set)
    response = operator.post(
        action("manual-upgrade", scale_set),
        {"manual-scope": "update_domain", "manual-update_domain": "1", "preview": "fragment"},
    )
    assert response.status_code == 409
    assert "An upgrade is already rolling forward on web" in page_text(response)


def test_the_plan_pages_what_if_form_recomputes_without_javascript(operator):
    scale_set = factories.outdated_scale_set(capacity=20)
    first = operator.post(action("os-upgrade", scale_set))
    assert "Completes: all 5 batches run" in page_text(first)
    again = operator.post(
        action("os-upgrade", scale_set), {**hidden_fields(first, "whatif-form"), "whatif-failure_percent": "50"}
    )
    assert again.status_code == 200
    assert re.search(
        r"Stops after batch \d of 5 \(MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade\)", page_text(again)
    )
    assert 'name="whatif-failure_percent" min="0" max="100" step="any" value="50"' in again.content.decode()
    assert not UpgradeRun.objects.exists()


def test_the_scale_set_page_offers_the_plan_dialog_to_operators_and_computes_no_plan(operator):
    scale_set = fleet(10)
    text = operator.get(f"/scale-sets/{scale_set.pk}/").content.decode()
    assert '<dialog id="plan-dialog"' in text
    assert "js/plan.js" in text
    assert "RunPanel.rowConfirm" not in text
    assert 'id="plan-confirm"' not in text  # the plan is made on the preview request only


def test_a_what_if_request_never_acts_even_where_the_action_has_no_plan(operator):
    scale_set = fleet(4, upgrade_mode="Manual")  # saving the model starts no run: nothing to play
    fields = {**model_fields(scale_set, vm_size="Standard_D4s_v3"), "preview": "whatif"}
    response = operator.post(action("model-change", scale_set), fields)
    assert response.status_code == 400
    assert "starts no run" in response.json()["error"]
    scale_set.refresh_from_db()
    assert (scale_set.vm_size, scale_set.model_version) == ("Standard_D2s_v3", 1)


def test_a_viewer_cannot_even_see_a_plan(viewer):
    scale_set = fleet(4)
    response = viewer.post(action("os-upgrade", scale_set), {"preview": "fragment"})
    assert response.status_code == 403
