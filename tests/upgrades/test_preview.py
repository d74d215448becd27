"""The plan preview (dry run): what an operator confirms is what runs (R-BATCH-1, R-BATCH-2,
R-GATE-1..3, R-ROLLBACK-1, R-MAN-1, R-MODE-1), its words, its query count, and the API.

The property test builds random fleets through the real services, previews an action, then
takes it, and compares the previewed batches with the UpgradeBatch rows the run wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import include, path
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api import plan_views
from fleet.models import FaultProfile, Instance, ScaleSet
from tests import factories
from upgrades import preview, services
from upgrades.errors import NothingToUpgrade, OperationNotAllowed
from upgrades.models import InstanceOutcome, Kind, UpgradeBatch, UpgradeRun
from upgrades.planner import Policy, batch_size_explained, exceeds, tolerated

pytestmark = pytest.mark.django_db

# The API route under test, as the one line api/urls.py gets (this module is the urlconf of
# the API tests below, so they run before that line is added).
PLAN_PATH = (
    "console/api/subscriptions/<str:subscription_id>/resourceGroups/<str:resource_group>/"
    "virtualMachineScaleSets/<str:name>/plan"
)
urlpatterns = [
    path(PLAN_PATH, plan_views.scale_set_plan, name="console-plan"),
    path("", include("config.urls")),
]


class _Rollback(Exception):
    """Leaves a hypothesis example's transaction: every example starts from an empty fleet."""


# --- the same plan: preview == the batches written (property test) ---------------------------

ACTIONS = ["manual_ud", "manual_fd", "manual_zone", "manual_ids", "rolling", "os", "model", "auto_os"]


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 60))
    zones = draw(st.sampled_from([[], ["1", "2"], ["1", "2", "3"]]))
    instances = []
    for _ in range(size):
        instances.append(
            {
                "update_domain": draw(st.integers(0, 4)),
                "zone": draw(st.sampled_from(zones)) if zones else "",
                "health": draw(st.sampled_from(["Healthy", "Healthy", "Healthy", "Unhealthy", "Unknown"])),
                "power": draw(st.sampled_from(["running", "running", "running", "stopped"])),
                "failed": draw(st.booleans()) and draw(st.booleans()),
                "protected": draw(st.integers(0, 9)) == 0,
                "on_new": draw(st.integers(0, 4)) == 0,
            }
        )
    return {
        "zones": zones,
        "instances": instances,
        "mode": draw(st.sampled_from(["Rolling", "Automatic"])),
        "policy": {
            "max_batch_instance_percent": draw(st.integers(5, 100)),
            "max_unhealthy_instance_percent": draw(st.integers(5, 100)),
            "max_unhealthy_upgraded_instance_percent": draw(st.integers(0, 100)),
            "enable_cross_zone_upgrade": draw(st.booleans()),
            "prioritize_unhealthy_instances": draw(st.booleans()),
        },
        "batch_size": draw(st.one_of(st.none(), st.integers(1, 25))),
        "pick": draw(st.integers(0, 10_000)),
    }


def _build(spec: dict[str, Any]) -> ScaleSet:
    count = len(spec["instances"])
    scale_set = factories.scale_set(capacity=count, zones=spec["zones"], upgrade_mode=spec["mode"])
    factories.publish(factories.NEW_VERSION, scale_set.region)
    ScaleSet.objects.filter(pk=scale_set.pk).update(**spec["policy"])
    for number, shape in enumerate(spec["instances"]):
        Instance.objects.filter(scale_set=scale_set, instance_id=number).update(
            update_domain=shape["update_domain"],
            zone=shape["zone"],
            health_state=shape["health"],
            power_state=shape["power"],
            provisioning_state="failed" if shape["failed"] else "succeeded",
            protected_from_scale_set_actions=shape["protected"],
            os_image=factories.NEW_KEY if shape["on_new"] else factories.OLD_KEY,
        )
    return ScaleSet.objects.select_related("region").get(pk=scale_set.pk)


