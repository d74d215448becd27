import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from api.tokens import token_create
from tests import factories
from tests.upgrades.conftest import drive  # noqa: F401  (a fixture: runs driven to their end in simulated time)

API_VERSION = "2024-07-01"


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """The failed-attempt counters live in the cache: no test sees another's."""
    cache.clear()
    yield
    cache.clear()


class ApiClient:
    """The test client speaking to the API with a bearer token and an api-version."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, *, api_version: str | None = API_VERSION, **params: Any) -> Any:
        if api_version is not None:
            params["api-version"] = api_version
        return self.client.get(path, params, headers=self._headers())

    def post(self, path: str, body: Any = b"{}", *, api_version: str = API_VERSION) -> Any:
        return self.send("post", path, body, api_version=api_version)

    def put(self, path: str, body: Any, *, api_version: str = API_VERSION) -> Any:
        return self.send("put", path, body, api_version=api_version)

    def patch(self, path: str, body: Any, *, api_version: str = API_VERSION) -> Any:
        return self.send("patch", path, body, api_version=api_version)

    def delete(self, path: str, *, api_version: str = API_VERSION) -> Any:
        return self.send("delete", path, b"", api_version=api_version)

    def send(self, method: str, path: str, body: Any, *, api_version: str = API_VERSION) -> Any:
        """`body`: bytes as they are, anything else as JSON."""
        separator = "&" if "?" in path else "?"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return getattr(self.client, method)(
            f"{path}{separator}api-version={api_version}",
            data,
            content_type="application/json",
            headers=self._headers(),
        )


def api_client_for(role: str, username: str | None = None) -> ApiClient:
    user = factories.user(username or f"{role}-user", role)
    return ApiClient(token_create(user=user, name="tests")[1])


@pytest.fixture
def viewer_api(db: None) -> ApiClient:
    return api_client_for("viewers")


@pytest.fixture
def operator_api(db: None) -> ApiClient:
    return api_client_for("operators")
