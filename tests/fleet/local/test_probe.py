"""fleet/drivers/local/probe.py: health probes over real sockets and the R-H-2 state machine.

Every probe test talks to a real server on 127.0.0.1 started by the test (asyncio servers in
the test's own event loop, a thread for the sync wrapper). No database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.drivers.local.probe import (
    MAX_BODY_BYTES,
    Answer,
    ProbeSpec,
    ProbeTracker,
    probe_all,
    probe_many,
    probe_once,
)
from fleet.models import HealthState, ScaleSet, ScaleSetExtension
from tests.factories import APP_HEALTH_HTTP, APP_HEALTH_TCP

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

HTTP = ProbeSpec(protocol="http", request_path="/health", timeout_seconds=2.0)
HTTPS = ProbeSpec(protocol="https", request_path="/health", timeout_seconds=2.0)
TCP = ProbeSpec(protocol="tcp", timeout_seconds=2.0)
LB_HTTP = ProbeSpec(protocol="http", request_path="/health", rich=False, timeout_seconds=2.0)
SHORT_TIMEOUT = 0.3


# --- servers -----------------------------------------------------------------------------


def http_response(status: int, body: bytes | str = b"", *, reason: str = "Whatever") -> bytes:
    payload = body.encode() if isinstance(body, str) else body
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


def rich_body(state: str) -> str:
    return json.dumps({"ApplicationHealthState": state})


class Endpoint:
    """Answers every request with the same bytes and keeps the requests it read."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.response)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the prober hung up first: what it made of that is the test's question
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, reads whatever comes until the prober hangs up, and never says a word."""
    await reader.read()
    writer.close()


async def resets_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    # SO_LINGER 0: closing sends a RST instead of a FIN.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def greets_in_plain_text(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speaks plain HTTP at once, whatever the prober sends (a TLS hello, here)."""
    writer.write(http_response(200, rich_body("Healthy")))
    await reader.read()
    writer.close()


async def accepts_and_closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A server on a free port of 127.0.0.1 for the block; its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        async with asyncio.timeout(5):
            await server.wait_closed()


