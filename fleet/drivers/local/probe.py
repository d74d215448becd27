"""Health probes over real sockets, and the R-H-2 state machine that turns their answers into a
health state (SPEC 4).

A probe connects to an instance's own port on 127.0.0.1, the way the Application Health
extension probes its VM's local endpoint and a load-balancer probe reaches a VM through its NAT
rule. Probing is async so that one round over a few hundred instances takes as long as the
slowest answer, not the sum of them; `probe_all` runs a round from sync code (Celery tasks).

Pure of the database: the driver reads the rows, calls these, and stores `ProbeTracker.to_json()`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import math
import re
import ssl
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import quote

from fleet.health import health_source_of
from fleet.models import ApplicationHealthSettings, HealthState, ScaleSet, ScaleSetExtension

PROTOCOLS = ("http", "https", "tcp")
ANSWER_STATES = (HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN)

# The most a probe reads of a response body (and of any one header line): a health answer is a
# few dozen bytes, and an endpoint that streams more must not hold a probing worker's memory.
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
# The longest a per-probe time-out defaults to (see ProbeSpec.timeout_seconds).
DEFAULT_TIMEOUT_CAP_SECONDS = 5.0
# How long closing a connection may take (a TLS close waits for the peer's close_notify) before
# the socket is dropped: the answer is already known, and a round must not wait on a goodbye.
CLOSE_SECONDS = 0.5
RICH_KEY = "ApplicationHealthState"
USER_AGENT = "vmss-upgrade-console-health-probe"


@dataclass(frozen=True)
class ProbeSpec:
    """How to probe the instances of one set: what the Application Health extension or the
    load-balancer probe of the set is configured to do (R-H-1, R-H-2)."""

    protocol: str
    request_path: str = "/"
    interval_seconds: float = 5.0
    number_of_probes: int = 1
    grace_period_seconds: float = 5.0
    # Per-probe time-out; 0 means min(interval, 5 s). A probe must be over before the next one
    # is due, and one endpoint that accepts and never answers must not hold a round over
    # hundreds of instances for long: a round lasts as long as its slowest probe.
    timeout_seconds: float = 0.0
    # What an instance that never gives an answer becomes once the grace period is over;
    # "" means as HealthSource.unanswered_state: Unknown for the extension's http(s), Unhealthy
    # for tcp (rich states have no Unknown over tcp) and for load-balancer probes.
    unanswered_state: str = ""
    # Rich health states (Application Health extension v2): a 2xx answer's body carries the
    # state. A load-balancer probe is not rich: any 200 is healthy, whatever the body.
    rich: bool = True
    # The port the set configures, for display only: every instance listens on a port of its
    # own on 127.0.0.1 that the driver passes to the probe, as a NAT rule maps a VM's port.
    configured_port: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"A probe protocol is http, https or tcp (got {self.protocol!r}).")
        if not self.request_path.startswith("/"):
            raise ValueError(f"A probe request path starts with / (got {self.request_path!r}).")
        if not self.interval_seconds > 0:
            raise ValueError(f"A probe interval is positive (got {self.interval_seconds!r}).")
        if self.number_of_probes < 1:
            raise ValueError(f"numberOfProbes is at least 1 (got {self.number_of_probes!r}).")
        if self.grace_period_seconds < 0:
            raise ValueError(f"A grace period is not negative (got {self.grace_period_seconds!r}).")
        if self.timeout_seconds < 0:
            raise ValueError(f"A probe time-out is not negative (got {self.timeout_seconds!r}).")
        if not self.timeout_seconds:
            object.__setattr__(self, "timeout_seconds", min(self.interval_seconds, DEFAULT_TIMEOUT_CAP_SECONDS))
        if not self.unanswered_state:
            unknown = self.rich and self.protocol in ("http", "https")
            object.__setattr__(self, "unanswered_state", HealthState.UNKNOWN if unknown else HealthState.UNHEALTHY)
        if self.unanswered_state not in (HealthState.UNKNOWN, HealthState.UNHEALTHY):
            raise ValueError(f"An unanswered probe means Unknown or Unhealthy (got {self.unanswered_state!r}).")

    @classmethod
    def for_scale_set(cls, scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> ProbeSpec | None:
        """The probe of the set's one health source (R-H-1), or None when it has none (R-H-3:
        health then comes from the power state and the extensions, not from a probe)."""
        source = health_source_of(scale_set, extensions)
        if source.kind == "probe":
            request_path = scale_set.health_probe_path or "/"
            configured_port = scale_set.health_probe_port
        elif source.kind == "extension":
            app_health = next(e for e in extensions if e.is_application_health)
            settings = ApplicationHealthSettings.from_settings(app_health.settings)
            request_path = settings.request_path or "/"
            configured_port = settings.port
        else:
            return None
        if source.protocol == "tcp":
            request_path = "/"
        elif not request_path.startswith("/"):
            request_path = "/" + request_path  # settings take "health" as well as "/health"
        return cls(
            protocol=source.protocol,
            request_path=request_path,
            interval_seconds=source.interval_seconds,
            number_of_probes=source.number_of_probes,
            grace_period_seconds=source.grace_period_seconds,
            unanswered_state=source.unanswered_state,
            rich=source.kind == "extension",
            configured_port=configured_port,
        )

    @property
    def endpoint(self) -> str:
        """What the set configures, as an operator reads it: "http :80/health"."""
        port = f":{self.configured_port}" if self.configured_port else ""
        path = self.request_path if self.protocol != "tcp" else ""
        return f"{self.protocol} {port}{path}".rstrip()


@dataclass(frozen=True)
class Answer:
    """One probe's answer: Healthy, Unhealthy or Unknown (R-H-2), and why, in a few words."""

    state: str
    detail: str


