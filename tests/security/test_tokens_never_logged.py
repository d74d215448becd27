"""An API token's plaintext is shown once and never logged (SPEC 7: tokens issued per user).

Every logger is captured at DEBUG, SQL included, while tokens are made, used well and badly,
and revoked from the page and the admin; then no captured record may hold a plaintext or its
secret part: not in its message, its arguments, its formatted text or any attribute."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from api.models import ApiToken
from tests import factories
from tests.security.console import logged_in, user_for

pytestmark = pytest.mark.django_db

API_VERSION = "2024-07-01"
PLAINTEXT = re.compile(r"vmss_[a-z0-9]{12}_[A-Za-z0-9_\-]+")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def texts(self, record: logging.LogRecord) -> list[str]:
        """Everything of a record a handler could write out."""
        texts = [record.getMessage(), repr(record.args), self.format(record)]
        texts += [repr(value) for value in vars(record).values()]
        return texts


@pytest.fixture
def captured() -> Iterator[Capture]:
    """Every logger at DEBUG into one handler: on the root, and on each logger that does not
    propagate to it (a record stopped there would escape the root's handler)."""
    handler = Capture()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    disabled = {logger: logger.disabled for logger in loggers}
    not_propagating = [logger for logger in loggers if not logger.propagate]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    logging.getLogger().addHandler(handler)
    for logger in not_propagating:
        logger.addHandler(handler)
    # SQL is logged (django.db.backends, DEBUG) only with DEBUG on, or with this.
    connection.force_debug_cursor = True
    try:
        yield handler
    finally:
        connection.force_debug_cursor = False
        logging.getLogger().removeHandler(handler)
        for logger in not_propagating:
            logger.removeHandler(handler)
        for logger, level in levels.items():
            logger.setLevel(level)
            logger.disabled = disabled[logger]


def api_get(path: str, token: str | None, **params: str) -> Any:
    params.setdefault("api-version", API_VERSION)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client().get(path, params, headers=headers)


def set_path(name: str) -> str:
    return (
        f"/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{name}"
    )


def token_from_the_page(client: Client, name: str) -> str:
    """Make a token on the API tokens page; its plaintext is on that answer only."""
    response = client.post("/api-tokens/", {"name": name})
    assert response.status_code == 200
    found = PLAINTEXT.findall(response.content.decode())
    assert len(set(found)) == 1, found
    return found[0]


def secret_of(plaintext: str) -> str:
    return plaintext.split("_", 2)[2]


def test_no_token_plaintext_or_secret_reaches_any_log_record(captured: Capture, settings: Any) -> None:
    settings.API_AUTH_FAILURES_PER_MINUTE = 1000  # the failures below are on purpose
    factories.scale_set("web", 2, zones=[])
    owner = user_for("operators", "olga")
    page = logged_in(owner)
    good = token_from_the_page(page, "pipeline")
    wrong_secret = good[: -len(secret_of(good))] + "x" * len(secret_of(good))
    web = set_path("web")

    assert api_get(web, good).status_code == 200
    assert api_get(web, wrong_secret).status_code == 401
    assert api_get(web, good, **{"api-version": "2017-01-01"}).status_code == 400
    assert api_get(set_path("nowhere"), good).status_code == 404
    assert (
        Client()
        .post(f"/subscriptions?api-version={API_VERSION}", headers={"Authorization": f"Bearer {good}"})
        .status_code
        == 405
    )

    # Revoked on the page, then one made and revoked in the admin: each refused from then on.
    token_id = int(re.search(r"/api-tokens/(\d+)/revoke", page.get("/api-tokens/").content.decode())[1])
    assert page.post(f"/api-tokens/{token_id}/revoke").status_code == 302
    assert api_get(web, good).status_code == 401
    second = token_from_the_page(page, "second")
    assert api_get(web, second).status_code == 200
    admin = logged_in(user_for("staff", "root"))
    second_id = ApiToken.objects.get(name="second").pk
    response = admin.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [second_id], "index": "0"})
    assert response.status_code == 302
    assert api_get(web, second).status_code == 401

    # The capture saw the requests: SQL at DEBUG and Django's warning for each refused request.
    names = {record.name for record in captured.records}
    assert "django.db.backends" in names
    refused = {getattr(record, "status_code", None) for record in captured.records if record.name == "django.request"}
    assert {400, 401, 404, 405} <= refused

    secrets = {good, second, wrong_secret, secret_of(good), secret_of(second), secret_of(wrong_secret)}
    leaks = [
        f"{record.name} {record.levelname}: {record.getMessage()[:200]}"
        for record in captured.records
        if any(secret in text for text in captured.texts(record) for secret in secrets)
    ]
    assert not leaks


def test_a_token_revoked_between_two_requests_is_refused_on_the_next_one() -> None:
    """Nothing caches a token's check: revoking stops the very next request (SPEC 7)."""
    factories.scale_set("web", 2, zones=[])
    page = logged_in(user_for("viewers", "vera"))
    token = token_from_the_page(page, "laptop")
    assert api_get(set_path("web"), token).status_code == 200
    token_id = int(re.search(r"/api-tokens/(\d+)/revoke", page.get("/api-tokens/").content.decode())[1])
    assert page.post(f"/api-tokens/{token_id}/revoke").status_code == 302
    response = api_get(set_path("web"), token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
