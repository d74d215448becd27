"""The audit log: who started, cancelled or changed what, through which door, recorded in the
transaction of the change (a refused change leaves no entry) and shown on the run's page, the
set's page and the audit page."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from api.tokens import token_create, token_revoke
from fleet import audit
from fleet.models import AuditEntry, ScaleSet
from tests import factories
from tests.api.conftest import ApiClient
from upgrades import services
from upgrades.models import Kind, StartedBy, UpgradeRun

pytestmark = pytest.mark.django_db

CONFIRM = {"confirm": "1"}


def fleet(capacity: int = 10, name: str = "web") -> ScaleSet:
    """A set with a newer image published: there is work to do. The log starts empty after it
    (what building the fleet recorded is the subject of its own test)."""
    scale_set = factories.scale_set(name, capacity=capacity, zones=[])
    factories.publish(factories.NEW_VERSION, scale_set.region)
    AuditEntry.objects.all().delete()
    return scale_set


def client_of(username: str, role: str) -> Client:
    client = Client()
    client.force_login(factories.user(username, role))
    return client


def arm_path(scale_set: ScaleSet, tail: str = "") -> str:
    return (
        f"/subscriptions/{scale_set.subscription_id}/resourceGroups/{scale_set.resource_group}"
        f"/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set.name}{tail}"
    )


def entries(**filters: object) -> list[tuple[str, str, str]]:
    return list(AuditEntry.objects.filter(**filters).order_by("pk").values_list("action", "actor_name", "via"))


def test_building_the_fleet_is_recorded_as_the_platform_outside_any_request() -> None:
    scale_set = factories.scale_set(capacity=2, zones=[])
    factories.publish(factories.NEW_VERSION, scale_set.region)
    image = "Canonical:UbuntuServer:18.04-LTS"
    assert list(AuditEntry.objects.order_by("pk").values_list("action", "actor_name", "scale_set_name")) == [
        ("image.publish", "platform", ""),
        ("scale_set.create", "platform", "web"),
        ("image.publish", "platform", ""),
    ]
    summaries = list(AuditEntry.objects.order_by("pk").values_list("summary", flat=True))
    assert summaries[0] == f"Published {image}:{factories.OLD_VERSION} in eastus"
    assert summaries[1].startswith("Created with 2 instances on ")
    assert factories.OLD_VERSION in summaries[1]
    assert summaries[2] == f"Published {image}:{factories.NEW_VERSION} in eastus"


def test_a_start_and_a_cancel_on_the_console_name_the_operator_and_the_run() -> None:
    scale_set = fleet()
    olga = client_of("olga", "operators")
    olga.post(reverse("upgrades:os-upgrade", args=[scale_set.pk]), CONFIRM)
    olga.post(reverse("upgrades:cancel", args=[scale_set.pk]))
    run = UpgradeRun.objects.get()
    assert entries(run_id=run.pk) == [("run.start", "olga", "console"), ("run.cancel", "olga", "console")]
    start = AuditEntry.objects.get(action="run.start")
    assert start.scale_set == scale_set
    assert start.actor is not None
    assert start.actor.username == "olga"
    assert f"#{run.pk}" in start.summary
    assert "10 instances" in start.summary


def test_the_run_page_and_the_set_page_show_who_did_it() -> None:
    scale_set = fleet()
    client_of("olga", "operators").post(reverse("upgrades:os-upgrade", args=[scale_set.pk]), CONFIRM)
    run = UpgradeRun.objects.get()
    viewer = client_of("vera", "viewers")
    for page in (reverse("upgrades:run-detail", args=[run.pk]), reverse("fleet:scale-set-detail", args=[scale_set.pk])):
        body = viewer.get(page).content.decode()
        audit_panel = body[body.index('id="audit"') :]
        assert "run.start" in audit_panel
        assert "olga" in audit_panel


def test_an_api_change_names_the_tokens_user_and_the_api() -> None:
    scale_set = fleet()
    api = ApiClient(token_create(user=factories.user("pipeline", "operators"), name="ci")[1])
    response = api.patch(arm_path(scale_set), {"properties": {"upgradePolicy": {"mode": "Rolling"}}})
    assert response.status_code in (200, 202), response.content
    (entry,) = AuditEntry.objects.filter(action="scale_set.update")
    assert (entry.actor_name, entry.via, entry.scale_set_id) == ("pipeline", "api", scale_set.pk)
    assert "upgrade_mode" in entry.summary


def test_an_update_sending_every_property_back_names_only_what_changed() -> None:
    """`vmss update --set` reads the set and PUTs all of it back with one value changed."""
    scale_set = fleet()
    factories.user("olga", "operators")
    arguments = ["--resource-group", scale_set.resource_group, "--name", scale_set.name, "--user", "olga"]
    policy = "properties.upgradePolicy.rollingUpgradePolicy"
    call_command("vmss", "update", *arguments, "--set", f"{policy}.maxBatchInstancePercent=25", stdout=io.StringIO())
    call_command("vmss", "update", *arguments, "--set", f"{policy}.maxBatchInstancePercent=25", stdout=io.StringIO())
    (entry,) = AuditEntry.objects.all()  # the second PUT changed nothing: no entry
    assert (entry.action, entry.actor_name, entry.via) == ("scale_set.update", "olga", "cli")
    assert entry.summary == "Changed max_batch_instance_percent 20 → 25"
    assert entry.details["settings"] == {"max_batch_instance_percent": "20 → 25"}


def test_the_command_line_names_its_user_and_itself() -> None:
    scale_set = fleet()
    factories.user("olga", "operators")
    call_command(
        "vmss",
        "rolling-upgrade",
        "start",
        "--resource-group",
        scale_set.resource_group,
        "--name",
        scale_set.name,
        "--user",
        "olga",
        stdout=io.StringIO(),
    )
    assert entries(action="run.start") == [("run.start", "olga", "cli")]


def test_automatic_runs_are_recorded_as_the_platform() -> None:
    scale_set = fleet()
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
    assert entries(run_id=run.pk) == [("run.start", "platform", "platform")]


def test_a_refused_change_leaves_no_entry() -> None:
    scale_set = fleet()
    olga = client_of("olga", "operators")
    olga.post(reverse("upgrades:os-upgrade", args=[scale_set.pk]), CONFIRM)
    before = AuditEntry.objects.count()
    olga.post(reverse("upgrades:os-upgrade", args=[scale_set.pk]), CONFIRM)  # busy: refused (R-ONE-1)
    api = ApiClient(token_create(user=factories.user("pipeline", "operators"), name="ci")[1])
    refused = api.patch(arm_path(scale_set), {"properties": {"upgradePolicy": {"mode": "Sometimes"}}})
    assert refused.status_code == 400
    assert AuditEntry.objects.count() == before + 1  # only the token's issue
    assert UpgradeRun.objects.count() == 1


def test_a_change_rolled_back_takes_its_entry_with_it() -> None:
    from django.db import transaction

    scale_set = fleet()

    def start_then_fail() -> None:
        with transaction.atomic():
            services.os_upgrade_now(scale_set=scale_set)
            raise RuntimeError("the caller's transaction fails after the start")

    with pytest.raises(RuntimeError):
        start_then_fail()
    assert not AuditEntry.objects.exists()
    assert not UpgradeRun.objects.exists()
    services.os_upgrade_now(scale_set=scale_set)  # the same start, committed: recorded
    assert entries() == [("run.start", "platform", "platform")]


def test_tokens_issued_and_revoked_are_recorded_without_their_secret() -> None:
    user = factories.user("pipeline", "operators")
    token, plaintext = token_create(user=user, name="nightly")
    token_revoke(token=token)
    token_revoke(token=token)  # a second revoke changes nothing and records nothing
    recorded = list(AuditEntry.objects.order_by("pk").values_list("action", "summary", "details"))
    assert [action for action, _, _ in recorded] == ["token.create", "token.revoke"]
    assert token.prefix in recorded[0][1]
    assert plaintext.split("_", 2)[2] not in json.dumps(recorded)


def test_power_and_maintenance_name_the_instances() -> None:
    from fleet import services as fleet_services
    from fleet.drivers import PowerAction

    scale_set = fleet(3)
    with audit.acting(factories.user("olga", "operators"), audit.CONSOLE):
        fleet_services.instances_power(scale_set=scale_set, instance_ids=["1"], action=PowerAction.POWER_OFF)
        fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids="*", on=True)
    summaries = list(AuditEntry.objects.order_by("pk").values_list("action", "summary", "actor_name"))
    assert summaries == [
        ("instances.powerOff", "Powered off instance 1", "olga"),
        ("instances.maintenance", "Maintenance on: 3 instances (0, 1, 2)", "olga"),
    ]


def test_an_entry_outlives_its_user_and_its_scale_set() -> None:
    scale_set = fleet()
    olga = factories.user("olga", "operators")
    with audit.acting(olga, audit.CONSOLE):
        services.os_upgrade_now(scale_set=scale_set, actor=olga)
        services.run_cancel(scale_set=scale_set, actor=olga)
        UpgradeRun.objects.update(status="Cancelled")
        services.scale_set_delete(scale_set=ScaleSet.objects.get(pk=scale_set.pk))
    olga.delete()
    assert list(AuditEntry.objects.order_by("pk").values_list("action", "actor_name", "scale_set_name")) == [
        ("run.start", "olga", "web"),
        ("run.cancel", "olga", "web"),
        ("scale_set.delete", "olga", "web"),
    ]
    assert not AuditEntry.objects.exclude(scale_set=None).exists()


def test_the_audit_page_filters_and_pages_for_every_role(django_assert_num_queries) -> None:
    api_set = factories.scale_set("api", capacity=2, zones=[])
    web = fleet()
    with audit.acting(factories.user("olga", "operators"), audit.CONSOLE):
        services.os_upgrade_now(scale_set=web)
    with audit.acting(factories.user("omar", "operators"), audit.API):
        services.run_start(scale_set=api_set, kind=Kind.MANUAL, instance_ids="*")
    viewer = client_of("vera", "viewers")
    url = reverse("fleet:audit-log")
    with django_assert_num_queries(5):  # session, user, groups; count, page
        body = viewer.get(url, {"actor": "ol"}).content.decode()
    assert "olga" in body
    assert "omar" not in body
    body = viewer.get(url, {"scale_set": "api", "action": "run."}).content.decode()
    assert "omar" in body
    assert ">olga<" not in body
    assert viewer.get(url, {"page": "999"}).status_code == 200  # past the end: the last page


def test_the_audit_page_needs_a_login() -> None:
    response = Client().get(reverse("fleet:audit-log"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_staff_read_the_log_in_the_admin_and_nobody_edits_it() -> None:
    scale_set = fleet()
    services.os_upgrade_now(scale_set=scale_set)
    entry = AuditEntry.objects.get()
    staff = Client()
    staff.force_login(_staff("sam"))
    assert staff.get(reverse("admin:fleet_auditentry_changelist")).status_code == 200
    assert staff.get(reverse("admin:fleet_auditentry_add")).status_code == 403
    assert staff.post(reverse("admin:fleet_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    assert client_of("olga", "operators").get(reverse("admin:fleet_auditentry_changelist")).status_code == 302


def _staff(username: str):
    user = factories.user(username, "operators")
    user.is_staff = user.is_superuser = True
    user.save()
    return user
