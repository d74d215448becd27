"""GET rollingUpgrades/latest and GET osUpgradeHistory (SPEC 7, R-HIST-1), read through the API
after real runs driven in simulated time."""

from __future__ import annotations

import datetime as dt

import pytest

from fleet import clock
from tests import factories
from tests.api.conftest import ApiClient
from upgrades import services
from upgrades.models import StartedBy, UpgradeRun

pytestmark = pytest.mark.django_db

GROUP = f"/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test"
SETS = f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets"


def test_latest_rolling_upgrade_has_the_arm_shape(viewer_api: ApiClient, drive) -> None:
    scale_set = factories.outdated_scale_set(10, bad_share=0.5)
    run = drive(services.os_upgrade_now(scale_set=scale_set))

    response = viewer_api.get(f"{SETS}/web/rollingUpgrades/latest")
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"
    assert body["location"] == "eastus"
    properties = body["properties"]
    assert properties["policy"]["maxBatchInstancePercent"] == 20
    assert properties["policy"]["pauseTimeBetweenBatches"] == "PT0S"
    assert properties["runningStatus"]["code"] == run.status == "Faulted"
    assert properties["runningStatus"]["lastAction"] == "Start"
    progress = properties["progress"]
    assert sum(progress.values()) == run.targeted_count == 10  # R-LOOP-1
    assert progress["failedInstanceCount"] == run.failed_count > 0
    assert properties["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"


def test_latest_rolling_upgrade_is_404_when_none_ran(viewer_api: ApiClient) -> None:
    factories.outdated_scale_set(4)
    response = viewer_api.get(f"{SETS}/web/rollingUpgrades/latest")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_os_upgrade_history_is_the_last_five_of_two_months_newest_first_r_hist_1(
    viewer_api: ApiClient, drive, frozen_clock
) -> None:
    scale_set = factories.outdated_scale_set(2)
    runs = []
    for n in range(7):
        run = drive(services.os_upgrade_now(scale_set=scale_set))
        runs.append(run)
        # back on the old image for the next attempt
        scale_set.instances.update(os_image=factories.OLD_KEY)
        frozen_clock.advance(86400 * (70 if n == 0 else 1))  # the first is older than two months
    UpgradeRun.objects.filter(pk=runs[-1].pk).update(started_by=StartedBy.PLATFORM)

    value = viewer_api.get(f"{SETS}/web/osUpgradeHistory").json()["value"]
    assert len(value) == 5
    starts = [entry["properties"]["runningStatus"]["startTime"] for entry in value]
    assert starts == sorted(starts, reverse=True)
    expected = [r.started_at for r in sorted(runs[1:], key=lambda r: r.started_at, reverse=True)[:5]]
    assert [dt.datetime.fromisoformat(s) for s in starts] == expected
    newest = value[0]
    assert newest["type"] == "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"
    assert newest["properties"]["startedBy"] == "Platform"
    assert newest["properties"]["targetImageReference"] == {
        "publisher": "Canonical",
        "offer": "UbuntuServer",
        "sku": "18.04-LTS",
        "version": factories.NEW_VERSION,
    }
    assert newest["properties"]["rollbackInfo"] == {
        "successfullyRolledbackInstanceCount": 0,
        "failedRolledbackInstanceCount": 0,
    }
    assert newest["properties"]["runningStatus"]["code"] == "Completed"
    ended = dt.datetime.fromisoformat(newest["properties"]["runningStatus"]["endTime"])
    assert runs[-1].started_at < ended < clock.now()


@pytest.mark.parametrize("path", ["rollingUpgrades/latest", "osUpgradeHistory"])
def test_upgrade_reads_cost_a_fixed_number_of_queries(
    viewer_api: ApiClient, drive, path: str, django_assert_max_num_queries
) -> None:
    scale_set = factories.outdated_scale_set(12)
    drive(services.os_upgrade_now(scale_set=scale_set))
    viewer_api.get(f"{SETS}/web/{path}")  # the token's last use is recorded once a minute
    with django_assert_max_num_queries(4):  # token, groups, the set, the runs
        assert viewer_api.get(f"{SETS}/web/{path}").status_code == 200
