"""Benchmark of the live view: from a change committed to the WebSocket message at each client.

One command (from the repository root, in the venv):

    python -m bench.live [--clients 1 50 200] [--changes 100] [--burst 100] [--cells 20]
                         [--instances 100] [--database sqlite|postgres] [--json PATH]

What is measured. For each client count C, C real WebSocket clients (autobahn's asyncio client,
already installed as daphne's own WebSocket library) open `ws/scale-sets/<id>/` on a real
daphne server (`python -m daphne … config.asgi:application`, as `make run` starts it), logged
in with the session cookie of a viewer who logged in through /login/, with an Origin header
from ALLOWED_HOSTS. They run in a process of their own, so their work does not hold up the
publisher, and open 25 sockets at a time (the next 25 once those have their snapshots): pages
open over time; a reconnect storm of hundreds in one instant is another test.

The publisher is this benchmark's own process, and it changes the fleet the way the engine
and the simulator do: in one transaction it writes --cells instance rows (their `last_error`
column, which the heatmap cell carries, set to a unique marker so each client can tell which
change a message is) and calls fleet.events.instances_changed, the engine's publishing path.
An on_commit hook registered before that call takes the wall-clock time right after COMMIT;
then instances_changed's own hook reads the cells (one query) and group_sends the delta to
`scale-set.<id>` (and `fleet`) through the Redis channel layer, and daphne's consumers forward
it. The latency of one message is (the client's wall clock when the message arrived) − (the
commit time): it includes reading the cells, both group_sends, Redis, the consumer, the
WebSocket frame and the client's own event loop. Both ends read time.time() on one machine.
What the engine does before the commit is measured by bench.engine, not here.

Two phases per client count:
  latency     --changes changes, one at a time: the next is committed once every client
              has the previous one (or after a 5 s timeout), so nothing queues behind it.
              Figures: p50, p95, p99 and max over all (client, change) pairs; the
              publisher's own part (commit to both group_sends returned); the CPU that
              daphne, the clients and the publisher used, as a share of the phase's wall
              time, and daphne's CPU per delivered message (the figure that least depends
              on what else runs on the machine).
  throughput  --burst changes committed back to back; figure: messages delivered to all
              clients / (last arrival − first commit), and how many never arrived
              (delivery is at-most-once: channels_redis drops what exceeds a channel's capacity).

Each run uses a throwaway database (SQLite file, or --database postgres: a database created on
--postgres-url's server and dropped afterwards), migrated by `manage.py migrate`, with one scale
set of --instances instances, and Redis from REDIS_URL or an embedded redis-server.
Target: p99 < 250 ms at 200 clients (the exit code says whether the largest count met it).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_POSTGRES_URL,
    NEW_VERSION,
    OLD_VERSION,
    UBUNTU,
    load_average,
    migrate,
    redis_for_benchmark,
    throwaway_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 250.0
WAIT_SECONDS = 5.0  # how long the latency phase waits for every client to have one change
QUIET_SECONDS = 10.0  # a burst is over when nothing more arrived for this long
LAST_ERROR = 11  # index of last_error in a heatmap cell (fleet.selectors.CELL_COLUMNS)
VIEWER_PASSWORD = "bench-live-viewer"
CONNECT_STEP = 25  # sockets the clients open at a time


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.client_process:
        return _client_process(args)
    if args.child:
        return _child(args)
    with throwaway_environment(args.database, args.postgres_url, "bench-live") as env:
        command = [sys.executable, "-m", "bench.live", "--child", *_forwarded(args)]
        return subprocess.run(command, cwd=BASE_DIR, env=env).returncode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50, 200], help="client counts to measure")
    parser.add_argument("--changes", type=int, default=100, help="changes of the latency phase, per client count")
    parser.add_argument("--burst", type=int, default=100, help="changes of the throughput phase (0: none)")
    parser.add_argument("--cells", type=int, default=20, help="instances each change writes (cells per delta)")
    parser.add_argument("--instances", type=int, default=100, help="instances of the scale set")
    parser.add_argument("--interval", type=float, default=0.02, help="pause between latency changes, seconds")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cookie", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser


def _forwarded(args: argparse.Namespace) -> list[str]:
    forwarded = ["--clients", *map(str, args.clients), "--changes", str(args.changes), "--burst", str(args.burst)]
    forwarded += ["--cells", str(args.cells), "--instances", str(args.instances), "--interval", str(args.interval)]
    if args.json:
        forwarded += ["--json", str(Path(args.json).resolve())]
    return forwarded


# --- shared with bench.load: a throwaway database and Redis, a daphne server -------------------


@contextmanager
def throwaway_environment(database: str, postgres_url: str, prefix: str, **extra: str) -> Iterator[dict[str, str]]:
    """Redis (REDIS_URL or an embedded server) and a fresh migrated database (SQLite, or a
    PostgreSQL database `<prefix>_<random>`, dropped afterwards); yields the environment a
    child process runs in."""
    with redis_for_benchmark(), throwaway_database(database, postgres_url, prefix=prefix.replace("-", "_")) as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_DEFAULT_QUEUE": f"{prefix}-{uuid.uuid4().hex[:8]}",
            "DEBUG": "false",
            "SECURE_COOKIES": "false",
            "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "LOG_LEVEL": "ERROR",
            **extra,
        }
        migrate(env)
        yield env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Daphne:
    """One daphne process serving config.asgi on a free loopback port, as `make run` does
    (with DATABASE_CONN_MAX_AGE=0, as deploy/ sets it for the web)."""

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.log_path = logs / f"daphne-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"]
        # As deploy/ runs the web processes: no persistent database connections under ASGI.
        env = {**os.environ, "DATABASE_CONN_MAX_AGE": "0"}
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"daphne exited\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/login/", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"daphne did not answer on {self.base_url}\n{self.tail()}")
            time.sleep(0.1)  # polling the server's readiness, with a deadline

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def log_in(base_url: str, username: str, password: str) -> str:
    """Log in through the login form, as a browser does; the session cookie's value."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base_url}/login/", timeout=30).read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": match[1], "username": username, "password": password})
    opener.open(f"{base_url}/login/", data=form.encode(), timeout=30).read()
    cookies = {cookie.name: cookie.value for cookie in jar}
    if "sessionid" not in cookies:
        raise SystemExit(f"logging in as {username} failed: no session cookie")
    return str(cookies["sessionid"])


