"""`manage.py local_processes status|resume|stop`, as `make run` uses it on start and exit,
against real instance processes started by the driver's own steps (no worker: the steps and
probe rounds are called here, as the tasks call them)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from fleet import clock
from fleet import services as fleet_services
from fleet.drivers.local import driver as local
from fleet.drivers.local import images
from fleet.models import HealthState, Instance, ScaleSet
from tests import factories
from tests.processes import wait_for

pytestmark = pytest.mark.django_db

APP = {"image_publisher": "Contoso", "image_offer": "DemoApp", "image_sku": "app"}
APP_HEALTH = {**factories.APP_HEALTH_HTTP, "settings": {"protocol": "http", "port": 8080, "requestPath": "/health"}}


@pytest.fixture
def scale_set(settings, tmp_path: Path) -> Iterator[ScaleSet]:  # type: ignore[no-untyped-def]
    settings.LOCAL_IMAGE_STORE = tmp_path / "images"
    settings.LOCAL_INSTANCE_ROOT = tmp_path / "instances"
    settings.TIME_SCALE = 100.0  # probe interval at its floor (0.25 s real)
    images.build("platform:Contoso/DemoApp/app:1.0.0")
    factories.publish("1.0.0", factories.region(), at=clock.now() - dt.timedelta(days=1), **APP)
    made = factories.scale_set("app", 2, zones=[], driver="local", extensions=[APP_HEALTH], **APP)
    try:
        yield made
    finally:
        local.stop_all()
        local.stop_processes(local.orphan_processes())


def healthy(scale_set: ScaleSet) -> bool:
    """One tick of the driver's tasks, then whether every instance is healthy."""
    fleet_services.local_driver_steps()
    fleet_services.local_driver_probes()
    return set(scale_set.instances.values_list("health_state", flat=True)) == {HealthState.HEALTHY}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("local_processes", *args, stdout=out)
    return out.getvalue()


def test_status_lists_each_instance_with_its_process_and_what_its_probe_heard(scale_set: ScaleSet) -> None:
    wait_for(lambda: healthy(scale_set), timeout=30, what="both instances healthy")
    lines = run("status").splitlines()
    assert lines[0].split()[:4] == ["instance", "pid", "port", "alive"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"app_0", "app_1"}
    for instance in scale_set.instances.select_related("process"):
        assert f"{instance.process.pid}" in rows[instance.name]
        assert " yes " in rows[instance.name]
        assert rows[instance.name].endswith("ApplicationHealthState Healthy")


def test_stop_then_resume_starts_every_instance_recorded_as_running_again(scale_set: ScaleSet) -> None:
    wait_for(lambda: healthy(scale_set), timeout=30, what="both instances healthy")
    first_pids = set(scale_set.instances.values_list("process__pid", flat=True))

    assert run("stop") == "Stopped 2 process(es).\n"
    assert all(not local.live_programs(i) for i in scale_set.instances.select_related("scale_set"))
    assert " no " in run("status").splitlines()[1]

    assert run("resume").startswith("2 instance(s) recorded as running have no process")
    assert list(Instance.objects.values_list("driver_plan", flat=True)) == [[{"op": "start"}]] * 2
    wait_for(lambda: healthy(scale_set), timeout=30, what="both instances healthy again")
    assert not first_pids & set(scale_set.instances.values_list("process__pid", flat=True))


def test_resume_leaves_live_processes_as_they_are(scale_set: ScaleSet) -> None:
    wait_for(lambda: healthy(scale_set), timeout=30, what="both instances healthy")
    assert run("resume").startswith("0 instance(s)")
    assert list(Instance.objects.values_list("driver_plan", flat=True)) == [[], []]