def _preview_and_act(spec: dict[str, Any], scale_set: ScaleSet) -> tuple[Any, Any]:
    """(preview or the refusal it raised, run or the refusal the action raised)."""
    pick = spec["pick"]
    shapes = spec["instances"]
    action = spec["action"]
    if action == "manual_ud":
        target: dict[str, Any] = {"update_domain": shapes[pick % len(shapes)]["update_domain"]}
    elif action == "manual_fd":
        target = {"fault_domain": Instance.objects.filter(scale_set=scale_set).order_by("instance_id")[0].fault_domain}
    elif action == "manual_zone":
        target = {"zone": shapes[pick % len(shapes)]["zone"] or "1"}
    else:
        chosen = sorted({(pick * (n + 7)) % len(shapes) for n in range(1 + pick % 5)})
        target = {"instance_ids": chosen}

    def attempt(call: Any) -> Any:
        try:
            return call()
        except (OperationNotAllowed, Exception) as refusal:
            if type(refusal).__name__ not in ("ValidationError", "NothingToUpgrade", "ScaleSetBusy"):
                raise
            return refusal

    if action.startswith("manual"):
        shown = attempt(lambda: preview.manual_preview(scale_set=scale_set, what="them", **target))
        done = attempt(lambda: services.manual_upgrade(scale_set=scale_set, **target))
    elif action == "rolling":
        shown = attempt(lambda: preview.rolling_preview(scale_set=scale_set, batch_size=spec["batch_size"]))
        done = attempt(lambda: services.rolling_upgrade(scale_set=scale_set, batch_size=spec["batch_size"]))
    elif action == "os":
        shown = attempt(lambda: preview.os_upgrade_preview(scale_set=scale_set))
        done = attempt(lambda: services.os_upgrade_now(scale_set=scale_set))
    elif action == "model":
        changes = {"vm_size": "Standard_D8s_v3"}
        shown = attempt(lambda: preview.model_change_preview(scale_set=scale_set, changes=changes))
        done = attempt(lambda: services.update_model(scale_set=scale_set, changes=changes))
    else:  # an automatic OS upgrade: plan_for against run_start directly
        shown = attempt(lambda: services.plan_for(scale_set=scale_set, kind=Kind.AUTOMATIC_OS))
        done = attempt(lambda: services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS))
    return shown, done


def _written(run: UpgradeRun) -> tuple[list[tuple[int, str, list[int]]], dict[int, str]]:
    batches = []
    for batch in UpgradeBatch.objects.filter(run=run).order_by("index"):
        ids = list(
            InstanceOutcome.objects.filter(batch=batch)
            .order_by("instance_id_number")
            .values_list("instance_id_number", flat=True)
        )
        batches.append((batch.update_domain, batch.zone, ids))
    skipped = dict(
        InstanceOutcome.objects.filter(run=run, status="Skipped").values_list("instance_id_number", "reason")
    )
    return batches, skipped


@pytest.mark.parametrize("action", ACTIONS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=fleets())
def test_r_batch_2_the_previewed_batches_are_exactly_the_batches_the_run_writes(
    action: str, spec: dict[str, Any]
) -> None:
    spec = {**spec, "action": action}
    try:
        with transaction.atomic():
            scale_set = _build(spec)
            shown, done = _preview_and_act(spec, scale_set)
            if isinstance(shown, Exception) or isinstance(done, Exception):
                # A refusal before any plan is the action's own refusal, word for word.
                assert type(shown) is type(done), (shown, done)
                assert str(shown) == str(done)
                event(f"refused: {type(done).__name__}")
                raise _Rollback
            event(f"planned {spec['action']}")
            planned = shown.planned if isinstance(shown, preview.Preview) else shown
            batches = [(b.update_domain, b.zone, list(b.instance_ids)) for b in planned.plan.batches]
            written, skipped = _written(done)
            assert batches == written  # ids per batch, order, update domain and zone
            assert planned.plan.skipped == skipped
            assert planned.policy.__dict__ == done.policy
            assert planned.target.key == done.target_image
            if isinstance(shown, preview.Preview):
                assert [list(b.instance_ids) for b in shown.batches] == [ids for _, _, ids in written]
                assert shown.instance_count == done.pending_count
            raise _Rollback
    except _Rollback:
        pass