def closed_port() -> int:
    """A port nothing listens on: bound for a moment to learn it, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def self_signed_tls(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate signed by its own key, as a VM's local health
    endpoint usually has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


# --- ProbeSpec ---------------------------------------------------------------------------


def test_spec_time_out_defaults_to_the_interval_capped_at_five_seconds():
    assert ProbeSpec(protocol="http", interval_seconds=15).timeout_seconds == 5.0
    assert ProbeSpec(protocol="http", interval_seconds=2).timeout_seconds == 2.0
    assert ProbeSpec(protocol="http", interval_seconds=15, timeout_seconds=1.5).timeout_seconds == 1.5


def test_spec_unanswered_state_is_unknown_for_rich_http_and_unhealthy_for_tcp_and_lb_probes():
    """R-H-2: rich states have no Unknown over tcp, and a load-balancer probe is binary."""
    assert ProbeSpec(protocol="http").unanswered_state == HealthState.UNKNOWN
    assert ProbeSpec(protocol="https").unanswered_state == HealthState.UNKNOWN
    assert ProbeSpec(protocol="tcp").unanswered_state == HealthState.UNHEALTHY
    assert ProbeSpec(protocol="http", rich=False).unanswered_state == HealthState.UNHEALTHY


def test_spec_refuses_an_unknown_protocol():
    with pytest.raises(ValueError, match="http, https or tcp"):
        ProbeSpec(protocol="udp")


def test_spec_for_a_set_with_the_application_health_extension_takes_its_settings():
    """R-H-1: port, requestPath, intervalInSeconds, numberOfProbes, gracePeriod."""
    settings = {**APP_HEALTH_HTTP["settings"], "intervalInSeconds": 10, "numberOfProbes": 3, "gracePeriod": 600}
    extension = ScaleSetExtension(**{**APP_HEALTH_HTTP, "settings": settings})

    spec = ProbeSpec.for_scale_set(ScaleSet(name="web"), [extension])

    assert spec == ProbeSpec(
        protocol="http",
        request_path="/health",
        interval_seconds=10,
        number_of_probes=3,
        grace_period_seconds=600,
        timeout_seconds=5.0,
        unanswered_state=HealthState.UNKNOWN,
        rich=True,
        configured_port=80,
    )
    assert spec.endpoint == "http :80/health"


def test_spec_for_a_set_takes_a_request_path_without_its_leading_slash():
    settings = {**APP_HEALTH_HTTP["settings"], "requestPath": "health"}
    extension = ScaleSetExtension(**{**APP_HEALTH_HTTP, "settings": settings})

    spec = ProbeSpec.for_scale_set(ScaleSet(name="web"), [extension])

    assert spec is not None
    assert spec.request_path == "/health"


def test_spec_for_a_set_with_an_extension_over_tcp_is_unhealthy_when_unanswered():
    spec = ProbeSpec.for_scale_set(ScaleSet(name="web"), [ScaleSetExtension(**APP_HEALTH_TCP)])

    assert spec is not None
    assert (spec.protocol, spec.rich, spec.configured_port) == ("tcp", True, 8080)
    assert spec.unanswered_state == HealthState.UNHEALTHY


def test_spec_for_a_set_with_a_load_balancer_probe_is_binary_with_one_probe():
    scale_set = ScaleSet(
        name="web",
        health_probe_protocol="http",
        health_probe_port=8000,
        health_probe_path="/ready",
        health_probe_interval_seconds=20,
    )

    spec = ProbeSpec.for_scale_set(scale_set, [])

    assert spec is not None
    assert (spec.protocol, spec.request_path, spec.configured_port, spec.rich) == ("http", "/ready", 8000, False)
    assert (spec.interval_seconds, spec.number_of_probes, spec.unanswered_state) == (20, 1, HealthState.UNHEALTHY)


def test_spec_for_a_set_without_a_health_source_is_none():
    """R-H-3: no probe; health comes from the power state and the extensions."""
    assert ProbeSpec.for_scale_set(ScaleSet(name="web"), []) is None


# --- probe_once: http(s), rich states (R-H-2) --------------------------------------------


@pytest.mark.asyncio
async def test_http_2xx_with_healthy_body_is_healthy_and_asks_for_the_request_path():
    """R-H-2: 2xx with {"ApplicationHealthState": "Healthy"}."""
    endpoint = Endpoint(http_response(200, rich_body("Healthy")))
    async with serving(endpoint) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.HEALTHY, "ApplicationHealthState Healthy")
    request = endpoint.requests[0].decode()
    assert request.startswith("GET /health HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in request
    assert "Connection: close\r\n" in request


@pytest.mark.asyncio
async def test_http_2xx_with_unhealthy_body_is_unhealthy():
    """R-H-2: 2xx with {"ApplicationHealthState": "Unhealthy"}; any 2xx counts, not only 200."""
    async with serving(Endpoint(http_response(202, rich_body("Unhealthy")))) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNHEALTHY, "ApplicationHealthState Unhealthy")


@pytest.mark.asyncio
async def test_http_rich_state_value_is_matched_without_regard_to_case():
    async with serving(Endpoint(http_response(200, rich_body("healthy")))) as port:
        answer = await probe_once(port, HTTP)

    assert answer.state == HealthState.HEALTHY


@pytest.mark.asyncio
async def test_http_chunked_body_is_read_to_its_end():
    body = rich_body("Healthy").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    async with serving(Endpoint(chunked)) as port:
        answer = await probe_once(port, HTTP)

    assert answer.state == HealthState.HEALTHY


@pytest.mark.asyncio
async def test_http_body_framed_by_the_close_of_the_connection_is_read():
    unframed = b"HTTP/1.0 200 OK\r\n\r\n" + rich_body("Unhealthy").encode()
    async with serving(Endpoint(unframed)) as port:
        answer = await probe_once(port, HTTP)

    assert answer.state == HealthState.UNHEALTHY


@pytest.mark.asyncio
async def test_http_non_2xx_is_unknown_whatever_the_body():
    """R-H-2: non-2xx → Unknown."""
    async with serving(Endpoint(http_response(503, rich_body("Healthy")))) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "HTTP 503")


@pytest.mark.asyncio
async def test_http_2xx_with_a_body_that_is_not_json_is_unknown():
    """R-H-2: bad body → Unknown."""
    async with serving(Endpoint(http_response(200, "OK"))) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNKNOWN, """body is not {"ApplicationHealthState": …} (got 'OK')""")


@pytest.mark.asyncio
async def test_http_2xx_with_json_without_the_state_key_is_unknown():
    """R-H-2: bad body → Unknown."""
    async with serving(Endpoint(http_response(200, json.dumps({"status": "Healthy"})))) as port:
        answer = await probe_once(port, HTTP)

    assert answer.state == HealthState.UNKNOWN
    assert answer.detail.startswith('body is not {"ApplicationHealthState": …}')


@pytest.mark.asyncio
async def test_http_2xx_with_a_state_that_is_neither_healthy_nor_unhealthy_is_unknown():
    async with serving(Endpoint(http_response(200, rich_body("Degraded")))) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "ApplicationHealthState 'Degraded' is neither Healthy nor Unhealthy")


@pytest.mark.asyncio
async def test_http_body_larger_than_the_bound_is_unknown_without_reading_it():
    async with serving(Endpoint(http_response(200, b" " * (MAX_BODY_BYTES + 1)))) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "HTTP 200, body larger than 64 KiB")


@pytest.mark.asyncio
async def test_http_malformed_response_is_unknown():
    """R-H-2: an answer that is not HTTP → Unknown."""
    async with serving(Endpoint(b"SSH-2.0-OpenSSH_9.6\r\n")) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "malformed HTTP response: status line 'SSH-2.0-OpenSSH_9.6'")


@pytest.mark.asyncio
async def test_http_endpoint_that_never_answers_times_out_as_unknown():
    """R-H-2: time-out → Unknown, within the spec's time-out."""
    spec = ProbeSpec(protocol="http", timeout_seconds=SHORT_TIMEOUT)
    async with serving(never_answers) as port:
        started = time.monotonic()
        answer = await probe_once(port, spec)
        took = time.monotonic() - started

    assert answer == Answer(HealthState.UNKNOWN, "timed out after 0.3 s")
    assert SHORT_TIMEOUT <= took < SHORT_TIMEOUT + 1.0


