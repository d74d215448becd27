"""Benchmark of the ARM API under load: concurrent clients starting, cancelling and reading runs.

One command (from the repository root, in the venv):

    python -m bench.load [--clients 200] [--sets 50] [--seconds 60] [--database sqlite|postgres]
                         [--capacity 10] [--time-scale 30] [--web 1] [--think 0] [--json PATH]

What runs. A throwaway database (SQLite: a file in a temporary directory, with the embedded
defaults of config/settings.py; PostgreSQL: a database `bench_load_<random>` created on
--postgres-url's server and dropped afterwards), migrated by `manage.py migrate`, holding --sets
scale sets of --capacity instances (Rolling mode, 20 % batches). Real Redis (REDIS_URL, or an
embedded redis-server), a real Celery worker (--concurrency 2) and beat on a queue of their
own, so runs really progress: the simulator's default durations (reimage 30 s, boot 45 s) at
TIME_SCALE --time-scale make a batch take a few real seconds, so most runs are cancelled
while a batch is in flight and new ones start after them. Every --publish-every seconds a newer
platform image is published, so the sets (on `latest`) always have something to upgrade.
--web daphne processes (`python -m daphne … config.asgi:application`, as `make run` starts
it, with DATABASE_CONN_MAX_AGE=0 as deploy/ runs the web; each lets WEB_REQUESTS_IN_FLIGHT
requests into Django at once) serve the API on loopback; client n talks to server n mod --web.

The clients: --clients threads, each with its own keep-alive HTTP/1.1 connection and its own
bearer token (api.tokens.token_create, an operator's), repeating until --seconds have passed:
pick a scale set at random, then POST …/osRollingUpgrade, GET …/rollingUpgrades/latest, GET
the set, POST …/rollingUpgrades/cancel, GET …/rollingUpgrades/latest (api-version
2024-07-01), with --think seconds between requests (default none: a closed loop, so latency
includes queueing behind the other clients). At --seconds no new request starts (a hard stop);
those in flight finish (30 s socket timeout). Every status code is counted per operation.

The checks (printed; the exit code is 1 when one fails):
  * no 5xx answer and no failed connection;
  * exactly one active run per scale set at every moment, read FROM THE DATABASE: a sampler
    thread with its own connection asks every --sample-every seconds (50 ms) for the scale
    sets with more than one run RollingForward, and counts samples and violations. The
    database also holds a partial unique constraint (one_active_run_per_scale_set, on
    scale_set where status = RollingForward) that should make a violation impossible: the
    sampler is the independent check that it, and the services around it, hold under load.

Figures: requests per second, p50/p95/p99 latency (ms, client side: request written to
answer read) per operation and overall, counts of each status code, daphne's CPU as a share
of one core, and what the runs did (started, cancelled mid-way, completed). On a 5xx it also
prints the exceptions in the servers' logs; --keep-logs keeps those logs and the worker's.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_POSTGRES_URL, OLD_VERSION, UBUNTU, Processes, load_average
from bench.live import Daphne, percentile, throwaway_environment

BASE_DIR = Path(__file__).resolve().parent.parent
API_VERSION = "2024-07-01"
SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"
RESOURCE_GROUP = "rg-load"
SOCKET_TIMEOUT = 30.0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    extra = {"TIME_SCALE": str(args.time_scale), "LOG_LEVEL": "WARNING"}
    with throwaway_environment(args.database, args.postgres_url, "bench-load", **extra) as env:
        command = [sys.executable, "-m", "bench.load", "--child", *_forwarded(args)]
        return subprocess.run(command, cwd=BASE_DIR, env=env).returncode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent API clients")
    parser.add_argument("--sets", type=int, default=50, help="scale sets the clients share")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients run (hard stop)")
    parser.add_argument("--capacity", type=int, default=10, help="instances per scale set")
    parser.add_argument("--time-scale", type=float, default=30.0, help="TIME_SCALE of the worker and beat")
    parser.add_argument("--web", type=int, default=1, help="daphne processes serving the API")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--think", type=float, default=0.0, help="seconds a client waits between requests")
    parser.add_argument("--publish-every", type=float, default=10.0, help="seconds between new platform images")
    parser.add_argument("--sample-every", type=float, default=0.05, help="seconds between database samples")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' choices")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server, worker and beat logs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def _forwarded(args: argparse.Namespace) -> list[str]:
    forwarded = []
    for name in ("clients", "sets", "seconds", "capacity", "time_scale", "web", "concurrency", "think"):
        forwarded += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for name in ("publish_every", "sample_every", "seed"):
        forwarded += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.json:
        forwarded += ["--json", str(Path(args.json).resolve())]
    if args.keep_logs:
        forwarded.append("--keep-logs")
    return forwarded


# --- the child: fleet, processes, clients, sampler ------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.db import connection

    names, tokens = _build(args)
    print(
        f"{connection.vendor}: {len(names)} scale sets of {args.capacity} instances, {args.clients} clients, "
        f"{args.web} daphne process(es), worker --concurrency {args.concurrency} + beat, "
        f"TIME_SCALE {args.time_scale:g}",
        flush=True,
    )
    logs = Path(tempfile.mkdtemp(prefix="vmss-bench-load-logs-"))
    servers = [Daphne(logs) for _ in range(args.web)]
    processes = Processes(keep_logs=args.keep_logs)
    stop = threading.Event()
    try:
        processes.start(concurrency=args.concurrency)
        for server in servers:
            server.wait_ready()
        sampler = _Sampler(args.sample_every, stop)
        publisher = _ImagePublisher(args.publish_every, stop)
        sampler.start()
        publisher.start()
        clients = [
            _Client(n, servers[n % len(servers)].port, tokens[n], names, args, random.Random(args.seed * 1000 + n))
            for n in range(args.clients)
        ]
        server_cpu = sum(server.cpu_seconds() for server in servers)
        began = time.monotonic()
        deadline = began + args.seconds
        for client in clients:
            client.start(deadline)
        for client in clients:
            client.join(deadline + SOCKET_TIMEOUT + 5 - time.monotonic())
        elapsed = time.monotonic() - began
        # How busy the web was: a share near 100 % per process means it, not the clients, set the pace.
        server_share = (sum(server.cpu_seconds() for server in servers) - server_cpu) / elapsed
        stop.set()
        sampler.join(10)
        publisher.join(10)
        dead = [server for server in servers if server.process.poll() is not None]
        if dead or not processes.alive():
            print("a server, the worker or the beat died during the run", flush=True)
        result = _report(args, clients, sampler, publisher, elapsed, server_share)
        if result["server_errors"]:
            _print_server_exceptions(servers)
    finally:
        stop.set()
        for server in servers:
            server.stop()
        processes.stop()
        if args.keep_logs:
            print(f"server logs kept in {logs}", file=sys.stderr)
        else:
            shutil.rmtree(logs, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _build(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The scale sets (on an old image, `latest` newer) and one operator token per client."""
    import datetime as dt

    from django.contrib.auth.models import Group, User

    from api.tokens import token_create
    from fleet import clock, services
    from fleet.models import Region
    from fleet.roles import OPERATORS

    region = Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})[0]
    services.platform_image_publish(
        **_image(), version=OLD_VERSION, regions=[region], at=clock.now() - dt.timedelta(days=1)
    )
    names = []
    for n in range(args.sets):
        scale_set = services.scale_set_create(
            subscription_id=SUBSCRIPTION,
            resource_group=RESOURCE_GROUP,
            name=f"load-{n:03d}",
            region=region,
            capacity=args.capacity,
            single_placement_group=args.capacity <= 100,
            max_batch_instance_percent=20,
            upgrade_mode="Rolling",
            image_version="latest",
            **UBUNTU,
        )
        names.append(scale_set.name)
    _publish_next(region)
    operator = User.objects.create_user(username="bench-operator", password=None)
    operator.groups.add(Group.objects.get_or_create(name=OPERATORS)[0])
    tokens = [token_create(user=operator, name=f"load client {n}")[1] for n in range(args.clients)]
    return names, tokens


