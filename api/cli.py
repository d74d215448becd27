"""The API as the command line calls it: in-process, no HTTP and no network (SPEC 7, CLI).

`manage.py vmss` is a client of the API. It builds the request an ARM client would send,
hands it to the API's own view (resolved from the URL, so `arm_view` checks the api-version,
the caller and the role exactly as for a bearer client), and prints the answer. The
services, the validation, the errors and the JSON are therefore the API's by construction.

Who acts: `--user NAME` acts as that console user, with that user's role (a viewer reads and
cannot act); without it the command line acts with full rights, as shell access to
manage.py already implies access to the database. That caller is no saved user, so runs
and operations it starts record no actor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.management.base import CommandError
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import Resolver404, resolve

from api import arm
from fleet import audit
from fleet.cli import scale_set_named

API_VERSION = "2024-07-01"
SCALE_SETS = "providers/Microsoft.Compute/virtualMachineScaleSets"
# The header of a 202 that names the operation-status resource (ARM's long-running operations).
ASYNC_OPERATION = "Azure-AsyncOperation"


class CommandLineUser(AnonymousUser):
    """The caller when no --user is given: staff rights, no database row (so `actor` and an
    operation's `user` stay empty), and no groups (`groups.all()` is an empty queryset)."""

    username = "manage.py"  # type: ignore[assignment]
    is_staff = True  # type: ignore[assignment]
    is_active = True  # type: ignore[assignment]

    @property
    def is_authenticated(self) -> Literal[True]:  # type: ignore[override]
        return True

    @property
    def is_anonymous(self) -> Literal[False]:  # type: ignore[override]
        return False

    def __str__(self) -> str:
        return self.username


COMMAND_LINE = CommandLineUser()


@dataclass(frozen=True)
class Response:
    """What a view answered: the status, the body as JSON (None when empty) and the headers."""

    status: int
    json: Any
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        """A header's value by its name in any case (HTTP header names are case-insensitive)."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


def console_user(username: str) -> User:
    """The console user the command acts as; refused when there is none by that name, and
    when the account is deactivated (as its API tokens are refused)."""
    found = User.objects.filter(username=username).first()
    if found is None:
        raise CommandError(f"No console user named {username}.")
    if not found.is_active:
        raise CommandError(f"The console user {username} is deactivated.")
    return found


def _host() -> str:
    """A host the API's absolute URLs (nextLink, Azure-AsyncOperation) may be built on: the
    first ALLOWED_HOSTS entry that names one host, so Django's host check accepts it."""
    for host in settings.ALLOWED_HOSTS:
        if host and host != "*":
            return host.lstrip(".")
    return "localhost"


def _url(path: str, query: dict[str, str] | None) -> str:
    """The path with its query: the one it carries (a nextLink's), then `query`, then the
    api-version unless one is there already."""
    parts = urlsplit(path)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.update(query or {})
    params.setdefault("api-version", API_VERSION)
    return f"{parts.path}?{urlencode(params, safe='$')}"


def call(
    method: str, path: str, *, body: Any = None, user: Any = None, query: dict[str, str] | None = None
) -> Response:
    """Send one request to the API's view for `path`, in-process.

    `path` may be an absolute URL the API handed out (a nextLink, an Azure-AsyncOperation):
    only its path and query are used. The request is exempt from CSRF, as a bearer client's
    is: the command line carries no cookie a foreign site could have sent.
    """
    data = json.dumps(body).encode() if body is not None else b""
    request = RequestFactory().generic(
        method.upper(), _url(path, query), data=data, content_type="application/json", HTTP_HOST=_host()
    )
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
    request.user = user if user is not None else COMMAND_LINE
    try:
        match = resolve(request.path_info)
    except Resolver404:
        response = arm.unknown_path(request)
    else:
        with audit.acting(request.user, audit.CLI):
            response = match.func(request, *match.args, **match.kwargs)
    return Response(response.status_code, _json_of(response), dict(response.items()))


def _json_of(response: HttpResponse) -> Any:
    return json.loads(response.content) if response.content else None


# --- answers as a command prints them ------------------------------------------------------------


def refusal(response: Response) -> CommandError:
    """An ARM error as the command's refusal: `(code) message`, then the target and each detail
    on a line of its own, as az prints them."""
    error = (response.json or {}).get("error") if isinstance(response.json, dict) else None
    if not isinstance(error, dict):
        return CommandError(f"The API answered {response.status}.")
    lines = [f"({error.get('code', response.status)}) {error.get('message', '')}"]
    if error.get("target"):
        lines.append(f"Target: {error['target']}")
    for detail in error.get("details") or []:
        target = f" {detail['target']}:" if detail.get("target") else ""
        lines.append(f"({detail.get('code', '')}){target} {detail.get('message', '')}")
    return CommandError("\n".join(lines))


@dataclass(frozen=True)
class Client:
    """The API as one caller sees it: answers as JSON, errors as CommandError (exit code 1)."""

    user: Any = None

    def send(self, method: str, path: str, body: Any = None) -> Any:
        """The answer's body; for a long-running operation (202 with Azure-AsyncOperation), the
        operation's status now: the command does not wait (az's --no-wait)."""
        response = call(method, path, body=body, user=self.user)
        if response.status >= 400:
            raise refusal(response)
        status_url = response.header(ASYNC_OPERATION)
        if response.status == 202 and status_url:
            return self.send("GET", status_url)
        return response.json

    def get(self, path: str) -> Any:
        return self.send("GET", path)

    def find(self, path: str) -> Any:
        """The resource at `path`, or None when the API answers 404 (it is not there yet)."""
        response = call("GET", path, user=self.user)
        if response.status == 404:
            return None
        if response.status >= 400:
            raise refusal(response)
        return response.json

    def get_all(self, path: str) -> list[Any]:
        """Every item of a list, following each nextLink, as one array (as az prints lists)."""
        items: list[Any] = []
        next_link: str | None = path
        while next_link:
            page = self.get(next_link)
            items.extend(page.get("value", []))
            next_link = page.get("nextLink")
        return items


def segment(text: str) -> str:
    """A name as one path segment: a `?` or `#` typed in a name must not become a query."""
    return quote(text, safe="")


def scale_set_path(*, resource_group: str, name: str, subscription: str | None) -> str:
    """The scale set's API path. Without a subscription, the set is found by its group and
    name (case-insensitively, as ARM names are) to learn it; with one, the path is as typed
    and the API alone decides whether the set is there."""
    if subscription is None:
        found = scale_set_named(resource_group=resource_group, name=name)
        subscription, resource_group, name = found.subscription_id, found.resource_group, found.name
    return (
        f"/subscriptions/{segment(subscription)}/resourceGroups/{segment(resource_group)}/{SCALE_SETS}/{segment(name)}"
    )


def scale_sets_path(*, subscription: str, resource_group: str | None) -> str:
    group = f"/resourceGroups/{segment(resource_group)}" if resource_group else ""
    return f"/subscriptions/{segment(subscription)}{group}/{SCALE_SETS}"


# --- az's generic update (--set PATH=VALUE) -------------------------------------------------------

_SEGMENT = re.compile(r"^([^\[\]]*)((?:\[[^\[\]]*\])*)$")
_INDEX = re.compile(r"\[([^\[\]]*)\]")
# Read-only in ARM's VirtualMachineScaleSet: az's SDK leaves them out of the PUT it sends back.
READ_ONLY = ("id", "name", "type")
READ_ONLY_PROPERTIES = ("provisioningState", "uniqueId", "timeCreated")


class PathNotFound(CommandError):
    """A --set path that names nothing in the resource (az: "Couldn't find 'x' in 'y'")."""


def split_assignment(text: str) -> tuple[str, Any]:
    """`PATH=VALUE` split at the first `=` outside brackets (a filter like `[name=x]` holds
    one); VALUE as JSON when it parses (numbers, true/false, objects), else the string."""
    depth = 0
    for position, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "=" and depth == 0:
            path, raw = text[:position], text[position + 1 :]
            break
    else:
        raise ValueError(f"'{text}' is not PATH=VALUE, like upgradePolicy.mode=Rolling.")
    if not path:
        raise ValueError(f"'{text}' names no property before '='.")
    try:
        return path, json.loads(raw)
    except ValueError:
        return path, raw


def _steps(path: str) -> list[str | int | tuple[str, str]]:
    """`a.b[0].c[name=x]` as keys, list indexes and `(key, value)` filters."""
    steps: list[str | int | tuple[str, str]] = []
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None or not (match[1] or match[2]):
            raise PathNotFound(f"'{path}' is not a property path, like upgradePolicy.mode.")
        if match[1]:
            steps.append(match[1])
        for index in _INDEX.findall(match[2]):
            key, equals, value = index.partition("=")
            number = index.removeprefix("-")
            steps.append((key, value) if equals else int(index) if number.isascii() and number.isdigit() else index)
    return steps


def _child(node: Any, step: str | int | tuple[str, str], where: str) -> tuple[Any, str | int]:
    """The key or index `step` names in `node` (keys exactly, else case-insensitively)."""
    if isinstance(step, str) and isinstance(node, dict):
        if step in node:
            return node, step
        matches = [key for key in node if key.lower() == step.lower()]
        if len(matches) == 1:
            return node, matches[0]
        options = f" Available options: {', '.join(sorted(node))}" if node else ""
        raise PathNotFound(f"Couldn't find '{step}' in {_named(where)}.{options}")
    if isinstance(step, int) and isinstance(node, list):
        if -len(node) <= step < len(node):
            return node, step
        raise PathNotFound(f"Index {step} is out of range in {_named(where)} ({len(node)} items).")
    if isinstance(step, tuple) and isinstance(node, list):
        key, value = step
        for index, item in enumerate(node):
            if isinstance(item, dict) and str(item.get(key)) == value:
                return node, index
        raise PathNotFound(f"Couldn't find an item with {key}={value} in {_named(where)}.")
    raise PathNotFound(f"Couldn't find '{step}' in {_named(where)}.")


def _named(where: str) -> str:
    return f"'{where}'" if where else "the resource"


def _label(where: str, step: str | int | tuple[str, str]) -> str:
    if isinstance(step, str):
        return f"{where}.{step}" if where else step
    return f"{where}[{step if isinstance(step, int) else '='.join(step)}]"


def assign(resource: dict[str, Any], path: str, value: Any) -> None:
    """Set the property at `path` (az's flattened form too: a first key missing at the top
    level is looked up under `properties`). Every step must exist, so a typo is refused by
    name instead of being sent and silently ignored."""
    steps = _steps(path)
    node: Any = resource
    where = ""
    properties = resource.get("properties")
    first = steps[0]
    if isinstance(first, str) and isinstance(properties, dict):
        at_top = any(key.lower() == first.lower() for key in resource)
        if not at_top and any(key.lower() == first.lower() for key in properties):
            node, where = properties, "properties"
    for step in steps[:-1]:
        parent, key = _child(node, step, where)
        node, where = parent[key], _label(where, step)
    parent, key = _child(node, steps[-1], where)
    parent[key] = value


def generic_update(resource: dict[str, Any], assignments: list[tuple[str, Any]]) -> dict[str, Any]:
    """The resource with each assignment applied in order, read-only properties dropped: the
    body az's `update --set` PUTs back."""
    for path, value in assignments:
        assign(resource, path, value)
    body = {key: value for key, value in resource.items() if key not in READ_ONLY}
    if isinstance(body.get("properties"), dict):
        body["properties"] = {
            key: value for key, value in body["properties"].items() if key not in READ_ONLY_PROPERTIES
        }
    return body