@pytest.mark.asyncio
async def test_http_refused_connection_is_unknown():
    """R-H-2: refused → Unknown."""
    answer = await probe_once(closed_port(), HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "connection refused")


@pytest.mark.asyncio
async def test_http_connection_reset_is_unknown():
    async with serving(resets_after_request) as port:
        answer = await probe_once(port, HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "connection reset")


@pytest.mark.asyncio
async def test_https_with_a_self_signed_certificate_is_probed_without_verification(self_signed_tls):
    """R-H-2 over https: the extension does not verify the endpoint's certificate."""
    endpoint = Endpoint(http_response(200, rich_body("Healthy")))
    async with serving(endpoint, tls=self_signed_tls) as port:
        answer = await probe_once(port, HTTPS)

    assert answer == Answer(HealthState.HEALTHY, "ApplicationHealthState Healthy")
    assert endpoint.requests[0].startswith(b"GET /health HTTP/1.1\r\n")


@pytest.mark.asyncio
async def test_https_against_an_endpoint_without_tls_is_unknown():
    async with serving(greets_in_plain_text) as port:
        answer = await probe_once(port, HTTPS)

    assert answer.state == HealthState.UNKNOWN
    assert answer.detail.startswith("TLS failed: "), answer.detail


# --- probe_once: load-balancer probes and tcp ---------------------------------------------


@pytest.mark.asyncio
async def test_load_balancer_http_probe_takes_any_200_as_healthy_whatever_the_body():
    """A plain load-balancer probe has no rich body: 200 is healthy."""
    async with serving(Endpoint(http_response(200, "OK"))) as port:
        answer = await probe_once(port, LB_HTTP)

    assert answer == Answer(HealthState.HEALTHY, "HTTP 200")


@pytest.mark.asyncio
async def test_load_balancer_http_probe_takes_anything_but_200_as_unknown():
    async with serving(Endpoint(http_response(204))) as port:
        answer = await probe_once(port, LB_HTTP)

    assert answer == Answer(HealthState.UNKNOWN, "HTTP 204")


@pytest.mark.asyncio
async def test_tcp_completed_connect_is_healthy():
    """R-H-2 over tcp: a completed handshake is Healthy."""
    async with serving(accepts_and_closes) as port:
        answer = await probe_once(port, TCP)

    assert answer == Answer(HealthState.HEALTHY, "TCP connection accepted")


@pytest.mark.asyncio
async def test_tcp_refused_connect_is_unknown():
    """R-H-2 over tcp: refused is an unanswered probe; the tracker makes it Unhealthy."""
    answer = await probe_once(closed_port(), TCP)

    assert answer == Answer(HealthState.UNKNOWN, "connection refused")


# --- probe_many and probe_all -------------------------------------------------------------


