"""ARM conventions for the API views: api-version, bearer authentication, roles, errors.

Every API view is a function wrapped by `arm_view(write=...)`. The wrapper owns what ARM
clients (the Azure SDKs, az) rely on: the `{"error": {...}}` envelope, status codes, the
WWW-Authenticate challenge, and JSON content type. Views raise; they never build errors.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from api.tokens import user_for_token
from fleet.roles import OPERATORS, VIEWERS
from upgrades.errors import OperationNotAllowed

OLDEST_API_VERSION = dt.date(2018, 10, 1)  # SPEC 7: accept 2018-10-01 and later
_API_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(-preview)?$")
CONTENT_TYPE = "application/json; charset=utf-8"

View = Callable[..., HttpResponse]


class ArmError(Exception):
    """An error answer in ARM's envelope: {"error": {"code", "message", "target"?, "details"?}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details
        self.headers = headers or {}

    def response(self) -> HttpResponse:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            body["target"] = self.target
        if self.details:
            body["details"] = self.details
        response = arm_json({"error": body}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def arm_json(data: Any, *, status: int = 200) -> JsonResponse:
    return JsonResponse(data, status=status, safe=False, content_type=CONTENT_TYPE)


def resource_not_found(resource_type: str, name: str, resource_group: str | None = None) -> ArmError:
    """ARM's own wording for a missing resource."""
    where = f" under resource group '{resource_group}'" if resource_group else ""
    return ArmError(404, "ResourceNotFound", f"The Resource '{resource_type}/{name}'{where} was not found.")


def json_body(request: HttpRequest) -> Any:
    """The request body as JSON, or 400 InvalidRequestContent (target `$`: the whole body).
    Deep nesting is refused too (json.loads raises RecursionError for it, not ValueError),
    and a body over DATA_UPLOAD_MAX_MEMORY_SIZE is 413."""
    try:
        return json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: {error}.",
            target="$",
        ) from None
    except RecursionError:
        raise ArmError(400, "InvalidRequestContent", "The request content is nested too deeply.", target="$") from None
    except RequestDataTooBig:
        raise ArmError(413, "RequestEntityTooLarge", "The request content is too large.", target="$") from None


def camel_case(field: str) -> str:
    """A model field name as ARM spells properties: max_batch_instance_percent -> maxBatchInstancePercent."""
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --- the decorator ------------------------------------------------------------------------------


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def arm_view(*, write: bool | None = None, methods: Iterable[str] = ("GET",)) -> Callable[[View], View]:
    """Wrap a function view as an ARM endpoint.

    In order: CSRF and login-page exemption (bearer clients have neither cookies nor a login
    page), the method, `?api-version=`, authentication (bearer token, or the session of a
    logged-in page), the failed-attempt rate limit, the role (reading: viewers, operators or
    staff; writing: operators or staff), then the view, with its exceptions mapped to ARM errors.
    `write=None`: the method decides (GET reads, PUT, PATCH, POST and DELETE write).
    """
    allowed = tuple(method.upper() for method in methods)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in allowed:
                    raise ArmError(
                        405,
                        "MethodNotAllowed",
                        f"The method '{request.method}' is not allowed for this resource.",
                        headers={"Allow": ", ".join(allowed)},
                    )
                check_api_version(request)
                user = authenticate(request)
                authorize(user, write=write if write is not None else request.method not in SAFE_METHODS)
                request.user = user
                return _run(view, request, *args, **kwargs)
            except ArmError as error:
                return error.response()

        return csrf_exempt(login_not_required(wrapper))

    return decorate


