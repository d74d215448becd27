import datetime as dt
from collections.abc import Iterator

import pytest
from django.test import override_settings

from fleet import clock
from fleet.clock import FrozenClock

# Hashing a password the production way costs a good part of a second on this machine, and the
# suite makes users by the hundred: the hasher is not what it tests.
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fast_password_hashing(request: pytest.FixtureRequest) -> Iterator[None]:
    # Browser tests log in through a real server process, which checks passwords with the
    # production hashers: their users keep production hashes. (Not the `settings` fixture: some
    # tests have a parameter of that name.)
    if "browser" in request.node.path.parts:
        yield
        return
    with override_settings(PASSWORD_HASHERS=FAST_HASHERS):
        yield


@pytest.fixture(autouse=True)
def local_driver_directories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The local-process driver's image store and instance directories live in a temporary
    directory, never in the checkout's var/ (the demo fleet builds images there)."""
    root = tmp_path_factory.mktemp("local-driver")
    with override_settings(LOCAL_IMAGE_STORE=root / "images", LOCAL_INSTANCE_ROOT=root / "instances"):
        yield


@pytest.fixture
def frozen_clock() -> Iterator[FrozenClock]:
    """Time stands still at a fixed moment until the test advances it."""
    with clock.frozen(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)) as handle:
        yield handle


@pytest.fixture
def time_scale_1(settings):  # type: ignore[no-untyped-def]
    settings.TIME_SCALE = 1.0
    return settings


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Iterator[None]:
    """Each test gets its own channel layer. The layer is cached for the process, and
    channels_redis binds locks to the event loop that first used them; every async test
    has its own loop, so a layer carried over from another test can fail with "bound to a
    different event loop"."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