# --- the child: the fleet, the server, the publisher ---------------------------------------------


def _child(args: argparse.Namespace) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.db import connection

    scale_set = _build(args.instances)
    logs = Path(tempfile.mkdtemp(prefix="vmss-bench-live-logs-"))
    daphne = Daphne(logs)
    results = []
    try:
        daphne.wait_ready()
        cookie = log_in(daphne.base_url, "bench-viewer", VIEWER_PASSWORD)
        url = f"ws://127.0.0.1:{daphne.port}/ws/scale-sets/{scale_set.pk}/"
        print(
            f"{connection.vendor}, 1 scale set of {args.instances} instances, {args.cells} cells per change; "
            f"daphne on {daphne.base_url}",
            flush=True,
        )
        for count in args.clients:
            result = _measure(args, scale_set, count, url, cookie, daphne, logs)
            results.append(result)
            print(_one_line(result), flush=True)
    except SystemExit:
        kept = Path(tempfile.gettempdir()) / f"bench-live-daphne-{daphne.port}.log"
        shutil.copyfile(daphne.log_path, kept)
        print(f"daphne's log is kept in {kept}", file=sys.stderr)
        raise
    finally:
        daphne.stop()
        shutil.rmtree(logs, ignore_errors=True)
    print()
    print(f"load average {load_average()}")
    print(
        f"{'clients':>7} {'samples':>8} {'lost':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'publish p50':>11} {'burst msg/s':>12} {'burst lost':>10} {'changes/s':>10}  target p99<{TARGET_P99_MS:g}"
    )
    for r in results:
        verdict = "ok" if r["p99_ms"] < TARGET_P99_MS and not r["lost"] else "MISSED"
        print(
            f"{r['clients']:7d} {r['samples']:8d} {r['lost']:5d} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r['max_ms']:8.1f} {r['publish_p50_ms']:11.1f} "
            f"{r.get('burst_messages_per_second', 0):12.0f} {r.get('burst_lost', 0):10d} "
            f"{r.get('burst_changes_per_second', 0):10.0f}  {verdict}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    largest = max(results, key=lambda r: r["clients"])
    return 0 if largest["p99_ms"] < TARGET_P99_MS and not largest["lost"] else 1


def _build(instances: int) -> Any:
    import datetime as dt

    from django.contrib.auth.models import Group, User

    from fleet import clock, services
    from fleet.models import Region
    from fleet.roles import VIEWERS

    region = Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})[0]
    for version, age in ((OLD_VERSION, dt.timedelta(days=1)), (NEW_VERSION, dt.timedelta(seconds=1))):
        services.platform_image_publish(**_image(), version=version, regions=[region], at=clock.now() - age)
    scale_set = services.scale_set_create(
        subscription_id="11111111-1111-1111-1111-111111111111",
        resource_group="rg-bench",
        name="live",
        region=region,
        capacity=instances,
        single_placement_group=instances <= 100,
        image_version=OLD_VERSION,
        **UBUNTU,
    )
    user = User.objects.create_user(username="bench-viewer", password=VIEWER_PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=VIEWERS)[0])
    return scale_set