# --- words --------------------------------------------------------------------------------


def outdated(capacity: int, **model: Any) -> ScaleSet:
    scale_set = factories.outdated_scale_set(capacity=capacity, **model)
    return ScaleSet.objects.select_related("region").get(pk=scale_set.pk)


def test_r_batch_1_the_rounding_is_said_as_the_planner_rounds() -> None:
    assert batch_size_explained(23, Policy()) == "20 % of 23 instances = 4.6 → 4 per batch"
    assert batch_size_explained(10, Policy(max_batch_instance_percent=25)) == "25 % of 10 instances = 2.5 → 2 per batch"
    assert batch_size_explained(5, Policy()) == "5 instances (5 or fewer): 1 per batch"
    assert batch_size_explained(6, Policy(max_batch_instance_percent=5)) == (
        "5 % of 6 instances = 0.3 → rounded down to 0, at least 1: 1 per batch"
    )
    assert batch_size_explained(40, Policy(batch_size=3)) == "3 per batch (chosen by the operator)"
    assert batch_size_explained(40, Policy(all_at_once=True)) == "all 40 at once (one batch)"


@pytest.mark.parametrize("total", [0, 1, 4, 20, 23, 47, 100, 1000])
@pytest.mark.parametrize("percent", [0, 5, 20, 33, 50, 100])
def test_r_gate_tolerated_is_the_largest_count_that_does_not_stop_the_run(total: int, percent: int) -> None:
    allowed = tolerated(total, percent)
    assert not exceeds(allowed, total, percent)
    assert exceeds(allowed + 1, total, percent) or total == 0 or allowed + 1 > total


def test_r_gate_the_preview_states_both_gates_as_instance_counts() -> None:
    scale_set = outdated(23)
    Instance.objects.filter(scale_set=scale_set, instance_id__in=[3, 4]).update(health_state="Unhealthy")
    shown = preview.os_upgrade_preview(scale_set=scale_set)
    assert shown.rounding == "20 % of 23 instances = 4.6 → 4 per batch"
    before, after = shown.gates[:2]
    assert before.startswith("Stops before a batch if more than 4 of the 23 instances are unhealthy")
    assert "2 are unhealthy now." in before
    # 23 instances over 5 update domains (5, 5, 5, 4, 4): batches of 4 + 1, 4 + 1, 4 + 1, 4, 4.
    assert "more than 0 of the 4 of the first batch" in after
    assert "more than 4 of the 23 upgraded at the end" in after
    assert shown.blast_radius.startswith("OS upgrade (rolling): 8 batches of at most 4, 23 instances, gated on health")
    assert shown.rollback == (
        "No rollback: an OS upgrade started by hand leaves failed instances Failed (R-ROLLBACK-1)."
    )


def test_r_man_1_an_update_domain_preview_says_all_at_once_and_no_gate() -> None:
    scale_set = outdated(20)
    shown = preview.manual_preview(scale_set=scale_set, update_domain=2, what="update domain 2")
    assert shown.blast_radius == "Upgrade update domain 2: 4 instances, all at once, no health gate"
    assert [b.instance_ids for b in shown.batches] == [(2, 7, 12, 17)]
    assert shown.gates == ("No health gate: every instance is upgraded at once and the run does not stop on health.",)
    assert not UpgradeRun.objects.exists()  # a preview writes nothing


def test_skipped_instances_are_listed_with_why() -> None:
    scale_set = outdated(10)
    Instance.objects.filter(scale_set=scale_set, instance_id__in=[1, 2]).update(os_image=factories.NEW_KEY)
    Instance.objects.filter(scale_set=scale_set, instance_id=5).update(protected_from_scale_set_actions=True)
    shown = preview.os_upgrade_preview(scale_set=scale_set)
    assert shown.skipped == (("1–2", "already on the target"), ("5", "protected from scale-set actions"))
    assert "3 instances skipped" in shown.blast_radius


