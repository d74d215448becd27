"""Admin (SPEC 6) and drivers (SPEC 8): the scale set list shows and filters by driver; an
instance of a local-process set shows its process (pid, port, when it started, what the last
probe heard, R-H-2), on its page and in the instance list without a query per row.

The process rows are written here as the local-process driver writes them: no process runs."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet.models import Instance, InstanceProcess, ScaleSet
from tests import factories

pytestmark = pytest.mark.django_db

STARTED = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HEALTHY_ANSWER = 'HTTP 200 {"ApplicationHealthState": "Healthy"}'


def local_set(name: str, capacity: int, *, first_port: int = 50000) -> ScaleSet:
    """A local-process set whose instances each have a recorded running process."""
    scale_set = factories.scale_set(name, capacity, driver="local")
    InstanceProcess.objects.bulk_create(
        InstanceProcess(
            instance=instance,
            pid=40000 + instance.instance_id,
            port=first_port + instance.instance_id,
            started_at=STARTED,
            last_answer=HEALTHY_ANSWER,
        )
        for instance in scale_set.instances.order_by("instance_id")
    )
    return scale_set


def changelist_names(client: Client, query: str = "") -> list[str]:
    response = client.get(reverse("admin:fleet_scaleset_changelist") + query)
    assert response.status_code == 200
    return sorted(scale_set.name for scale_set in response.context["cl"].result_list)


def test_the_scale_set_list_shows_each_sets_driver(staff_client: Client) -> None:
    factories.scale_set("sim", 1)
    factories.scale_set("procs", 1, driver="local")

    response = staff_client.get(reverse("admin:fleet_scaleset_changelist"))

    html = response.content.decode()
    assert '<th scope="col" class="sortable column-driver">' in html
    assert '<td class="field-driver">Simulator</td>' in html
    assert '<td class="field-driver">Local processes</td>' in html


def test_the_scale_set_list_filters_by_driver(staff_client: Client) -> None:
    factories.scale_set("sim", 1)
    factories.scale_set("procs", 1, driver="local")
    factories.scale_set("procs-too", 1, driver="local")

    assert changelist_names(staff_client) == ["procs", "procs-too", "sim"]
    assert changelist_names(staff_client, "?driver__exact=local") == ["procs", "procs-too"]
    assert changelist_names(staff_client, "?driver__exact=simulator") == ["sim"]
    html = staff_client.get(reverse("admin:fleet_scaleset_changelist")).content.decode()
    assert "?driver__exact=local" in html  # the filter is offered in the sidebar


def test_a_scale_set_stays_read_only(staff_client: Client) -> None:
    scale_set = factories.scale_set("procs", 1, driver="local")

    response = staff_client.post(
        reverse("admin:fleet_scaleset_change", args=[scale_set.pk]), {"driver": "simulator", "name": "procs"}
    )

    assert response.status_code == 403
    assert ScaleSet.objects.get().driver == "local"


def test_an_instance_page_shows_its_process(staff_client: Client) -> None:
    scale_set = local_set("procs", 2)
    instance = scale_set.instances.get(instance_id=1)

    response = staff_client.get(reverse("admin:fleet_instance_change", args=[instance.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    for label, value in [
        ("Pid", "40001"),
        ("Port", "50001"),
        ("Started at", "June 1, 2026, noon"),
        ("Last answer", "HTTP 200 {&quot;ApplicationHealthState&quot;: &quot;Healthy&quot;}"),
    ]:
        assert re.search(rf"<label>{label}:</label>.*?<div class=\"readonly\">{re.escape(value)}</div>", html, re.S)
    assert 'id="process-0"' in html
    assert 'id="process-empty"' not in html  # read-only: no form to add one


def test_an_instance_page_of_a_simulated_instance_has_no_process(staff_client: Client) -> None:
    instance = factories.scale_set("sim", 1).instances.get()

    response = staff_client.get(reverse("admin:fleet_instance_change", args=[instance.pk]))

    assert response.status_code == 200
    process = next(f for f in response.context["inline_admin_formsets"] if f.formset.prefix == "process")
    assert len(process.formset.forms) == 0  # nothing to show, and nothing to add
    assert 'id="process-0"' not in response.content.decode()


def test_the_instance_list_shows_the_process_of_local_instances(staff_client: Client) -> None:
    local_set("procs", 2)
    factories.scale_set("sim", 1)
    stopped = Instance.objects.get(scale_set__name="procs", instance_id=1)
    InstanceProcess.objects.filter(instance=stopped).update(pid=None)

    response = staff_client.get(reverse("admin:fleet_instance_changelist"))

    html = response.content.decode()
    assert '<td class="field-process_summary">pid 40000, 127.0.0.1:50000</td>' in html
    assert '<td class="field-process_summary">not running (127.0.0.1:50001)</td>' in html
    assert '<td class="field-process_summary">-</td>' in html  # the simulated instance: the empty value


def test_the_instance_list_costs_no_query_per_row(staff_client: Client) -> None:
    """The process comes with its instance in one query (list_select_related), however many rows."""
    local_set("small", 2)
    url = reverse("admin:fleet_instance_changelist")
    staff_client.get(url)  # sessions and permissions warm: not what is measured

    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(url).status_code == 200
    local_set("large", 12, first_port=51000)
    factories.scale_set("sim", 6)
    with CaptureQueriesContext(connection) as many:
        response = staff_client.get(url)

    assert response.context["cl"].result_count == 20
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


def test_saving_an_instance_page_keeps_its_process_as_it_is(staff_client: Client) -> None:
    """The process inline is view-only: saving the page's one editable field (protection) goes
    through, and the process row is not written."""
    instance = local_set("procs", 1).instances.get()
    url = reverse("admin:fleet_instance_change", args=[instance.pk])
    page = staff_client.get(url)
    data: dict[str, Any] = {"protected_from_scale_set_actions": "on"}
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({f"{formset.prefix}-{name}": value for name, value in formset.management_form.initial.items()})
        for form in formset.initial_forms:
            data.update({field.html_name: field.value() for field in form.hidden_fields()})
    before = InstanceProcess.objects.values().get()

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["errors"] if response.context else response
    assert Instance.objects.get().protected_from_scale_set_actions is True
    assert InstanceProcess.objects.values().get() == before