def _run(view: View, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    try:
        return view(request, *args, **kwargs)
    except ArmError:
        raise
    except ValidationError as error:
        raise validation_error(error) from None
    except OperationNotAllowed as error:
        raise ArmError(409, error.code, error.message) from None
    except (ObjectDoesNotExist, Http404) as error:
        raise ArmError(404, "ResourceNotFound", str(error) or "The requested resource was not found.") from None


# Model field -> where the ARM body holds it (api.bodies fills this in); other fields are
# named by their camelCase name.
FIELD_PATHS: dict[str, str] = {}


def arm_name(field: str) -> str:
    return FIELD_PATHS.get(field) or camel_case(field)


def validation_error(error: ValidationError) -> ArmError:
    """A django ValidationError as 400 InvalidParameter: target = the field (camelCase);
    several fields become `details`, one entry per message."""
    if not hasattr(error, "error_dict"):
        return ArmError(400, "InvalidParameter", " ".join(error.messages))
    details = [
        {"code": "InvalidParameter", "target": arm_name(field), "message": message}
        for field, errors in error.message_dict.items()
        for message in errors
    ]
    if len(details) == 1:
        return ArmError(400, "InvalidParameter", details[0]["message"], target=details[0]["target"])
    return ArmError(400, "InvalidParameter", "Several parameters are invalid; see details.", details=details)


# --- the steps --------------------------------------------------------------------------------


def check_api_version(request: HttpRequest) -> str:
    version = request.GET.get("api-version")
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    match = _API_VERSION.match(version)
    try:
        date = dt.date(int(match[1]), int(match[2]), int(match[3])) if match else None
    except ValueError:
        date = None
    if date is None or date < OLDEST_API_VERSION:
        raise ArmError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are "
            f"'{OLDEST_API_VERSION.isoformat()}' and later, like '2024-07-01'.",
        )
    return version


def _client_ip(request: HttpRequest) -> str:
    # The peer address only: X-Forwarded-For is trivially forged by the very clients being limited.
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _failure_key(request: HttpRequest, window: int) -> str:
    return f"api:auth-failures:{_client_ip(request)}:{window}"


def authenticate(request: HttpRequest) -> Any:
    """The caller: the bearer token's user, or the logged-in page user when no header is sent.

    Failed token attempts are counted per client address in fixed one-minute windows of
    Django's cache; past API_AUTH_FAILURES_PER_MINUTE, every token attempt from that
    address is refused with 429 until the window ends, so guessing tokens does not pay.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        if request.user.is_authenticated:
            _check_csrf(request)
            return request.user
        raise _unauthenticated("Authentication failed. The 'Authorization' header is missing.")
    now = time.time()
    window = int(now // 60)
    key = _failure_key(request, window)
    if (cache.get(key) or 0) >= settings.API_AUTH_FAILURES_PER_MINUTE:
        raise ArmError(
            429,
            "TooManyRequests",
            "Too many failed authentication attempts from this address. Try again later.",
            headers={"Retry-After": str(max(1, 60 - int(now % 60)))},
        )
    scheme, _, token = header.partition(" ")
    user = user_for_token(token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        cache.add(key, 0, timeout=120)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=120)
        raise _unauthenticated("Authentication failed. The access token is invalid, revoked or malformed.")
    return user


def _check_csrf(request: HttpRequest) -> None:
    """A page calling with its session cookie must prove the call is its own (a bearer token
    cannot be sent by a foreign site, a cookie can): unsafe methods need the CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return
    refused = CsrfViewMiddleware(_no_response).process_view(request, _no_view, (), {})
    if refused is not None:
        raise ArmError(403, "InvalidCsrfToken", "A request with a session cookie must carry the CSRF token.")


def _no_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("never called")


def _no_view(request: HttpRequest) -> HttpResponse:
    raise AssertionError("never called")


def _unauthenticated(message: str) -> ArmError:
    return ArmError(401, "AuthenticationFailed", message, headers={"WWW-Authenticate": 'Bearer realm="vmss-console"'})


def authorize(user: Any, *, write: bool) -> None:
    if user.is_staff or user.is_superuser:
        return
    groups = {group.name for group in user.groups.all()}
    if write and OPERATORS in groups:
        return
    if not write and groups & {VIEWERS, OPERATORS}:
        return
    needed = "the operators role" if write else "a console role (viewers, operators or staff)"
    raise ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{user.get_username()}' does not have authorization to perform this action: it needs {needed}.",
    )


@login_not_required
@csrf_exempt
def unknown_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Anything under /subscriptions/ that no route matches: ARM's 404, never an HTML page."""
    return ArmError(
        404,
        "InvalidResourceType",
        f"The resource type or path '{request.path}' could not be found.",
    ).response()
