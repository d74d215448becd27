"""API tokens: only the digest is stored, the plaintext is shown once, revoking works."""

import datetime as dt
import hashlib

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import ApiToken
from api.tokens import token_create, token_revoke, user_for_token
from tests import factories

pytestmark = pytest.mark.django_db


def test_token_stores_the_sha256_digest_and_never_the_plaintext() -> None:
    user = factories.user("ada", "viewers")
    token, plaintext = token_create(user=user, name="ci")
    kind, prefix, secret = plaintext.split("_", 2)
    assert kind == "vmss"
    assert token.prefix == prefix
    assert len(secret) >= 40
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    row = ApiToken.objects.values().get(pk=token.pk)
    assert all(secret not in str(value) for value in row.values())


def test_user_for_token_finds_the_user_and_refuses_others() -> None:
    user = factories.user("ada", "viewers")
    plaintext = token_create(user=user, name="ci")[1]
    assert user_for_token(plaintext) == user
    assert user_for_token(plaintext + "x") is None
    assert user_for_token("vmss_" + "a" * 12 + "_" + plaintext.split("_", 2)[2]) is None
    assert user_for_token("") is None


def test_last_used_is_written_at_most_once_a_minute(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    token, plaintext = token_create(user=factories.user("ada", "viewers"), name="ci")
    with django_assert_num_queries(2):  # lookup + the first mark
        user_for_token(plaintext)
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    with django_assert_num_queries(1):  # lookup only, within the minute
        user_for_token(plaintext)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - dt.timedelta(minutes=2))
    user_for_token(plaintext)
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert token.last_used_at > first


def test_revoke_is_idempotent_and_keeps_the_first_time() -> None:
    token = token_create(user=factories.user("ada", "viewers"), name="ci")[0]
    token_revoke(token=token)
    first = token.revoked_at
    token_revoke(token=token)
    assert token.revoked_at == first is not None


def test_token_page_shows_the_plaintext_once_then_only_the_prefix() -> None:
    user = factories.user("ada", "viewers")
    client = Client()
    client.force_login(user)
    response = client.post(reverse("api:token-list"), {"name": "nightly"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    plaintext = response.context["plaintext"]
    assert plaintext.startswith("vmss_")
    assert plaintext in response.content.decode()
    assert "shown only this once" in response.content.decode()
    assert user_for_token(plaintext) == user

    again = client.get(reverse("api:token-list")).content.decode()
    assert plaintext not in again
    assert f"vmss_{plaintext.split('_')[1]}_" in again


def test_token_page_lists_only_the_users_own_tokens() -> None:
    ada, bob = factories.user("ada", "viewers"), factories.user("bob", "viewers")
    token_create(user=bob, name="bobs-secret-pipeline")
    client = Client()
    client.force_login(ada)
    assert "bobs-secret-pipeline" not in client.get(reverse("api:token-list")).content.decode()


def test_token_page_needs_login() -> None:
    response = Client().get(reverse("api:token-list"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_revoking_from_the_page_needs_csrf_and_stops_the_token() -> None:
    user = factories.user("ada", "viewers")
    token, plaintext = token_create(user=user, name="ci")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(reverse("api:token-revoke", args=[token.pk])).status_code == 403
    page = client.get(reverse("api:token-list"))
    csrf = page.context["csrf_token"]
    response = client.post(reverse("api:token-revoke", args=[token.pk]), {"csrfmiddlewaretoken": str(csrf)})
    assert response.status_code == 302
    assert user_for_token(plaintext) is None


def test_another_users_token_cannot_be_revoked() -> None:
    token = token_create(user=factories.user("bob", "viewers"), name="ci")[0]
    client = Client()
    client.force_login(factories.user("ada", "viewers"))
    assert client.post(reverse("api:token-revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_admin_lists_tokens_and_revokes_them() -> None:
    token, plaintext = token_create(user=factories.user("bob", "viewers"), name="ci")
    admin = factories.user("root", "staff")
    admin.is_superuser = True
    admin.save()
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/api/apitoken/")
    assert page.status_code == 200
    assert token.prefix in page.content.decode()
    client.post("/admin/api/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert user_for_token(plaintext) is None