@pytest.mark.parametrize(
    ("kind", "rollback_on_breach", "words"),
    [
        (Kind.AUTOMATIC_OS, False, "Rolls back: an instance not healthy"),
        (Kind.MANUAL_OS, True, "No rollback: an OS upgrade started by hand"),
        (Kind.ROLLING_MODEL, True, "Rolls back only on a policy breach"),
        (Kind.ROLLING_MODEL, False, "No rollback: failed instances stay Failed"),
    ],
)
def test_r_rollback_1_the_preview_says_whether_it_would_roll_back(
    kind: str, rollback_on_breach: bool, words: str
) -> None:
    scale_set = outdated(10, rollback_failed_instances_on_policy_breach=rollback_on_breach)
    planned = services.plan_for(scale_set=scale_set, kind=kind)
    shown = preview.preview_of(planned, action="rolling", title="Plan")
    assert shown.rollback.startswith(words)


def test_the_eta_is_simulated_time_from_the_policy_and_the_drivers_durations(settings: Any) -> None:
    settings.TIME_SCALE = 30.0
    settings.SIMULATOR_DURATIONS = {}
    scale_set = outdated(10, pause_time_between_batches="PT1M")
    shown = preview.os_upgrade_preview(scale_set=scale_set)
    # reimage 30 + boot 45 + one extension 10, then the first healthy answer (5 s × 1 probe);
    # 5 batches and 4 pauses of 60 s.
    assert shown.eta_seconds == 5 * (30 + 45 + 10 + 5) + 4 * 60
    assert shown.eta.startswith("about 11 min 30 s if every instance becomes healthy; up to ")
    assert "TIME_SCALE is 30: 11 min 30 s simulated passes in 23 s of real time." in shown.time_note


def test_a_model_change_in_manual_mode_has_no_plan_and_in_rolling_mode_plans_the_new_model() -> None:
    manual = outdated(4, upgrade_mode="Manual")
    assert preview.model_change_preview(scale_set=manual, changes={"vm_size": "Standard_D8s_v3"}) is None
    rolling = outdated(10, name="rolling", upgrade_mode="Rolling")
    shown = preview.model_change_preview(scale_set=rolling, changes={"vm_size": "Standard_D8s_v3"})
    assert shown is not None
    assert shown.planned.scale_set.model_version == 2  # planned on the changed model …
    rolling.refresh_from_db()
    assert (rolling.vm_size, rolling.model_version) == ("Standard_D2s_v3", 1)  # … which is not saved


def test_r_one_1_a_busy_set_is_refused_before_any_plan() -> None:
    scale_set = outdated(10)
    services.os_upgrade_now(scale_set=scale_set)
    with pytest.raises(OperationNotAllowed, match="already rolling forward"):
        preview.rolling_preview(scale_set=scale_set)


def test_nothing_to_upgrade_is_refused_before_any_plan() -> None:
    scale_set = factories.scale_set(capacity=3, zones=[])
    with pytest.raises(NothingToUpgrade):
        preview.os_upgrade_preview(scale_set=scale_set)


# --- query counts ------------------------------------------------------------------------------


def operator_client() -> Client:
    client = Client()
    client.force_login(factories.user("olga", "operators"))
    return client


def test_the_preview_costs_the_same_queries_for_10_and_100_instances(django_assert_num_queries: Any) -> None:
    small = factories.scale_set("small", capacity=10, zones=[], extensions=[factories.APP_HEALTH_HTTP])
    large = factories.scale_set("large", capacity=100, zones=[], extensions=[factories.APP_HEALTH_HTTP])
    factories.publish(factories.NEW_VERSION, small.region)  # both are now one version behind
    client = operator_client()
    # session, user, groups (operator_required), the set, busy?, target image, extensions
    # (policy), instances, fault profile, extensions (step times), groups (the template's
    # user_is_operator)
    for scale_set in (small, large):
        with django_assert_num_queries(11):
            response = client.post(f"/scale-sets/{scale_set.pk}/os-upgrade/", {"preview": "fragment"})
        assert response.status_code == 200
    for scale_set in (small, large):
        with django_assert_num_queries(13):  # + the chosen update domain's ids, and those instances
            response = client.post(
                f"/scale-sets/{scale_set.pk}/manual-upgrade/",
                {"manual-scope": "update_domain", "manual-update_domain": "1", "preview": "fragment"},
            )
        assert response.status_code == 200


