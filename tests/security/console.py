"""The console as an attacker sees it: every route of the URLconf (walked, not listed by hand),
a seeded fleet to fill their URL parameters, the three roles' clients, and a snapshot of
everything an action could change, to prove a refused request changed nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from api.models import ApiToken
from api.tokens import token_create
from fleet.models import Instance, Region, ScaleSet, ScaleSetExtension
from tests import factories
from tests.factories import APP_HEALTH_HTTP
from upgrades import rollouts, services
from upgrades.models import Rollout, UpgradeRun

# The ARM API and the console's own API answer bearer tokens, not forms: they are CSRF-exempt
# by design and covered by tests/api (test_auth, test_authorization_matrix).
API_PREFIXES = ("subscriptions", "console/api")
# The admin's URLs are Django's own; the tests below post to its forms by path.
ADMIN_NAMESPACE = "admin"
# The console's actions the route walk must find (if it broke, every test over its routes
# would pass vacuously).
KNOWN_ACTIONS = frozenset(
    {
        "upgrades:model-change",
        "upgrades:manual-upgrade",
        "upgrades:rolling-upgrade",
        "upgrades:os-upgrade",
        "upgrades:cancel",
        "upgrades:reimage",
        "upgrades:power",
        "upgrades:automatic-os-upgrade",
    }
)


@dataclass(frozen=True)
class Route:
    """One console URL pattern: its name (with namespace), its route, its view and the HTTP
    methods the view declares (None: it does not restrict them)."""

    name: str
    route: str
    view: Callable[..., Any]
    kwargs: tuple[str, ...]
    methods: frozenset[str] | None

    def accepts(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    @property
    def declares_post(self) -> bool:
        return self.methods is not None and "POST" in self.methods

    def path(self, values: dict[str, Any]) -> str:
        unknown = [name for name in self.kwargs if name not in values]
        assert not unknown, f"no seeded value for {unknown} of route {self.name} ({self.route}): add one"
        return reverse(self.name, kwargs={name: values[name] for name in self.kwargs})

    def __str__(self) -> str:
        return self.name


def declared_methods(view: Callable[..., Any]) -> frozenset[str] | None:
    """The methods a view accepts: a class-based view's handlers, or the list given to
    require_http_methods (require_POST, require_GET) anywhere in its decorator chain."""
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        return frozenset(m.upper() for m in view_class.http_method_names if m != "options" and hasattr(view_class, m))
    current: Any = view
    while current is not None:
        code, cells = getattr(current, "__code__", None), getattr(current, "__closure__", None)
        if code is not None and cells:
            free = dict(zip(code.co_freevars, cells, strict=True))
            if "request_method_list" in free:
                return frozenset(free["request_method_list"].cell_contents)
        current = getattr(current, "__wrapped__", None)
    return None


def _walk(patterns: list[Any], prefix: str, namespace: str) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}" if namespace and entry.namespace else entry.namespace or namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), inner or "")
        elif isinstance(entry, URLPattern):
            route = prefix + str(entry.pattern)
            name = f"{namespace}:{entry.name}" if namespace else entry.name
            converters = getattr(entry.pattern, "converters", {}) or {}
            kwargs = tuple(converters) or tuple(entry.pattern.regex.groupindex)
            yield Route(name or route, route, entry.callback, kwargs, declared_methods(entry.callback))


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, "", ""))


def console_routes() -> list[Route]:
    """Every route of the console's pages and forms: not the bearer-token API, not the admin."""
    return [
        route
        for route in all_routes()
        if not route.route.lstrip("^").startswith(API_PREFIXES) and not route.name.startswith(f"{ADMIN_NAMESPACE}:")
    ]


def post_routes() -> list[Route]:
    """Console routes whose view declares POST (forms and actions)."""
    return [route for route in console_routes() if route.declares_post]


def get_pages() -> list[Route]:
    """Console routes a browser GETs (the login page aside: it is the one page for anonymous)."""
    return [route for route in console_routes() if route.accepts("GET") and route.name != "login"]


# --- people and the fleet they work on -----------------------------------------------------------


ROLES = ("viewers", "operators", "staff")
# What each form would act on if the token were not checked: every action's fields at once.
ACTION_FIELDS: dict[str, Any] = {
    "confirm": "1",
    "model-vm_size": "Standard_D8s_v3",
    "model-image_sku": "18.04-LTS",
    "model-image_version": "latest",
    "model-confirm_all_at_once": "on",
    "manual-scope": "instance_ids",
    "manual-instance_ids": "*",
    "rolling-batch_size": "1",
    "reimage-instance_ids": "0",
    "power-instance_ids": "0",
    "power-action": "powerOff",
    "auto_os-enabled": "off",
    "name": "stolen",
    "username": "owen",
    "password": "owenowen",
}


def user_for(role: str, username: str | None = None) -> User:
    """A user of the role; staff as the console makes them (fleet.demo): staff and superuser,
    so the admin opens."""
    account = factories.user(username or role.rstrip("s"), role)
    if role == "staff":
        account.is_superuser = True
        account.save()
    return account


def logged_in(account: User | None, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    if account is not None:
        client.force_login(account)
    return client


@dataclass(frozen=True)
class SeededFleet:
    """One of everything a console URL names, and the values of its URL parameters."""

    scale_set: ScaleSet
    automatic_set: ScaleSet
    run: UpgradeRun
    rollout: Rollout
    token: ApiToken
    owner: User  # the operator the run and the token belong to
    users: dict[str, User]  # one per role

    def client(self, role: str, *, enforce_csrf_checks: bool = False) -> Client:
        """A client logged in as the role's user ('anonymous': nobody)."""
        account = None if role == "anonymous" else self.users[role]
        return logged_in(account, enforce_csrf_checks=enforce_csrf_checks)

    @property
    def url_values(self) -> dict[str, Any]:
        return {
            "scale_set_id": self.scale_set.pk,
            "run_id": self.run.pk,
            "rollout_id": self.rollout.pk,
            "token_id": self.token.pk,
        }


def seed_fleet() -> SeededFleet:
    """'auto' (automatic OS upgrades on, so a rollout covers it once a newer image is out) and
    'web' (outdated, with the Application Health extension and an OS upgrade under way), the
    rollout of the newer image, and an API token of the operator who started the run."""
    owner = factories.user("owen", "operators")
    automatic_set = factories.scale_set(
        "auto", 3, zones=[], extensions=[APP_HEALTH_HTTP], enable_automatic_os_upgrade=True
    )
    scale_set = factories.outdated_scale_set(4)
    rollouts.automatic_upgrades_scan()
    run = services.os_upgrade_now(scale_set=scale_set, actor=owner)
    token = token_create(user=owner, name="pipeline")[0]
    users = {role: user_for(role) for role in ROLES}
    return SeededFleet(scale_set, automatic_set, run, Rollout.objects.get(), token, owner, users)


def fleet_state() -> dict[str, Any]:
    """Every row a console action or form could write, as plain values (what 'nothing
    changed' compares)."""
    return {
        "scale_sets": list(ScaleSet.objects.order_by("pk").values()),
        "instances": list(Instance.objects.order_by("pk").values()),
        "extensions": list(ScaleSetExtension.objects.order_by("pk").values()),
        "runs": list(UpgradeRun.objects.order_by("pk").values()),
        "rollouts": list(Rollout.objects.order_by("pk").values()),
        "tokens": list(ApiToken.objects.order_by("pk").values()),
        "regions": list(Region.objects.order_by("pk").values()),
        "users": list(User.objects.order_by("pk").values("pk", "username", "is_active", "is_staff", "password")),
    }
