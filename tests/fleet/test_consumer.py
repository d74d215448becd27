"""The live heatmap socket over the real Redis channel layer: login, snapshot, deltas."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from config.asgi import application
from fleet import services
from fleet.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from fleet.drivers import PowerAction
from tests import factories
from upgrades import services as upgrade_services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]
ORIGIN = (b"origin", b"http://localhost")


async def test_the_channel_layer_is_redis():
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"


@database_sync_to_async
def logged_in_cookie(role: str = "viewers") -> bytes:
    client = Client()
    client.force_login(factories.user("ann", role))
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@database_sync_to_async
def make_scale_set(capacity: int = 12):
    return factories.scale_set(capacity=capacity, zones=[])


async def closed_with(socket: WebsocketCommunicator) -> int:
    """The close code of a socket that is accepted only to be told why it is closed."""
    connected, _ = await socket.connect()
    assert connected
    message = await socket.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    return message["code"]


def communicator(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])


async def test_anonymous_users_are_refused():
    scale_set = await make_scale_set()
    socket = communicator(f"/ws/scale-sets/{scale_set.pk}/")
    assert await closed_with(socket) == CLOSE_UNAUTHENTICATED


async def test_a_socket_without_an_allowed_origin_is_refused():
    scale_set = await make_scale_set()
    cookie = await logged_in_cookie()
    socket = WebsocketCommunicator(
        application,
        f"/ws/scale-sets/{scale_set.pk}/",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)],
    )
    connected, _ = await socket.connect()
    assert not connected


async def test_an_unknown_scale_set_is_closed_with_not_found():
    cookie = await logged_in_cookie()
    socket = communicator("/ws/scale-sets/999999/", (b"cookie", cookie))
    assert await closed_with(socket) == CLOSE_NOT_FOUND


async def test_a_viewer_gets_a_snapshot_then_a_delta_when_a_service_changes_an_instance():
    scale_set = await make_scale_set()
    cookie = await logged_in_cookie("viewers")
    socket = communicator(f"/ws/scale-sets/{scale_set.pk}/", (b"cookie", cookie))
    connected, _ = await socket.connect()
    assert connected
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    assert len(snapshot["cells"]) == 12
    columns = snapshot["columns"]
    state = columns.index("state")
    assert {cell[state] for cell in snapshot["cells"]} == {"up_to_date"}
    assert [s["key"] for s in snapshot["states"]][:2] == ["up_to_date", "outdated"]

    await database_sync_to_async(services.instances_power)(
        scale_set=scale_set, instance_ids=[3, 4], action=PowerAction.POWER_OFF
    )
    delta = await socket.receive_json_from(timeout=5)
    assert delta["type"] == "delta"
    assert sorted((cell[0], cell[state]) for cell in delta["cells"]) == [(3, "stopped"), (4, "stopped")]
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()


async def test_a_page_can_ask_for_a_fresh_snapshot():
    scale_set = await make_scale_set(capacity=3)
    cookie = await logged_in_cookie()
    socket = communicator(f"/ws/scale-sets/{scale_set.pk}/", (b"cookie", cookie))
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await socket.send_json_to({"type": "snapshot"})
    again = await socket.receive_json_from(timeout=5)
    assert again["type"] == "snapshot"
    assert len(again["cells"]) == 3
    await socket.disconnect()


async def test_changes_to_another_set_are_not_sent():
    watched = await make_scale_set(capacity=3)
    other = await database_sync_to_async(factories.scale_set)("other", capacity=3, zones=[])
    cookie = await logged_in_cookie()
    socket = communicator(f"/ws/scale-sets/{watched.pk}/", (b"cookie", cookie))
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await database_sync_to_async(services.instances_power)(
        scale_set=other, instance_ids=[0], action=PowerAction.POWER_OFF
    )
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


# --- the run panel over the same socket ----------------------------------------------------------


@pytest.fixture
def no_worker(monkeypatch):
    """Runs started here are not sent to a Celery worker (there is none); on-commit
    publishing to the channel layer still happens, which is what these tests watch."""
    sent: list[int] = []
    monkeypatch.setattr("upgrades.tasks.run_advance_task.delay", sent.append)
    return sent


@database_sync_to_async
def outdated_scale_set(capacity: int = 10):
    scale_set = factories.scale_set(capacity=capacity, zones=[])
    factories.publish(factories.NEW_VERSION, scale_set.region)
    return scale_set


async def test_the_snapshot_carries_the_sets_latest_run(no_worker):
    scale_set = await outdated_scale_set()
    cookie = await logged_in_cookie()
    socket = communicator(f"/ws/scale-sets/{scale_set.pk}/", (b"cookie", cookie))
    await socket.connect()
    before = await socket.receive_json_from(timeout=5)
    assert before["type"] == "snapshot"
    assert before["run"] is None
    await socket.disconnect()

    run = await database_sync_to_async(upgrade_services.os_upgrade_now)(scale_set=scale_set)
    socket = communicator(f"/ws/scale-sets/{scale_set.pk}/", (b"cookie", cookie))
    await socket.connect()
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    assert len(snapshot["cells"]) == 10
    assert (snapshot["run"]["id"], snapshot["run"]["status"]) == (run.pk, "RollingForward")
    assert [b["update_domain"] for b in snapshot["run"]["batches"]] == [0, 1, 2, 3, 4]
    await socket.disconnect()


async def test_run_updates_are_forwarded_to_the_page_as_they_are_published(no_worker):
    other = await database_sync_to_async(factories.scale_set)("other", capacity=3, zones=[])
    scale_set = await outdated_scale_set()  # publishes the new image for both
    cookie = await logged_in_cookie("viewers")
    socket = communicator(f"/ws/scale-sets/{scale_set.pk}/", (b"cookie", cookie))
    await socket.connect()
    await socket.receive_json_from(timeout=5)

    run = await database_sync_to_async(upgrade_services.os_upgrade_now)(scale_set=scale_set)
    started = await socket.receive_json_from(timeout=5)
    assert started["type"] == "run"
    assert started["run"]["id"] == run.pk
    assert (started["run"]["kind"], started["run"]["status"]) == ("ManualOSUpgrade", "RollingForward")
    assert started["run"]["progress"]["pending"] == 10
    assert started["run"]["cancel_requested"] is False

    await database_sync_to_async(upgrade_services.run_cancel)(scale_set=scale_set)
    cancelled = await socket.receive_json_from(timeout=5)
    assert cancelled["type"] == "run"
    assert (cancelled["run"]["id"], cancelled["run"]["cancel_requested"]) == (run.pk, True)
    assert cancelled["run"]["last_action"] == "Cancel"

    # Another set's run goes to that set's pages only.
    elsewhere = await database_sync_to_async(upgrade_services.manual_upgrade)(scale_set=other, instance_ids=[0])
    assert await socket.receive_nothing(timeout=0.5)
    assert no_worker == [run.pk, run.pk, elsewhere.pk]
    await socket.disconnect()


# --- the fleet overview's socket -----------------------------------------------------------------


async def test_the_fleet_socket_refuses_anonymous_users():
    assert await closed_with(communicator("/ws/fleet/")) == CLOSE_UNAUTHENTICATED


async def test_the_fleet_socket_names_the_set_whose_instances_changed():
    scale_set = await make_scale_set(capacity=3)
    other = await database_sync_to_async(factories.scale_set)("other", capacity=2, zones=[])
    cookie = await logged_in_cookie()
    socket = communicator("/ws/fleet/", (b"cookie", cookie))
    connected, _ = await socket.connect()
    assert connected
    assert await socket.receive_nothing(timeout=0.2)  # the page it serves is the snapshot

    await database_sync_to_async(services.instances_power)(
        scale_set=scale_set, instance_ids=[0, 1], action=PowerAction.POWER_OFF
    )
    assert await socket.receive_json_from(timeout=5) == {"type": "changed", "ids": [scale_set.pk]}
    await database_sync_to_async(services.instances_power)(
        scale_set=other, instance_ids=[0], action=PowerAction.POWER_OFF
    )
    assert await socket.receive_json_from(timeout=5) == {"type": "changed", "ids": [other.pk]}
    assert await socket.receive_nothing(timeout=0.2)
    await socket.disconnect()


async def test_the_fleet_socket_hears_of_a_run_starting_and_being_cancelled(no_worker):
    scale_set = await outdated_scale_set(capacity=4)
    cookie = await logged_in_cookie()
    socket = communicator("/ws/fleet/", (b"cookie", cookie))
    await socket.connect()

    await database_sync_to_async(upgrade_services.os_upgrade_now)(scale_set=scale_set)
    assert await socket.receive_json_from(timeout=5) == {"type": "changed", "ids": [scale_set.pk]}
    await database_sync_to_async(upgrade_services.run_cancel)(scale_set=scale_set)
    assert await socket.receive_json_from(timeout=5) == {"type": "changed", "ids": [scale_set.pk]}
    await socket.disconnect()


async def test_the_fleet_socket_hears_of_a_model_change_once_it_commits():
    scale_set = await make_scale_set(capacity=2)
    cookie = await logged_in_cookie()
    socket = communicator("/ws/fleet/", (b"cookie", cookie))
    await socket.connect()

    @database_sync_to_async
    def change_in_a_transaction_then_fail() -> None:
        from django.db import transaction

        from fleet import events

        try:
            with transaction.atomic():
                events.scale_set_changed(scale_set.pk)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        with transaction.atomic():
            events.scale_set_changed(scale_set.pk)

    await change_in_a_transaction_then_fail()
    assert await socket.receive_json_from(timeout=5) == {"type": "changed", "ids": [scale_set.pk]}
    assert await socket.receive_nothing(timeout=0.3)  # the rolled-back change told nobody
    await socket.disconnect()