def _image() -> dict[str, str]:
    return {"publisher": UBUNTU["image_publisher"], "offer": UBUNTU["image_offer"], "sku": UBUNTU["image_sku"]}


def _change(scale_set_id: int, pks: list[int], marker: str) -> tuple[float, float]:
    """Commit one change of these instances and publish it as the engine does; returns the
    wall-clock time right after COMMIT and when the publishing had returned."""
    from django.db import transaction

    from fleet import events
    from fleet.models import Instance

    committed: list[float] = []
    with transaction.atomic():
        # Registered first, so it runs first after COMMIT: before instances_changed's own hook.
        transaction.on_commit(lambda: committed.append(time.time()))
        Instance.objects.filter(pk__in=pks).update(last_error=marker)
        events.instances_changed(scale_set_id, pks)
    return committed[0], time.time()


class _Clients:
    """The client process: started, told to stop, its lines read by a thread."""

    def __init__(self, url: str, cookie: str, count: int, out: Path) -> None:
        command = [sys.executable, "-m", "bench.live", "--client-process", "--url", url, "--cookie", cookie]
        command += ["--count", str(count), "--out", str(out)]
        self.out = out
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("exited")

    def expect(self, wanted: set[str], timeout: float) -> set[str]:
        """Wait for these lines (each `done <marker>` or `ready`); returns those still missing."""
        missing = set(wanted)
        deadline = time.monotonic() + timeout
        while missing:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line == "exited":
                raise SystemExit("the client process exited early")
            if line.startswith("error"):
                self.process.kill()
                raise SystemExit(f"the clients failed: {line}")
            missing.discard(line)
        return missing

    def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        self.process.wait(timeout=60)
        return dict(json.loads(self.out.read_text()))