# --- the API ---------------------------------------------------------------------------------

API_VERSION = "2024-07-01"


def plan_url(scale_set: ScaleSet) -> str:
    return (
        f"/console/api/subscriptions/{scale_set.subscription_id}/resourceGroups/{scale_set.resource_group}/"
        f"virtualMachineScaleSets/{scale_set.name}/plan?api-version={API_VERSION}"
    )


def api_post(client: Client, scale_set: ScaleSet, body: Any) -> Any:
    return client.post(plan_url(scale_set), data=json.dumps(body), content_type="application/json")


@pytest.mark.urls(__name__)
def test_the_api_plans_an_os_upgrade_with_its_what_if_and_writes_nothing() -> None:
    scale_set = outdated(20)
    client = Client()
    client.force_login(factories.user("vera", "viewers"))  # a read: viewers may plan
    response = api_post(client, scale_set, {"action": "osRollingUpgrade", "failureShare": 0.5})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["kind"] == Kind.MANUAL_OS
    assert body["instanceCount"] == 20
    assert [b["updateDomain"] for b in body["batches"]] == [0, 1, 2, 3, 4]  # 20 % of 20 = 4 per batch
    assert body["batches"][0]["instanceIds"] == ["0", "5", "10", "15"]
    assert body["whatIf"]["failureShare"] == 0.5
    assert body["whatIf"]["stopCode"] == "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"
    assert not UpgradeRun.objects.exists()


@pytest.mark.urls(__name__)
def test_the_api_plans_a_manual_upgrade_of_an_update_domain_as_the_action_would_run_it() -> None:
    scale_set = outdated(20)
    client = operator_client()
    body = api_post(client, scale_set, {"action": "manualupgrade", "updateDomain": 3}).json()
    assert body["blastRadius"] == "Upgrade update domain 3: 4 instances, all at once, no health gate"
    run = services.manual_upgrade(scale_set=scale_set, update_domain=3)
    written, _ = _written(run)
    assert [[str(i) for i in ids] for _, _, ids in written] == [b["instanceIds"] for b in body["batches"]]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("body", "status", "code", "target"),
    [
        ({"action": "explode"}, 400, "InvalidParameter", "action"),
        ({}, 400, "InvalidParameter", "action"),
        ({"action": "manualupgrade"}, 400, "InvalidParameter", "instanceIds"),
        ({"action": "manualupgrade", "updateDomain": 1, "zone": "1"}, 400, "InvalidParameter", "instanceIds"),
        ({"action": "manualupgrade", "updateDomain": 1.5}, 400, "InvalidParameter", "updateDomain"),
        ({"action": "manualupgrade", "instanceIds": [1, 99]}, 400, "InvalidParameter", "instanceIds"),
        ({"action": "rolling", "batchSize": 0}, 400, "InvalidParameter", "batchSize"),
        ({"action": "rolling", "failureShare": 1.5}, 400, "InvalidParameter", "failureShare"),
        ({"action": "rolling", "bootSeconds": "slow"}, 400, "InvalidParameter", "bootSeconds"),
        ([1, 2], 400, "InvalidRequestContent", "$"),
    ],
)
def test_the_api_refuses_bad_plan_requests_clearly(body: Any, status: int, code: str, target: str) -> None:
    scale_set = outdated(6)
    response = api_post(operator_client(), scale_set, body)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert (error["code"], error.get("target")) == (code, target), error


@pytest.mark.urls(__name__)
def test_r_one_1_the_api_plan_of_a_busy_set_is_a_409() -> None:
    scale_set = outdated(6)
    services.os_upgrade_now(scale_set=scale_set)
    response = api_post(operator_client(), scale_set, {"action": "rolling"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "OperationNotAllowed"


def test_the_default_what_if_takes_the_targets_fault_profile() -> None:
    scale_set = outdated(10)
    FaultProfile.objects.create(target=factories.NEW_KEY, never_healthy_share=0.3, boot_seconds=90)
    shown = preview.os_upgrade_preview(scale_set=scale_set)
    assert (shown.assumption.failure_share, shown.assumption.boot_seconds) == (0.3, 90)