@pytest.mark.asyncio
async def test_probe_many_over_300_endpoints_answers_each_in_about_the_slowest_probe():
    """Concurrency, not a benchmark: 300 endpoints, 10 of them silent until a 1 s time-out,
    would take over 10 s one after the other; all at once they take about 1 s."""
    slow = ProbeSpec(protocol="http", timeout_seconds=1.0)
    async with contextlib.AsyncExitStack() as stack:
        expected: dict[int, str] = {}
        targets: list[tuple[int, int, ProbeSpec]] = []
        for index in range(300):
            if index % 30 == 7:
                port = await stack.enter_async_context(serving(never_answers))
                targets.append((index, port, slow))
                expected[index] = HealthState.UNKNOWN
            else:
                state = HealthState.HEALTHY if index % 2 else HealthState.UNHEALTHY
                port = await stack.enter_async_context(serving(Endpoint(http_response(200, rich_body(state)))))
                targets.append((index, port, HTTP))
                expected[index] = state

        started = time.monotonic()
        answers = await probe_many(targets)
        took = time.monotonic() - started

    assert {key: answer.state for key, answer in answers.items()} == expected
    assert sum(answer.detail == "timed out after 1.0 s" for answer in answers.values()) == 10
    assert took < 5.0


@pytest.mark.asyncio
async def test_probe_many_answers_unknown_for_a_target_that_fails_and_still_answers_the_others():
    async with serving(Endpoint(http_response(200, rich_body("Healthy")))) as port:
        answers = await probe_many([("good", port, HTTP), ("bad", 70000, HTTP)])

    assert answers["good"].state == HealthState.HEALTHY
    assert answers["bad"].state == HealthState.UNKNOWN
    assert answers["bad"].detail.startswith("probe failed: OverflowError")


@pytest.mark.asyncio
async def test_probe_many_with_a_concurrency_of_one_still_answers_everything():
    async with serving(Endpoint(http_response(200, rich_body("Healthy")))) as port:
        answers = await probe_many([(key, port, HTTP) for key in "abc"], concurrency=1)

    assert {key: answer.state for key, answer in answers.items()} == dict.fromkeys("abc", HealthState.HEALTHY)