def _measure(
    args: argparse.Namespace, scale_set: Any, count: int, url: str, cookie: str, daphne: Daphne, logs: Path
) -> dict[str, Any]:
    pks = list(scale_set.instances.order_by("pk").values_list("pk", flat=True))
    cells = min(args.cells, len(pks))
    clients = _Clients(url, cookie, count, logs / f"receipts-{count}.json")
    if clients.expect({"ready"}, timeout=120):
        clients.process.kill()
        raise SystemExit(f"{count} clients did not all connect and get their snapshot")
    commits: dict[str, float] = {}
    publish_ms = []
    daphne_cpu = daphne.cpu_seconds()
    clients_cpu = process_cpu_seconds(clients.process.pid)
    publisher_cpu = time.process_time()
    wall = time.monotonic()
    for n in range(args.changes):
        marker = f"latency-{count}-{n}"
        start = (n * cells) % len(pks)
        chosen = (pks + pks)[start : start + cells]
        commits[marker], published = _change(scale_set.pk, chosen, marker)
        publish_ms.append((published - commits[marker]) * 1000)
        clients.expect({f"done {marker}"}, timeout=WAIT_SECONDS)
        time.sleep(args.interval)  # pacing: one change at a time, not a synchronisation
    latency_wall = time.monotonic() - wall
    # CPU used meanwhile, as a share of the phase's wall time: which side was busy.
    daphne_used = daphne.cpu_seconds() - daphne_cpu
    cpu_share = {
        "daphne": daphne_used / latency_wall,
        "clients": (process_cpu_seconds(clients.process.pid) - clients_cpu) / latency_wall,
        "publisher": (time.process_time() - publisher_cpu) / latency_wall,
    }
    bursts: dict[str, float] = {}
    for n in range(args.burst):
        marker = f"burst-{count}-{n}"
        start = (n * cells) % len(pks)
        bursts[marker], _ = _change(scale_set.pk, (pks + pks)[start : start + cells], marker)
    burst_committed = time.time()
    if bursts:
        wanted = {f"done {marker}" for marker in bursts}
        while wanted:
            before = len(wanted)
            wanted = clients.expect(wanted, timeout=QUIET_SECONDS)
            if len(wanted) == before:
                break
    receipts = clients.stop()
    samples = sorted(
        (at - commits[marker]) * 1000
        for marker, times in receipts["arrivals"].items()
        if marker in commits
        for at in times
    )
    result: dict[str, Any] = {
        "clients": count,
        "samples": len(samples),
        "lost": args.changes * count - len(samples),
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
        "p99_ms": percentile(samples, 99),
        "max_ms": samples[-1] if samples else float("nan"),
        "publish_p50_ms": statistics.median(publish_ms) if publish_ms else float("nan"),
        "cpu_share": cpu_share,
        # what one delivered message cost the server, whatever else shared the cores
        "daphne_cpu_ms_per_message": daphne_used * 1000 / len(samples) if samples else float("nan"),
        "connect_seconds": receipts["connect_seconds"],
        "closed_early": receipts["closed"],
        "other_messages": receipts["other"],
    }
    if bursts:
        arrivals = [at for marker, times in receipts["arrivals"].items() if marker in bursts for at in times]
        first = min(bursts.values())
        elapsed = (max(arrivals) - first) if arrivals else float("nan")
        result.update(
            burst_changes=len(bursts),
            burst_delivered=len(arrivals),
            burst_lost=len(bursts) * count - len(arrivals),
            burst_seconds=elapsed,
            burst_messages_per_second=len(arrivals) / elapsed if arrivals else 0.0,
            burst_changes_per_second=len(bursts) / (burst_committed - first) if burst_committed > first else 0.0,
        )
    return result


def _one_line(r: dict[str, Any]) -> str:
    text = (
        f"{r['clients']:4d} clients (connected in {r['connect_seconds']:.1f} s): latency p50 {r['p50_ms']:.1f} "
        f"p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} max {r['max_ms']:.1f} ms over {r['samples']} messages, "
        f"{r['lost']} lost; publisher part p50 {r['publish_p50_ms']:.1f} ms\n     CPU during the latency phase: "
        + ", ".join(f"{name} {share:.0%}" for name, share in r["cpu_share"].items())
        + f"; daphne {r['daphne_cpu_ms_per_message']:.2f} ms CPU per message delivered"
    )
    if "burst_changes" in r:
        text += (
            f"\n     burst of {r['burst_changes']} changes ({r['burst_changes_per_second']:.0f} committed/s): "
            f"{r['burst_delivered']} messages in {r['burst_seconds']:.2f} s = "
            f"{r['burst_messages_per_second']:.0f} msg/s, {r['burst_lost']} lost"
        )
    if r["closed_early"] or r["other_messages"]:
        text += f"\n     sockets closed early: {r['closed_early']}, other messages: {r['other_messages']}"
    return text


