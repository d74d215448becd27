import datetime as dt
from collections.abc import Iterator

import pytest

from fleet import clock
from fleet.clock import FrozenClock


@pytest.fixture
def frozen_clock() -> Iterator[FrozenClock]:
    """Time stands still at a fixed moment until the test advances it."""
    with clock.frozen(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)) as handle:
        yield handle


@pytest.fixture
def time_scale_1(settings):  # type: ignore[no-untyped-def]
    settings.TIME_SCALE = 1.0
    return settings
