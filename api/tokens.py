"""Issuing, revoking and checking API tokens.

A token reads `vmss_<prefix>_<secret>`. The prefix (random, 12 characters) finds the row;
the SHA-256 digest of the whole text, compared in constant time, proves it. The plaintext
is returned once by token_create and never stored or logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import string

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from api.models import ApiToken
from fleet import audit

TOKEN_PREFIX = "vmss"
PREFIX_LENGTH = 12
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
# last_used_at is written at most this often per token: a busy client must not turn every
# read into a write.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Issue a token for the user; returns the row and the plaintext (shown once, never stored)."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the token a name, like 'nightly pipeline'."})
    if len(name) > ApiToken._meta.get_field("name").max_length:  # type: ignore[operator]
        raise ValidationError({"name": "A token name has at most 80 characters."})
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    plaintext = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=prefix, digest=_digest(plaintext))
        audit.record("token.create", f"Issued API token '{name}' ({prefix}) to {user.username}")
    return token, plaintext


def token_revoke(*, token: ApiToken) -> None:
    """Revoke the token for good (idempotent: a second revoke keeps the first time)."""
    now = timezone.now()
    with transaction.atomic():
        if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
            audit.record("token.revoke", f"Revoked API token '{token.name}' ({token.prefix}) of {token.user.username}")
    token.refresh_from_db(fields=["revoked_at"])


def user_for_token(text: str) -> User | None:
    """The active user a token belongs to, or None for anything else (malformed, unknown,
    revoked, inactive user). Marks the token used, at most once a minute."""
    parts = text.split("_", 2) if isinstance(text, str) else []
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != PREFIX_LENGTH or not parts[2]:
        return None
    digest = _digest(text)
    # Several rows could share a prefix in theory; check each digest in constant time.
    candidates = ApiToken.objects.select_related("user").filter(prefix=parts[1], revoked_at__isnull=True)
    for token in candidates:
        if hmac.compare_digest(token.digest, digest):
            if not token.user.is_active:
                return None
            now = timezone.now()
            if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            return token.user
    return None