# --- the client process: C WebSocket clients on one event loop ------------------------------------


def _client_process(args: argparse.Namespace) -> int:
    import asyncio

    try:
        return asyncio.run(_clients(args))
    except Exception as error:  # tell the publisher why, rather than leave it waiting
        print(f"error {type(error).__name__}: {error}", flush=True)
        return 1


async def _clients(args: argparse.Namespace) -> int:
    import asyncio
    from urllib.parse import urlsplit

    from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

    loop = asyncio.get_running_loop()
    count = int(args.count)
    arrivals: dict[str, list[float]] = {}
    state = {"snapshots": 0, "closed": 0, "other": 0}
    all_ready = asyncio.Event()

    class Client(WebSocketClientProtocol):  # type: ignore[misc]
        snapshot_seen = False

        def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803 (autobahn's names)
            at = time.time()  # first: the arrival time, before any parsing
            message = json.loads(payload)
            if message.get("type") == "delta" and message["cells"]:
                marker = message["cells"][0][LAST_ERROR]
                times = arrivals.setdefault(marker, [])
                times.append(at)
                if len(times) == count:
                    print(f"done {marker}", flush=True)
            elif message.get("type") == "snapshot" and not self.snapshot_seen:
                self.snapshot_seen = True
                state["snapshots"] += 1
                if state["snapshots"] == count:
                    all_ready.set()
            else:
                state["other"] += 1

        def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
            state["closed"] += 1
            if not self.snapshot_seen:  # the publisher would wait for it in vain: say why
                print(f"error a socket closed before its snapshot: {code} {reason}", flush=True)

    parts = urlsplit(args.url)
    factory = WebSocketClientFactory(
        args.url, origin=f"http://{parts.hostname}:{parts.port}", headers={"Cookie": f"sessionid={args.cookie}"}
    )
    factory.protocol = Client
    # Autobahn gives up on a handshake after 5 s; 200 sockets opening on a busy machine can
    # take longer, and a slow handshake is not what is measured here.
    factory.setProtocolOptions(openHandshakeTimeout=60)
    started = time.monotonic()
    transports = []
    # Pages open over time, not all in the same instant: CONNECT_STEP sockets, then the next
    # ones once those have their snapshots. (Hundreds at once on one daphne can outlast its 5 s
    # handshake timeout: each costs the session, the user and the snapshot on its one database
    # thread. That is a reconnect storm, not what this benchmark measures.)
    for first in range(0, count, CONNECT_STEP):
        opened = await asyncio.gather(
            *(
                loop.create_connection(factory, parts.hostname, parts.port)
                for _ in range(first, min(count, first + CONNECT_STEP))
            )
        )
        transports += [transport for transport, _ in opened]
        step_ready = time.monotonic() + 60
        while state["snapshots"] < len(transports) and time.monotonic() < step_ready:
            await asyncio.sleep(0.01)  # polling this process's own counter, with a deadline
    await asyncio.wait_for(all_ready.wait(), timeout=120)
    connect_seconds = time.monotonic() - started
    print("ready", flush=True)
    stop = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    await stop.wait()
    closed_early = state["closed"]
    for transport in transports:
        transport.close()
    Path(args.out).write_text(
        json.dumps(
            {"arrivals": arrivals, "closed": closed_early, "other": state["other"], "connect_seconds": connect_seconds}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
