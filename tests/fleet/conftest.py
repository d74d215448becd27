from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from tests import factories


@pytest.fixture
def staff_client() -> Client:
    """A staff member who keeps the fleet's reference tables (every fleet permission)."""
    user = factories.user("ada", "staff")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="fleet"))
    client = Client()
    client.force_login(user)
    return client
