"""The engine, rule by rule (SPEC 3.2, 3.3), driven exactly in simulated time."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import clock
from fleet import services as fleet_services
from fleet.drivers import PowerAction
from fleet.models import DataDisk, Instance, ScaleSet
from fleet.selectors import target_image
from tests import factories
from upgrades import engine, services
from upgrades.errors import OperationNotAllowed
from upgrades.models import (
    BatchStatus,
    InstanceOutcome,
    Kind,
    LastAction,
    OutcomeStatus,
    RunEvent,
    RunStatus,
    StartedBy,
    UpgradeRun,
)
from upgrades.planner import GATE_AFTER_BATCH, GATE_BEFORE_FIRST, GATE_BEFORE_LATER

pytestmark = pytest.mark.django_db

NEW_KEY = factories.NEW_KEY
OLD_KEY = factories.OLD_KEY


def images(scale_set: ScaleSet) -> dict[int, str]:
    return dict(scale_set.instances.values_list("instance_id", "os_image"))


def outcome_counts(run: UpgradeRun) -> dict[str, int]:
    from django.db.models import Count

    return dict(run.outcomes.values_list("status").annotate(n=Count("pk")).order_by())


def counts_add_up(run: UpgradeRun) -> None:
    """R-LOOP-1, checked after every step: progress counts always sum to the targeted count."""
    targeted = run.outcomes.exclude(status=OutcomeStatus.SKIPPED).count()
    assert run.successful_count + run.failed_count + run.in_progress_count + run.pending_count == targeted


# --- R-BATCH, R-UPG, R-HEALTH, R-LOOP -------------------------------------------------------


def test_r_loop_1_a_good_image_completes_with_every_instance_on_the_target(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(100)
    run = services.os_upgrade_now(scale_set=scale_set)
    run = drive(run, check=counts_add_up)
    assert run.status == RunStatus.COMPLETED
    assert (run.successful_count, run.failed_count, run.pending_count, run.in_progress_count) == (100, 0, 0, 0)
    assert set(images(scale_set).values()) == {NEW_KEY}
    assert run.ended_at is not None


def test_r_batch_1_and_2_batches_of_20_within_update_domains_in_ascending_order(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(100)
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    batches = list(run.batches.order_by("index"))
    assert [(b.update_domain, b.size, b.status) for b in batches] == [
        (ud, 20, BatchStatus.SUCCEEDED) for ud in range(5)
    ]
    domains = dict(scale_set.instances.values_list("pk", "update_domain"))
    for batch in batches:
        assert {domains[o.instance_id] for o in batch.outcomes.all()} == {batch.update_domain}
    started = [b.started_at for b in batches]
    assert started == sorted(started)


def test_r_upg_1_new_os_disk_old_one_kept_data_disks_untouched(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10)
    before = {i.pk: i.os_disk for i in scale_set.instances.all()}
    checksums = dict(DataDisk.objects.filter(instance__scale_set=scale_set).values_list("pk", "checksum"))
    drive(services.os_upgrade_now(scale_set=scale_set))
    for instance in scale_set.instances.all():
        assert instance.previous_os_disk == before[instance.pk]
        assert instance.os_disk != before[instance.pk]
        assert (instance.os_image, instance.previous_os_image) == (NEW_KEY, OLD_KEY)
    for disk in DataDisk.objects.filter(instance__scale_set=scale_set):
        assert disk.checksum == checksums[disk.pk] == DataDisk.checksum_of(disk.content_seed)


def test_r_batch_2_instances_already_on_target_are_skipped_not_upgraded(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10)
    first = drive(services.manual_upgrade(scale_set=scale_set, instance_ids=[0, 1]))
    assert first.status == RunStatus.COMPLETED
    disks = dict(scale_set.instances.values_list("instance_id", "os_disk"))
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    assert run.skipped_count == 2
    assert run.successful_count == 8
    assert {o.instance_id_number for o in run.outcomes.filter(status=OutcomeStatus.SKIPPED)} == {0, 1}
    after = dict(scale_set.instances.values_list("instance_id", "os_disk"))
    assert after[0] == disks[0]
    assert after[1] == disks[1]


def test_r_batch_2_protected_instances_are_skipped(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10)
    Instance.objects.filter(scale_set=scale_set, instance_id=4).update(protected_from_scale_set_actions=True)
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    assert run.outcomes.get(instance_id_number=4).status == OutcomeStatus.SKIPPED
    assert images(scale_set)[4] == OLD_KEY


def test_r_health_1_a_batch_waits_for_health_and_healthy_instances_succeed(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(6)
    run = services.os_upgrade_now(scale_set=scale_set)
    run = drive(run, until=lambda r: r.phase == "health_wait")
    waiting = run.outcomes.get(status=OutcomeStatus.IN_PROGRESS)
    assert Instance.objects.get(pk=waiting.instance_id).health_state in ("Initializing", "Healthy")
    run = drive(run)
    assert run.status == RunStatus.COMPLETED
    assert set(run.outcomes.values_list("status", flat=True)) == {OutcomeStatus.SUCCEEDED}


def test_r_health_1_an_instance_not_healthy_by_the_end_of_the_wait_fails(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, bad_share=0.1, max_unhealthy_upgraded_instance_percent=100)
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    failed = run.outcomes.get(status=OutcomeStatus.FAILED)
    assert "Application never reported healthy" in failed.reason
    assert run.status == RunStatus.COMPLETED
    assert (run.successful_count, run.failed_count) == (9, 1)


def test_r_pause_1_the_pause_is_waited_between_batches(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, pause_time_between_batches="PT2M")
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    batches = list(run.batches.order_by("index"))
    assert len(batches) == 5
    for previous, following in zip(batches, batches[1:], strict=False):
        assert following.started_at - previous.ended_at >= dt.timedelta(minutes=2)
    assert run.ended_at == batches[-1].ended_at  # no pause after the last batch


# --- gates --------------------------------------------------------------------------------


def test_r_gate_1_too_many_unhealthy_before_the_start_faults_without_touching_anything(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0, 1, 2, 3, 4], on=True)  # 25%
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_BEFORE_FIRST)
    assert "5 of 20 instances are unhealthy" in run.error_message
    assert set(images(scale_set).values()) == {OLD_KEY}
    assert run.pending_count == 20
    assert set(run.batches.values_list("status", flat=True)) == {BatchStatus.NOT_STARTED}


def test_r_gate_1_exactly_the_percent_unhealthy_is_allowed(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[1, 2, 3, 4], on=True)  # 20%
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.current_batch >= 0)
    assert run.status == RunStatus.ROLLING_FORWARD


def test_r_gate_2_maintenance_mid_run_stops_after_the_current_batch(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "health_wait")
    later_domains = [n for n in range(20) if n % 5 in (3, 4)]  # 8 of 20, none in the batch in flight
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=later_domains, on=True)
    run = drive(run)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_BEFORE_LATER)
    assert run.batches.get(index=0).status == BatchStatus.SUCCEEDED
    assert run.batches.filter(status=BatchStatus.NOT_STARTED).count() == run.batch_count - 1
    assert run.successful_count == run.batches.get(index=0).size


def test_r_gate_3_a_manual_trigger_with_a_bad_image_faults_and_failed_instances_stay_failed(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(100, bad_share=0.3)
    run = drive(services.os_upgrade_now(scale_set=scale_set), check=counts_add_up)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_AFTER_BATCH)
    failed = list(run.outcomes.filter(status=OutcomeStatus.FAILED))
    assert failed
    assert run.rolled_back_count == 0
    for outcome in failed:  # R-ROLLBACK-1: a manual trigger never rolls back
        assert Instance.objects.get(pk=outcome.instance_id).os_image == NEW_KEY
    assert run.pending_count > 0  # later batches never started


def test_r_rollback_1_an_automatic_upgrade_rolls_failed_instances_back(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(100, bad_share=0.3)
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
    run = drive(run, check=counts_add_up)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_AFTER_BATCH)
    rolled_back = list(run.outcomes.filter(status=OutcomeStatus.ROLLED_BACK))
    assert rolled_back
    assert run.rolled_back_count == len(rolled_back)
    assert run.rollback_failed_count == 0
    for outcome in rolled_back:
        instance = Instance.objects.get(pk=outcome.instance_id)
        assert instance.os_image == OLD_KEY
        assert instance.health_state == "Healthy"
        assert instance.last_upgrade_outcome == "RolledBack"


def test_r_rollback_1_disable_automatic_rollback_keeps_failed_instances(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20, bad_share=0.3, disable_automatic_rollback=True)
    run = drive(services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS))
    assert run.rolled_back_count == 0
    assert run.outcomes.filter(status=OutcomeStatus.FAILED).exists()


def test_r_rollback_1_a_rolling_model_upgrade_rolls_back_only_on_breach_when_asked(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20, bad_share=0.3, rollback_failed_instances_on_policy_breach=True)
    run = drive(services.rolling_upgrade(scale_set=scale_set))
    assert run.error_code == GATE_AFTER_BATCH
    assert run.rolled_back_count > 0


# --- one run, cancel ------------------------------------------------------------------------


def test_r_one_1_a_second_start_while_one_runs_is_refused(frozen_clock):
    scale_set = factories.outdated_scale_set(10)
    services.os_upgrade_now(scale_set=scale_set)
    with pytest.raises(OperationNotAllowed, match="already rolling forward"):
        services.os_upgrade_now(scale_set=scale_set)
    assert UpgradeRun.objects.filter(scale_set=scale_set).count() == 1


def test_r_one_1_cancelling_when_none_runs_says_so(frozen_clock):
    scale_set = factories.outdated_scale_set(3)
    with pytest.raises(OperationNotAllowed) as caught:
        services.run_cancel(scale_set=scale_set)
    assert caught.value.message == "There is no ongoing Rolling Upgrade to cancel."


def test_r_cancel_1_the_batch_in_flight_finishes_and_no_new_batch_starts(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "upgrading")
    services.run_cancel(scale_set=scale_set)
    run = drive(run)
    assert run.status == RunStatus.CANCELLED
    assert run.last_action == LastAction.CANCEL
    first = run.batches.get(index=0)
    assert first.status == BatchStatus.SUCCEEDED
    assert run.successful_count == first.size
    assert run.in_progress_count == 0
    assert run.pending_count == 20 - first.size
    again = drive(services.os_upgrade_now(scale_set=scale_set))
    assert again.pk != run.pk
    assert again.status == RunStatus.COMPLETED
    assert again.skipped_count == first.size


def test_r_cancel_1_cancelling_during_a_pause_ends_at_once(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, pause_time_between_batches="PT1H")
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "pause")
    services.run_cancel(scale_set=scale_set)
    engine.run_advance(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


# --- modes and manual upgrades ------------------------------------------------------------


def test_r_man_1_upgrading_an_update_domain_touches_only_its_instances_at_once(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(20)
    scale_set.model_version += 1
    scale_set.save()
    run = drive(services.manual_upgrade(scale_set=scale_set, update_domain=2))
    assert run.kind == Kind.MANUAL
    assert run.batch_count == 1
    upgraded = set(scale_set.instances.filter(os_image=NEW_KEY).values_list("update_domain", flat=True))
    assert upgraded == {2}
    on_model = scale_set.instances.filter(model_version=scale_set.model_version)
    assert set(on_model.values_list("instance_id", flat=True)) == {2, 7, 12, 17}


def test_r_man_1_unknown_instance_ids_are_refused_by_name(frozen_clock):
    scale_set = factories.outdated_scale_set(3)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="has no instance 7"):
        services.manual_upgrade(scale_set=scale_set, instance_ids=[1, 7])
    assert not UpgradeRun.objects.exists()


def test_r_man_2_reimage_keeps_data_disks(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(3)
    checksums = list(DataDisk.objects.filter(instance__scale_set=scale_set).values_list("checksum", flat=True))
    services.reimage(scale_set=scale_set, instance_ids=[0])
    from fleet.drivers import simulator

    frozen_clock.advance(3600)
    simulator.advance(clock.now())
    instance = scale_set.instances.get(instance_id=0)
    assert instance.os_disk.endswith("_2")
    assert instance.health_state == "Healthy"
    assert list(DataDisk.objects.filter(instance__scale_set=scale_set).values_list("checksum", flat=True)) == checksums


def test_r_mode_1_manual_mode_waits_for_an_operator(frozen_clock):
    scale_set = factories.outdated_scale_set(5, upgrade_mode="Manual")
    run = services.update_model(scale_set=scale_set, changes={"vm_size": "Standard_D4s_v3"})
    assert run is None
    scale_set.refresh_from_db()
    assert scale_set.model_version == 2
    assert not scale_set.instances.filter(model_version=2).exists()


def test_r_mode_1_rolling_mode_starts_a_rolling_model_upgrade(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, upgrade_mode="Rolling")
    run = services.update_model(scale_set=scale_set, changes={"vm_size": "Standard_D4s_v3"})
    assert run is not None
    assert run.kind == Kind.ROLLING_MODEL
    assert run.batch_count == 5
    drive(run)
    assert scale_set.instances.filter(model_version=2).count() == 10


def test_r_mode_1_automatic_mode_upgrades_every_instance_at_once(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, upgrade_mode="Automatic")
    run = services.update_model(scale_set=scale_set, changes={"image_version": factories.NEW_VERSION})
    assert run is not None
    assert run.batch_count == 1
    drive(run)
    assert set(images(scale_set).values()) == {NEW_KEY}


def test_r_mode_1_a_bad_model_change_changes_nothing(frozen_clock):
    scale_set = factories.outdated_scale_set(5, upgrade_mode="Rolling")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.update_model(scale_set=scale_set, changes={"image_version": "9.9.9"})
    scale_set.refresh_from_db()
    assert (scale_set.model_version, scale_set.image_version) == (1, "latest")
    assert not UpgradeRun.objects.exists()


# --- R-CRED-1 ---------------------------------------------------------------------------------


def test_r_cred_1_an_expired_credential_fails_the_first_batch_and_recovery_brings_all_back(frozen_clock, drive):
    key_vault = factories.key_vault(clock.now() - dt.timedelta(days=1))
    scale_set = factories.outdated_scale_set(
        10, upgrade_mode="Manual", extensions=[factories.APP_HEALTH_HTTP, key_vault]
    )
    run = drive(services.rolling_upgrade(scale_set=scale_set))
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_AFTER_BATCH)
    first = run.batches.get(index=0)
    assert first.status == BatchStatus.FAILED
    assert all("credential" in o.reason for o in first.outcomes.all())

    # Recovery: a fresh credential in the model, then a manual upgrade of every instance.
    fresh = (clock.now() + dt.timedelta(days=365)).isoformat()
    scale_set.extensions.filter(name="KeyVault").update(
        protected_settings={"credential": {"secret": "n3w", "expiresOn": fresh}}
    )
    scale_set.model_version += 1
    scale_set.save()
    recovery = drive(services.manual_upgrade(scale_set=scale_set, instance_ids="*"))
    assert recovery.status == RunStatus.COMPLETED
    assert recovery.successful_count == 10
    assert all(i.health_state == "Healthy" and i.provisioning_state == "succeeded" for i in scale_set.instances.all())


# --- the event log and query bounds --------------------------------------------------------


def test_the_event_log_records_every_instance_change(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, bad_share=0.2)
    run = drive(services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS))
    started = run.outcomes.exclude(status__in=[OutcomeStatus.SKIPPED, OutcomeStatus.PENDING])
    assert started.exists()
    for outcome in started:
        trail = list(
            RunEvent.objects.filter(run=run, instance_id_number=outcome.instance_id_number).values_list(
                "to_state", flat=True
            )
        )
        assert trail[-1] == outcome.status
        assert trail[0] == OutcomeStatus.IN_PROGRESS


def test_a_tick_costs_the_same_queries_for_batches_of_10_and_200(frozen_clock, settings):
    settings.TIME_SCALE = 1.0
    from fleet.drivers import simulator

    def queries_of_first_ticks(capacity: int) -> list[int]:
        scale_set = factories.outdated_scale_set(
            capacity, name=f"q{capacity}", where=factories.region(f"region{capacity}")
        )
        run = services.os_upgrade_now(scale_set=scale_set)
        counts = []
        for _ in range(3):  # start the batch + dispatch, then the two polls of the upgrade
            with CaptureQueriesContext(connection) as queries:
                engine.run_advance(run.pk)
            counts.append(len(queries))
            frozen_clock.advance(1)
        frozen_clock.advance(3600)
        simulator.advance(clock.now())
        for _ in range(2):  # the end of the upgrade and the health verdict
            with CaptureQueriesContext(connection) as queries:
                engine.run_advance(run.pk)
            counts.append(len(queries))
        return counts

    small, large = queries_of_first_ticks(50), queries_of_first_ticks(1000)
    assert small == large
    # 42: a tick of a run watching its batch first lets the driver apply what fell due (two
    # queries when nothing did; engine._driver_catch_up, found by tests/faults).
    assert max(large) < 42


def test_a_run_with_nothing_to_do_is_refused(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(3)
    drive(services.os_upgrade_now(scale_set=scale_set))
    with pytest.raises(OperationNotAllowed, match="Nothing to upgrade"):
        services.os_upgrade_now(scale_set=scale_set)


def test_target_image_is_resolved_at_start(frozen_clock):
    scale_set = factories.outdated_scale_set(3)
    run = services.os_upgrade_now(scale_set=scale_set)
    assert run.target_image == target_image(scale_set).key == NEW_KEY
    assert InstanceOutcome.objects.filter(run=run, to_image=NEW_KEY).count() == 3


def test_power_actions_during_a_run_count_against_the_set(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10)
    fleet_services.instances_power(scale_set=scale_set, instance_ids=[0, 1, 2], action=PowerAction.POWER_OFF)
    run = drive(services.os_upgrade_now(scale_set=scale_set))
    assert run.error_code == GATE_BEFORE_FIRST


def test_a_refused_model_change_leaves_the_callers_object_unchanged(frozen_clock):
    scale_set = factories.outdated_scale_set(3, upgrade_mode="Rolling")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.update_model(scale_set=scale_set, changes={"image_version": "9.9.9"})
    assert scale_set.image_version == "latest"


def test_an_instance_the_driver_never_finishes_fails_after_the_upgrade_timeout(frozen_clock, drive, settings):
    settings.UPGRADE_TIMEOUT_SECONDS = 600
    scale_set = factories.outdated_scale_set(10, max_unhealthy_upgraded_instance_percent=100)
    run = drive(services.os_upgrade_now(scale_set=scale_set), until=lambda r: r.phase == "upgrading")
    stuck = run.outcomes.filter(status=OutcomeStatus.IN_PROGRESS).first()
    # The driver loses the instance mid-reimage: its plan is gone, it stays "updating".
    Instance.objects.filter(pk=stuck.instance_id).update(driver_plan=[], driver_due_at=None)
    started = clock.now()
    run = drive(run)
    outcome = run.outcomes.get(pk=stuck.pk)
    assert outcome.status == OutcomeStatus.FAILED
    assert outcome.reason == "The upgrade did not finish within PT10M."
    assert outcome.ended_at - started >= dt.timedelta(seconds=600)
    assert run.status == RunStatus.COMPLETED
    assert run.successful_count == 9


def test_a_rolled_back_instance_keeps_the_reason_it_failed(frozen_clock, drive):
    scale_set = factories.outdated_scale_set(10, bad_share=0.1, max_unhealthy_upgraded_instance_percent=100)
    run = drive(services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS))
    rolled_back = run.outcomes.get(status=OutcomeStatus.ROLLED_BACK)
    assert "never reported healthy" in rolled_back.reason
