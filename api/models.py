"""API tokens: a user's bearer credentials for the ARM-compatible REST API (SPEC 7)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A bearer token issued to a user; it acts with that user's role.

    Only the SHA-256 digest of the whole token text is stored: the plaintext is shown once
    when the token is made and cannot be recovered. `prefix` finds the row without the secret.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80, help_text="What the token is for, e.g. 'nightly pipeline'")
    prefix = models.CharField(max_length=12, db_index=True, editable=False)
    digest = models.CharField(max_length=64, editable=False, help_text="SHA-256 hex of the whole token")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (vmss_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
