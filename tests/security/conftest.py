from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import override_settings

from tests.conftest import FAST_HASHERS
from tests.security.console import SeededFleet, seed_fleet


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """The API's failed-attempt counters live in the cache: no test sees another's."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="module")
def seeded(django_db_setup: None, django_db_blocker: Any) -> Iterator[SeededFleet]:
    """One seeded fleet per module, inside a transaction each test's own (a savepoint) rolls
    back to, and rolled back itself at the end: seeding per test cost seconds each."""
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=FAST_HASHERS), transaction.atomic():
        yield seed_fleet()
        transaction.set_rollback(True)


@pytest.fixture
def fleet(seeded: SeededFleet, db: None) -> SeededFleet:
    return seeded
