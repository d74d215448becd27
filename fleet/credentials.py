"""Credentials in extensions' protected settings, and their expiry (R-CRED-1, seed 000 "keep
credentials up to date").

A credential is any object in an extension's protected settings that carries `expiresOn`
(ISO 8601). An expired one makes provisioning that extension fail (the simulator); the pages
warn CREDENTIAL_WARNING_DAYS ahead so the operator can update it before an upgrade trips on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from fleet.models import ScaleSetExtension


def expiries(protected_settings: Any) -> list[tuple[dt.datetime, str]]:
    """Every `expiresOn` found at any depth, as (aware datetime, the text as written); naive
    ones are read as UTC. A value that is not a date is skipped: validating it is the model's
    business."""
    found: list[tuple[dt.datetime, str]] = []
    pending: list[Any] = [protected_settings]
    while pending:
        value = pending.pop()
        if isinstance(value, list):
            pending.extend(value)
        if not isinstance(value, dict):
            continue
        pending.extend(value.values())
        expires = value.get("expiresOn")
        if not isinstance(expires, str):
            continue
        try:
            moment = dt.datetime.fromisoformat(expires)
        except ValueError:
            continue
        found.append((moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC), expires))
    return sorted(found)


def expired_by(extension: ScaleSetExtension | None, at: dt.datetime) -> str:
    """The `expiresOn` (as written) of the extension's earliest credential expired by `at`,
    or ""."""
    if extension is None:
        return ""
    return next((text for moment, text in expiries(extension.protected_settings) if moment <= at), "")


@dataclass(frozen=True)
class CredentialWarning:
    extension: str
    expires_on: dt.datetime
    expired: bool

    @property
    def message(self) -> str:
        when = self.expires_on.strftime("%Y-%m-%d %H:%M UTC")
        if self.expired:
            return (
                f"The credential in {self.extension}'s protected settings expired on {when}: provisioning "
                "it fails, so an upgrade of this set would fail. Update the credential in the model, "
                "then upgrade every instance (R-CRED-1)."
            )
        return (
            f"The credential in {self.extension}'s protected settings expires on {when}: update it "
            "before then, or upgrades will fail to provision the extension (R-CRED-1)."
        )


def credential_warnings(extensions: Iterable[ScaleSetExtension], now: dt.datetime) -> list[CredentialWarning]:
    """Credentials that expired, or expire within CREDENTIAL_WARNING_DAYS, soonest first."""
    horizon = now + dt.timedelta(days=settings.CREDENTIAL_WARNING_DAYS)
    warnings = [
        CredentialWarning(extension=ext.name, expires_on=moment, expired=moment <= now)
        for ext in extensions
        for moment, _ in expiries(ext.protected_settings)[:1]
        if moment <= horizon
    ]
    return sorted(warnings, key=lambda w: w.expires_on)