# --- one probe ---------------------------------------------------------------------------


class _MalformedResponse(Exception):
    """The endpoint answered, but not in HTTP/1.x."""


async def probe_once(port: int, spec: ProbeSpec, *, host: str = "127.0.0.1") -> Answer:
    """Probe one endpoint once, the whole exchange bounded by the spec's time-out (R-H-2).

    tcp: a completed connect is Healthy. http(s): GET the request path; a rich spec reads the
    state from a 2xx answer's body, a load-balancer spec takes any 200 as Healthy. Anything
    else — refused, reset, timed out, non-2xx, malformed, a body without the state — is
    Unknown; the tracker decides what Unknown answers make of the instance. Never raises for
    what the endpoint does.
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(spec.timeout_seconds):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=_unverified_tls() if spec.protocol == "https" else None,
                limit=MAX_BODY_BYTES,
            )
            if spec.protocol == "tcp":
                return Answer(HealthState.HEALTHY, "TCP connection accepted")
            return await _http_exchange(reader, writer, host, port, spec)
    # TimeoutError is an OSError since Python 3.11, and so are the TLS errors: order matters.
    except TimeoutError:
        return _unknown(f"timed out after {spec.timeout_seconds:.1f} s")
    except ConnectionRefusedError:
        return _unknown("connection refused")
    except (ConnectionResetError, BrokenPipeError):
        return _unknown("connection reset")
    except ssl.SSLError as error:
        return _unknown(f"TLS failed: {error.reason or error}")
    except asyncio.IncompleteReadError:
        return _unknown("connection closed before the response ended")
    except _MalformedResponse as error:
        return _unknown(f"malformed HTTP response: {error}")
    except OSError as error:
        return _unknown(f"connection failed: {error.strerror or error}")
    finally:
        if writer is not None:
            await _close(writer)


def _unknown(detail: str) -> Answer:
    return Answer(HealthState.UNKNOWN, detail)


@functools.cache
def _unverified_tls() -> ssl.SSLContext:
    """TLS without certificate checks: the Application Health extension does not verify the
    local endpoint's certificate (it is usually self-signed), and neither do we."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await writer.wait_closed()
    except OSError:  # TimeoutError and TLS errors included: the socket goes either way
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r?\n")
# Request-path characters sent as they are; anything else (spaces, CR/LF) is percent-encoded,
# so an odd path in the settings cannot break the request line.
_PATH_SAFE = "/?&=%:@!$'()*+,;~-._"