def _image() -> dict[str, str]:
    return {"publisher": UBUNTU["image_publisher"], "offer": UBUNTU["image_offer"], "sku": UBUNTU["image_sku"]}


_published = [0]


def _publish_next(region: Any) -> str:
    """A newer platform image version, out now: every set on `latest` has something to do."""
    import datetime as dt

    from fleet import clock, services

    _published[0] += 1
    version = f"18.04.{202500000 + _published[0]}"
    services.platform_image_publish(
        **_image(), version=version, regions=[region], at=clock.now() - dt.timedelta(seconds=1)
    )
    return version


class _ImagePublisher(threading.Thread):
    """Publishes a newer image every few seconds (the sets' runs would otherwise soon find
    nothing left to upgrade and every start would be a 409)."""

    def __init__(self, every: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.stop = stop
        self.published = 0
        self.errors: list[str] = []

    def run(self) -> None:
        from django.db import connection

        from fleet.models import Region

        region = Region.objects.get(name="eastus")
        try:
            while not self.stop.wait(self.every):
                try:
                    _publish_next(region)
                    self.published += 1
                except Exception as error:  # reported: the figures would then be about 409s
                    self.errors.append(repr(error))
        finally:
            connection.close()


class _Sampler(threading.Thread):
    """Reads, on its own connection, which scale sets have more than one run rolling forward."""

    def __init__(self, every: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.stop = stop
        self.samples = 0
        self.violations: list[tuple[float, list[dict[str, Any]]]] = []
        self.active: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        from django.db import connection
        from django.db.models import Count

        from upgrades.models import RunStatus, UpgradeRun

        rolling = UpgradeRun.objects.filter(status=RunStatus.ROLLING_FORWARD)
        began = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    per_set = list(rolling.values("scale_set_id").annotate(runs=Count("pk")).order_by())
                except Exception as error:  # a locked or busy database is reported, not fatal
                    self.errors.append(repr(error))
                else:
                    self.samples += 1
                    self.active.append(sum(row["runs"] for row in per_set))
                    doubled = [row for row in per_set if row["runs"] > 1]
                    if doubled:
                        self.violations.append((time.monotonic() - began, doubled))
                self.stop.wait(self.every)  # the sampling cadence
        finally:
            connection.close()


class _Client(threading.Thread):
    """One API client: a keep-alive connection, a token, a loop of start/read/cancel/read."""

    def __init__(
        self, n: int, port: int, token: str, names: list[str], args: argparse.Namespace, chooser: random.Random
    ) -> None:
        super().__init__(daemon=True, name=f"client-{n}")
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.names = names
        self.think = args.think
        self.chooser = chooser
        self.deadline = 0.0
        # (operation, status, milliseconds); status 0 = the connection failed
        self.records: list[tuple[str, int, float]] = []
        self.failures: list[str] = []
        self.connection: http.client.HTTPConnection | None = None

    def start(self, deadline: float | None = None) -> None:  # type: ignore[override]
        assert deadline is not None
        self.deadline = deadline
        super().start()

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            base = (
                f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/"
                f"virtualMachineScaleSets/{self.chooser.choice(self.names)}"
            )
            for operation, method, path in (
                ("start", "POST", f"{base}/osRollingUpgrade"),
                ("latest", "GET", f"{base}/rollingUpgrades/latest"),
                ("get", "GET", base),
                ("cancel", "POST", f"{base}/rollingUpgrades/cancel"),
                ("latest", "GET", f"{base}/rollingUpgrades/latest"),
            ):
                if time.monotonic() >= self.deadline:
                    break
                self._request(operation, method, f"{path}?api-version={API_VERSION}")
                if self.think:
                    time.sleep(self.think)  # a client's own pacing between requests
        if self.connection is not None:
            self.connection.close()

    def _request(self, operation: str, method: str, path: str) -> None:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SOCKET_TIMEOUT)
        began = time.perf_counter()
        try:
            self.connection.request(method, path, body=b"" if method == "POST" else None, headers=self.headers)
            answer = self.connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as error:
            self.records.append((operation, 0, (time.perf_counter() - began) * 1000))
            self.failures.append(f"{method} {path}: {error!r}")
            self.connection.close()
            self.connection = None
            return
        self.records.append((operation, answer.status, (time.perf_counter() - began) * 1000))
        if answer.status >= 500:
            self.failures.append(f"{method} {path}: {answer.status} {body[:300]!r}")
        if answer.will_close:
            self.connection.close()
            self.connection = None


def _print_server_exceptions(servers: list[Daphne]) -> None:
    """The exceptions behind the 5xx, from the servers' logs: the last line of each traceback."""
    import re

    found: collections.Counter[str] = collections.Counter()
    for server in servers:
        lines = server.log_path.read_text(errors="replace").splitlines()
        for n, line in enumerate(lines):
            if line.startswith("Traceback"):
                end = n + 1
                while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
                    end += 1
                if end < len(lines) and re.match(r"^[\w.]+(Error|Exception|Exit)\b", lines[end]):
                    found[lines[end][:200]] += 1
    for text, count in found.most_common(10):
        print(f"    {count} x {text}")


# --- the report -----------------------------------------------------------------------------------


def _report(
    args: argparse.Namespace,
    clients: list[_Client],
    sampler: _Sampler,
    publisher: _ImagePublisher,
    elapsed: float,
    server_share: float,
) -> dict[str, Any]:
    records = [record for client in clients for record in client.records]
    failures = [failure for client in clients for failure in client.failures]
    by_operation: dict[str, list[float]] = collections.defaultdict(list)
    statuses: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for operation, status, ms in records:
        by_operation[operation].append(ms)
        statuses[operation][status] += 1
    all_statuses: collections.Counter[int] = collections.Counter(status for _, status, _ in records)
    server_errors = sum(count for status, count in all_statuses.items() if status >= 500)
    connection_failures = all_statuses.get(0, 0)
    runs = _runs(args.capacity)

    print()
    print(
        f"{len(records):,} requests in {elapsed:.1f} s = {len(records) / elapsed:.1f} requests/s "
        f"({args.clients} clients, {args.sets} sets, think {args.think:g} s); load average {load_average()}"
    )
    print(f"daphne CPU: {server_share:.0%} of one core ({args.web} process(es), WEB_REQUESTS_IN_FLIGHT per process)")
    print(f"{'operation':10}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  status codes")
    rows = [(name, by_operation[name]) for name in ("start", "cancel", "latest", "get") if name in by_operation]
    rows.append(("all", [ms for _, _, ms in records]))
    latencies = {}
    for name, values in rows:
        ordered = sorted(values)
        codes = statuses[name] if name != "all" else all_statuses
        latencies[name] = {
            "requests": len(ordered),
            "p50_ms": percentile(ordered, 50),
            "p95_ms": percentile(ordered, 95),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1] if ordered else float("nan"),
            "statuses": {str(k): v for k, v in sorted(codes.items())},
        }
        figures = latencies[name]
        print(
            f"{name:10}{len(ordered):9d}{figures['p50_ms']:9.1f}{figures['p95_ms']:9.1f}{figures['p99_ms']:9.1f}"
            f"{figures['max_ms']:9.1f}  " + " ".join(f"{k}:{v}" for k, v in sorted(codes.items()))
        )
    active = sampler.active
    print(
        f"database sampler: {sampler.samples} samples every {args.sample_every * 1000:.0f} ms, "
        f"{len(sampler.violations)} with a scale set holding more than one RollingForward run; "
        f"runs rolling forward per sample: mean {sum(active) / max(1, len(active)):.1f}, max {max(active, default=0)}"
        + (f"; {len(sampler.errors)} failed samples" if sampler.errors else "")
    )
    for at, doubled in sampler.violations[:5]:
        print(f"    VIOLATION at {at:.2f} s: {doubled}")
    print(
        f"runs: {runs['started']} started, {runs['cancelled']} cancelled ({runs['cancelled_midway']} after "
        f"upgrading part of the set), {runs['completed']} completed, {runs['faulted']} faulted, "
        f"{runs['rolling_forward']} still rolling forward; {publisher.published} images published meanwhile"
    )
    for failure in failures[:10]:
        print(f"    {failure}")
    checks = {
        "no_5xx": server_errors == 0,
        "no_connection_failures": connection_failures == 0,
        "one_active_run_per_set": not sampler.violations and sampler.samples > 0,
        "runs_progressed": runs["started"] > 0 and runs["cancelled"] + runs["completed"] > 0,
    }
    print("checks: " + ", ".join(f"{name} {'ok' if passed else 'FAILED'}" for name, passed in checks.items()))
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "seconds": elapsed,
        "requests": len(records),
        "requests_per_second": len(records) / elapsed,
        "daphne_cpu_share": server_share,
        "latency": latencies,
        "samples": sampler.samples,
        "violations": len(sampler.violations),
        "server_errors": server_errors,
        "connection_failures": connection_failures,
        "failures": failures[:50],
        "runs": runs,
        "load_average": load_average(),
    }


def _runs(capacity: int) -> dict[str, int]:
    """The runs by status, in one query (the worker is still moving them)."""
    from django.db.models import Count, Q

    from upgrades.models import RunStatus, UpgradeRun

    midway = Q(status=RunStatus.CANCELLED, successful_count__gt=0, successful_count__lt=capacity)
    counted = UpgradeRun.objects.aggregate(
        started=Count("pk"),
        cancelled=Count("pk", filter=Q(status=RunStatus.CANCELLED)),
        cancelled_midway=Count("pk", filter=midway),
        completed=Count("pk", filter=Q(status=RunStatus.COMPLETED)),
        faulted=Count("pk", filter=Q(status=RunStatus.FAULTED)),
        rolling_forward=Count("pk", filter=Q(status=RunStatus.ROLLING_FORWARD)),
    )
    return {name: int(value) for name, value in counted.items()}


if __name__ == "__main__":
    sys.exit(main())
