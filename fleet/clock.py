"""The one clock. Every simulated duration and every wait goes through here.

Timestamps are real wall-clock time; durations are *simulated* seconds, compressed by
settings.TIME_SCALE when turned into a due time (at 60, a 300 s health wait is due 5 s later).
Tests freeze or move time with `clock.frozen(...)`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

from django.conf import settings
from django.utils import timezone

_frozen: list[dt.datetime] = []


def now() -> dt.datetime:
    return _frozen[-1] if _frozen else timezone.now()


def scaled(simulated_seconds: float) -> dt.timedelta:
    """The real time a simulated duration takes at the configured TIME_SCALE."""
    return dt.timedelta(seconds=simulated_seconds / settings.TIME_SCALE)


def after(simulated_seconds: float, *, start: dt.datetime | None = None) -> dt.datetime:
    return (start or now()) + scaled(simulated_seconds)


@contextlib.contextmanager
def frozen(at: dt.datetime) -> Iterator[FrozenClock]:
    """Stop time at `at` inside the block; `advance()` moves it (for exact tests)."""
    handle = FrozenClock()
    _frozen.append(at)
    try:
        yield handle
    finally:
        _frozen.pop()


class FrozenClock:
    def advance(self, real_seconds: float) -> dt.datetime:
        _frozen[-1] = _frozen[-1] + dt.timedelta(seconds=real_seconds)
        return _frozen[-1]

    def advance_simulated(self, simulated_seconds: float) -> dt.datetime:
        _frozen[-1] = _frozen[-1] + scaled(simulated_seconds)
        return _frozen[-1]