class _HealthyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = rich_body("Healthy").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads the answers, not a request log."""


@pytest.fixture
def threaded_http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_probe_all_runs_a_round_from_sync_code(threaded_http_server):
    answers = probe_all([("web_0", threaded_http_server, HTTP), ("web_1", closed_port(), TCP)])

    assert answers == {
        "web_0": Answer(HealthState.HEALTHY, "ApplicationHealthState Healthy"),
        "web_1": Answer(HealthState.UNKNOWN, "connection refused"),
    }


@pytest.mark.asyncio
async def test_probe_all_refuses_to_run_inside_a_running_event_loop():
    with pytest.raises(RuntimeError, match="await probe_many"):
        probe_all([("web_0", closed_port(), TCP)])


# --- ProbeTracker (R-H-2) -----------------------------------------------------------------

BOOT = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
H, U, X = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN


def at(seconds: float) -> dt.datetime:
    return BOOT + dt.timedelta(seconds=seconds)


def tracker(protocol: str = "http", *, probes: int = 3, grace: float = 60, interval: float = 5) -> ProbeTracker:
    spec = ProbeSpec(protocol=protocol, interval_seconds=interval, number_of_probes=probes, grace_period_seconds=grace)
    return ProbeTracker(spec=spec, booted_at=BOOT)


def feed(machine: ProbeTracker, answers: list[str], *, start: float = 5, interval: float = 5) -> list[str]:
    """Observe the answers one interval apart; the state after each."""
    return [machine.observe(answer, at(start + i * interval)) for i, answer in enumerate(answers)]


def test_tracker_is_initializing_until_number_of_probes_equal_answers_in_a_row():
    """R-H-2: Initializing until numberOfProbes equal answers in a row, then that state."""
    machine = tracker(probes=3)

    assert machine.state(at(0)) == HealthState.INITIALIZING
    assert feed(machine, [H, H, H]) == [HealthState.INITIALIZING, HealthState.INITIALIZING, H]
    assert tracker(probes=3).observe(U, at(5)) == HealthState.INITIALIZING
    assert feed(tracker(probes=2), [U, U]) == [HealthState.INITIALIZING, U]


def test_tracker_odd_answer_while_initializing_starts_the_run_again():
    """R-H-2: equal answers *in a row*."""
    machine = tracker(probes=3)

    states = feed(machine, [H, H, U, H, H, H])

    assert states == [HealthState.INITIALIZING] * 5 + [H]


def test_tracker_unknown_answers_do_not_end_initialization_before_the_grace_period():
    """R-H-2: an application still starting does not answer yet; the grace period is its time."""
    machine = tracker(probes=1, grace=60)

    assert feed(machine, [X, X, X]) == [HealthState.INITIALIZING] * 3
    assert machine.state(at(59)) == HealthState.INITIALIZING


def test_tracker_grace_period_end_while_initializing_is_unknown_over_http():
    """R-H-2: grace period over without a verdict → Unknown (http)."""
    machine = tracker("http", probes=3, grace=30)
    feed(machine, [H, H, X])

    assert machine.state(at(29)) == HealthState.INITIALIZING
    assert machine.state(at(30)) == X
    assert machine.observe(X, at(35)) == X


def test_tracker_grace_period_end_while_initializing_is_unhealthy_over_tcp():
    """R-H-2: grace period over without a verdict → Unhealthy (tcp)."""
    machine = tracker("tcp", probes=1, grace=30)
    feed(machine, [X, X])

    assert machine.state(at(30)) == U
    assert machine.observe(X, at(35)) == U


def test_tracker_a_run_of_equal_answers_after_the_grace_period_still_decides():
    """R-H-2: a late run of equal answers decides, even one begun before the grace period ended."""
    machine = tracker("http", probes=3, grace=30)
    feed(machine, [X, X, X, X, H, H])  # t = 5..30; the grace period ends at 30

    assert machine.state(at(30)) == X
    assert machine.observe(H, at(35)) == H


def test_tracker_one_odd_answer_after_initialization_does_not_flip_the_state():
    """R-H-2: a change of state needs numberOfProbes equal answers in a row too."""
    machine = tracker(probes=3)
    feed(machine, [H, H, H])

    assert feed(machine, [U, H, U, U], start=20) == [H, H, H, H]
    assert machine.observe(U, at(40)) == U


def test_tracker_a_run_of_unknown_answers_after_initialization_is_unknown_over_http():
    """R-H-2: non-2xx, time-out, refused: Unknown (http)."""
    machine = tracker("http", probes=2)
    feed(machine, [H, H])

    assert feed(machine, [X, X], start=15) == [H, X]


def test_tracker_a_run_of_refused_connects_after_initialization_is_unhealthy_over_tcp():
    """R-H-2: rich states have no Unknown over tcp; an endpoint that stops accepting is Unhealthy."""
    machine = tracker("tcp", probes=2)
    feed(machine, [H, H])

    assert feed(machine, [X, X], start=15) == [H, U]
    assert feed(machine, [H, H], start=25) == [U, H]


def test_tracker_refuses_an_answer_that_is_not_a_probe_answer():
    with pytest.raises(ValueError, match="Healthy, Unhealthy or Unknown"):
        tracker().observe(HealthState.INITIALIZING, at(5))


def test_tracker_next_probe_falls_on_the_interval_slots_from_boot():
    machine = tracker(interval=5, grace=60)

    assert machine.next_probe_at(at(-1)) == at(5)
    assert machine.next_probe_at(at(0)) == at(5)
    assert machine.next_probe_at(at(5)) == at(10)
    assert machine.next_probe_at(at(12.5)) == at(15)  # a late round skips the slot it missed


def test_tracker_next_probe_is_due_at_the_end_of_the_grace_period_while_initializing():
    """R-H-2: the state changes when the grace period ends, between two slots here."""
    machine = tracker(interval=10, grace=25)

    assert machine.next_probe_at(at(20)) == at(25)
    assert machine.next_probe_at(at(25)) == at(30)
    feed(machine, [H, H, H], start=10, interval=5)  # decided Healthy at 20
    assert machine.next_probe_at(at(20)) == at(30)


def test_tracker_round_trips_through_json_mid_run():
    machine = tracker("tcp", probes=3, grace=30)
    feed(machine, [H, H])

    stored = json.loads(json.dumps(machine.to_json()))
    restored = ProbeTracker.from_json(stored)

    assert restored == machine
    assert stored["booted_at"] == "2026-06-01T12:00:00+00:00"
    assert restored.observe(H, at(15)) == H  # the run carried over: this is its third answer
