"""The audit log: who started, cancelled or changed what, and through which door.

A service records its entry inside the transaction of the change it describes, so an entry
exists exactly when the change does: a refused change leaves none, a rolled-back one takes
its entry with it.

Who acted: the actor a service was given (runs, cancels, model changes), else the person of
the request being served (AuditMiddleware for pages and the API; the API's bearer token sets
request.user before the view runs, and the entry reads it then), else the caller of a
management command (`manage.py` sets the process default), else nobody: the platform itself
(beat's automatic upgrades and rollouts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # manage.py imports this module before Django has loaded the apps
    from django.http import HttpRequest, HttpResponse

    from fleet.models import AuditEntry, ScaleSet

PLATFORM = "platform"
# The doors (fleet.models.Via), spelled here too so that this module needs no model to load.
CONSOLE, API, CLI, ADMIN = "console", "api", "cli", "admin"


class _CommandLineCaller:
    """Whoever runs manage.py: the machine account, not a console user."""

    username = "manage.py"
    is_authenticated = True


COMMAND_LINE_CALLER = _CommandLineCaller()


@dataclass(frozen=True)
class Acting:
    """Who is behind the work of this request or command: `user` is read when an entry is
    written (a request's user is known only after authentication)."""

    user: Callable[[], Any]
    via: str


_acting: ContextVar[Acting | None] = ContextVar("audit_acting", default=None)
_process_default: Acting | None = None


@contextlib.contextmanager
def acting(user: Any, via: str) -> Iterator[None]:
    """Entries written inside the block name `user` (a User, or the command line's caller)."""
    token = _acting.set(Acting(lambda: user, via))
    try:
        yield
    finally:
        _acting.reset(token)


def set_process_default(user: Any, via: str) -> None:
    """Who acts in this process when nothing closer says (manage.py: the command line)."""
    global _process_default
    _process_default = Acting(lambda: user, via)


def record(
    action: str,
    summary: str,
    *,
    scale_set: ScaleSet | None = None,
    scale_set_name: str = "",
    run_id: int | None = None,
    actor: Any = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one entry. Call it inside the transaction of the change."""
    from django.contrib.auth.models import User

    from fleet import clock
    from fleet.models import AuditEntry

    acting_now = _acting.get() or _process_default
    via = acting_now.via if acting_now else PLATFORM
    if actor is None and acting_now is not None:
        actor = acting_now.user()
    if not getattr(actor, "is_authenticated", False):
        actor = None
    if actor is None:
        via, name = PLATFORM, PLATFORM
    else:
        name = getattr(actor, "username", "") or str(actor)
    return AuditEntry.objects.create(
        at=clock.now(),
        actor=actor if isinstance(actor, User) and actor.pk else None,
        actor_name=name[:150],
        via=via,
        action=action,
        scale_set=scale_set,
        scale_set_name=(scale_set.name if scale_set is not None else scale_set_name)[:64],
        run_id=run_id,
        summary=summary[:500],
        details=details or {},
    )


def _via_of(path: str) -> str:
    if path.startswith(("/subscriptions/", "/console/api/")):
        return API
    if path.startswith("/admin/"):
        return ADMIN
    return CONSOLE


class AuditMiddleware:
    """Makes the request's user the actor of whatever the view changes."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _acting.set(Acting(lambda: getattr(request, "user", None), _via_of(request.path)))
        try:
            return self.get_response(request)
        finally:
            _acting.reset(token)
