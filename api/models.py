"""API tokens: a user's bearer credentials for the ARM-compatible REST API (SPEC 7)."""

from __future__ import annotations

import uuid

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


class OperationStatus(models.TextChoices):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


class Operation(models.Model):
    """A long-running operation the API answered 202 for (SPEC 7): what was asked, and where
    to look to tell whether it is done.

    Its status is derived, not driven: from the run it started or cancelled, or from the
    driver's work still due on the instances it acted on (see api.operations). Once seen
    terminal, the outcome is stored and never changes.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action = models.CharField(max_length=32, help_text="osRollingUpgrade, manualupgrade, reimage, …")
    scale_set = models.ForeignKey("fleet.ScaleSet", null=True, on_delete=models.SET_NULL, related_name="+")
    subscription_id = models.CharField(max_length=36)
    location = models.CharField(max_length=40)
    run = models.ForeignKey("upgrades.UpgradeRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    instance_ids = models.JSONField(default=list, blank=True, help_text="Instance ids acted on")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=12, choices=OperationStatus.choices, default=OperationStatus.IN_PROGRESS)
    error = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.action} {self.id}"