async def _http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int, spec: ProbeSpec
) -> Answer:
    request = (
        f"GET {quote(spec.request_path, safe=_PATH_SAFE)} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: application/json\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(request.encode("ascii"))
    await writer.drain()

    status_line = await _read_line(reader)
    if not status_line:
        return _unknown("connection closed without a response")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise _MalformedResponse(f"status line {_excerpt(status_line)}")
    status = int(match.group(1))
    headers = await _read_headers(reader)

    if not spec.rich:
        # A load-balancer probe: 200 is healthy whatever the body, anything else is not.
        return Answer(HealthState.HEALTHY if status == 200 else HealthState.UNKNOWN, f"HTTP {status}")
    if not 200 <= status < 300:
        return _unknown(f"HTTP {status}")
    body = await _read_body(reader, headers, status)
    if body is None:
        return _unknown(f"HTTP {status}, body larger than {MAX_BODY_BYTES // 1024} KiB")
    return rich_answer(body)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError as error:  # a line longer than the stream's limit
        raise _MalformedResponse(f"a line longer than {MAX_BODY_BYTES // 1024} KiB") from error


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = await _read_line(reader)
        if not line:
            raise asyncio.IncompleteReadError(partial=b"", expected=None)
        if line in (b"\r\n", b"\n"):
            return headers
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise _MalformedResponse(f"header line {_excerpt(line)}")
        headers[name.strip().lower()] = value.strip()
    raise _MalformedResponse(f"more than {MAX_HEADER_LINES} header lines")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int) -> bytes | None:
    """The body as framed by the headers; None when it is larger than MAX_BODY_BYTES."""
    if status in (204, 304):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise _MalformedResponse(f"Content-Length {headers['content-length']!r}") from None
        if length < 0:
            raise _MalformedResponse(f"Content-Length {length}")
        if length > MAX_BODY_BYTES:
            return None
        return await reader.readexactly(length)
    # No framing: the body ends when the endpoint closes the connection (we asked it to).
    body = b""
    while len(body) <= MAX_BODY_BYTES:
        chunk = await reader.read(MAX_BODY_BYTES + 1 - len(body))
        if not chunk:
            return body
        body += chunk
    return None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes | None:
    body = b""
    while True:
        size_line = await _read_line(reader)
        if not size_line:
            raise asyncio.IncompleteReadError(partial=body, expected=None)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _MalformedResponse(f"chunk size {_excerpt(size_line)}") from None
        if size == 0:
            return body  # trailers, if any, are left unread: the connection closes anyway
        if len(body) + size > MAX_BODY_BYTES:
            return None
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk


def rich_answer(body: bytes) -> Answer:
    """The state a 2xx body reports under rich health states (R-H-2).

    The value is matched without regard to case ("healthy" is Healthy): the body is written by
    hand in many an application, and a case slip should not make a healthy instance Unknown.
    """
    try:
        document: Any = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        document = None
    value = document.get(RICH_KEY) if isinstance(document, dict) else None
    if not isinstance(value, str):
        return _unknown(f'body is not {{"{RICH_KEY}": …}} (got {_excerpt(body)})')
    for state in (HealthState.HEALTHY, HealthState.UNHEALTHY):
        if value.lower() == state.lower():
            return Answer(state, f"{RICH_KEY} {state}")
    return _unknown(f"{RICH_KEY} {_excerpt(value)} is neither Healthy nor Unhealthy")


def _excerpt(text: bytes | str, limit: int = 40) -> str:
    """A short, printable quote of what the endpoint sent, for the detail line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")


# --- many probes at once -----------------------------------------------------------------


async def probe_many[Key: Hashable](
    targets: Sequence[tuple[Key, int, ProbeSpec]], *, concurrency: int = 256, host: str = "127.0.0.1"
) -> dict[Key, Answer]:
    """Probe every (key, port, spec) at once and answer by key.

    A semaphore bounds the sockets open at a time (each probe holds one, and the accepted end
    holds another on this machine); with targets up to `concurrency` the round lasts about as
    long as its slowest probe. One target that fails in an unforeseen way is Unknown, not an
    exception that loses the answers of the others.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency is at least 1 (got {concurrency!r}).")
    gate = asyncio.Semaphore(concurrency)

    async def probe(key: Key, port: int, spec: ProbeSpec) -> tuple[Key, Answer]:
        async with gate:
            try:
                return key, await probe_once(port, spec, host=host)
            except Exception as error:  # one bad target (a caller's bad port) must not end the round
                return key, _unknown(f"probe failed: {type(error).__name__}: {error}")

    answers = await asyncio.gather(*(probe(key, port, spec) for key, port, spec in targets))
    return dict(answers)


def probe_all[Key: Hashable](
    targets: Sequence[tuple[Key, int, ProbeSpec]], *, concurrency: int = 256, host: str = "127.0.0.1"
) -> dict[Key, Answer]:
    """`probe_many` for sync callers (Celery tasks): runs it in a fresh event loop.

    Must not be called from inside a running event loop (an async view, a consumer, an async
    test): `asyncio.run` cannot nest, and blocking the loop would stall everything on it. Await
    `probe_many` there instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe_many(targets, concurrency=concurrency, host=host))
    raise RuntimeError("probe_all() runs its own event loop: await probe_many() inside a running one.")


# --- the state machine -------------------------------------------------------------------


@dataclass
class ProbeTracker:
    """What the answers of one instance's probes make of its health (R-H-2), from its boot on.

    - Initializing until numberOfProbes equal answers in a row, Healthy or Unhealthy: then that
      state. Unknown answers (refused, timed out, non-2xx, bad body) break a run but do not end
      initialization: an application that is still starting does not listen yet, and that is
      what the grace period is for.
    - When the grace period (from boot) ends while still initializing: the spec's
      unanswered_state (Unknown for http(s), Unhealthy for tcp). A later run still decides.
    - Once decided, a change needs numberOfProbes equal answers in a row too: one odd answer
      does not flip the state. A run of Unknown answers makes the instance unanswered_state:
      Unknown for http(s); over tcp, and for a load-balancer probe, there is no Unknown, and
      an endpoint that stops accepting is Unhealthy.

    Stored between probes as `to_json()` (a database JSON field), with the spec it was booted
    with: the rules that held at boot hold until the next boot. The run is capped at
    numberOfProbes, so the dict stays small however long the instance lives.
    """

    spec: ProbeSpec
    booted_at: dt.datetime
    # The state decided so far: Initializing until a run of answers or the grace period decides.
    decided: str = HealthState.INITIALIZING
    run_state: str = ""
    run_length: int = 0
    last_answer_at: dt.datetime | None = None

    @property
    def grace_ends_at(self) -> dt.datetime:
        return self.booted_at + dt.timedelta(seconds=self.spec.grace_period_seconds)

    def state(self, at: dt.datetime) -> str:
        """The health state at `at`, from the answers observed so far."""
        if self.decided == HealthState.INITIALIZING and at >= self.grace_ends_at:
            return self.spec.unanswered_state
        return self.decided

    def observe(self, answer_state: str, at: dt.datetime) -> str:
        """Count one probe's answer, given at `at`; the health state after it."""
        if answer_state not in ANSWER_STATES:
            raise ValueError(f"A probe answers Healthy, Unhealthy or Unknown (got {answer_state!r}).")
        self.decided = self.state(at)  # the grace period may have ended since the last answer
        if answer_state == self.run_state:
            self.run_length = min(self.run_length + 1, self.spec.number_of_probes)
        else:
            self.run_state, self.run_length = str(answer_state), 1
        self.last_answer_at = at
        if self.run_length >= self.spec.number_of_probes:
            if answer_state != HealthState.UNKNOWN:
                self.decided = str(answer_state)
            elif self.decided != HealthState.INITIALIZING:
                self.decided = self.spec.unanswered_state
        return self.decided

    def next_probe_at(self, after: dt.datetime) -> dt.datetime:
        """When the instance is next due a probe after `after`.

        Probes fall every interval from boot (the first one interval after it), so
        numberOfProbes healthy answers settle an instance at interval × probes
        (HealthSource.settle_seconds), and a late round skips the slots it missed instead of
        bunching probes together. While initializing, the end of the grace period is due too
        when it comes first: the instance changes state then, and an upgrade's health wait may
        end then (SPEC 3.1)."""
        elapsed = (after - self.booted_at).total_seconds()
        slots = max(1, math.floor(elapsed / self.spec.interval_seconds) + 1)
        due = self.booted_at + dt.timedelta(seconds=slots * self.spec.interval_seconds)
        if self.decided == HealthState.INITIALIZING and after < self.grace_ends_at < due:
            return self.grace_ends_at
        return due

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": asdict(self.spec),
            "booted_at": self.booted_at.isoformat(),
            "decided": str(self.decided),
            "run_state": str(self.run_state),
            "run_length": self.run_length,
            "last_answer_at": self.last_answer_at.isoformat() if self.last_answer_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeTracker:
        last_answer_at = data.get("last_answer_at")
        spec_fields = {field.name for field in fields(ProbeSpec)}
        return cls(
            spec=ProbeSpec(**{name: value for name, value in data["spec"].items() if name in spec_fields}),
            booted_at=dt.datetime.fromisoformat(data["booted_at"]),
            decided=str(data["decided"]),
            run_state=str(data.get("run_state", "")),
            run_length=int(data.get("run_length", 0)),
            last_answer_at=dt.datetime.fromisoformat(last_answer_at) if last_answer_at else None,
        )
