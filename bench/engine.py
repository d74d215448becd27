"""Benchmark of the upgrade engine: a rolling OS upgrade of one big scale set, end to end.

One command (from the repository root, in the venv):

    python -m bench.engine [--instances 1000] [--repeat 3] [--database sqlite|postgres|both]
                           [--scenario zero|realistic|both] [--time-scale 30]

Each measured run uses a fresh throwaway database (SQLite: a file in a temporary directory,
with the embedded defaults of config/settings.py; PostgreSQL: a database created on
--postgres-url's server and dropped afterwards), migrated by a `manage.py migrate`
subprocess. In it the benchmark builds one scale set of --instances instances
(singlePlacementGroup false, 20 % batches: 5 batches of 200 for 1,000) through
fleet.services, starts a REAL Celery worker (--concurrency 2) and Celery beat on their own
queue, real Redis (REDIS_URL, or an embedded redis-server when it is unset), and times
upgrades.services.os_upgrade_now() until the run has completed.

Scenarios:
  zero       every simulated duration 0 (SIMULATOR_DURATIONS all zero; the set has no health
             source, so an instance is healthy as soon as it has booted): what is measured is
             the orchestration overhead alone. Figure: wall seconds and ms per instance
             (target < 2 ms).
  realistic  the simulator's default durations (reimage 30 s, boot 45 s, 10 s per extension)
             and an Application Health extension (interval 5 s × 1 probe) at TIME_SCALE
             --time-scale. Figure: wall time / ideal schedule time, where ideal = batches ×
             (reimage + boot + extensions + interval × probes + pause) / TIME_SCALE
             (target < 1.05).

Wall time runs from just before os_upgrade_now() (planning and writing the run included) to the
run's ended_at. The beat interval and the engine poll are the settings' defaults unless
--beat-interval / --poll are given: the figures do not come from polling harder.

Output: one line per measured run, then a summary (median, min–max) per database and scenario;
--json PATH also writes every figure as JSON. Internally the command re-runs itself with
--child once per measured run, in a process whose settings point at that run's database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"
ZERO_DURATIONS = {"reimage": 0, "boot": 0, "extension": 0, "stop": 0, "deallocate": 0}
OLD_VERSION = "18.04.202301010"
NEW_VERSION = "18.04.202402020"
UBUNTU = {"image_publisher": "Canonical", "image_offer": "UbuntuServer", "image_sku": "18.04-LTS"}
APP_HEALTH = {
    "name": "HealthExtension",
    "publisher": "Microsoft.ManagedServices",
    "type": "ApplicationHealthLinux",
    "type_handler_version": "2.0",
    "settings": {"protocol": "http", "port": 80, "requestPath": "/health", "intervalInSeconds": 5, "numberOfProbes": 1},
}
# An extension that is not a health source: the zero scenario still provisions one extension.
DEPENDENCY_AGENT = {
    "name": "DependencyAgent",
    "publisher": "Microsoft.Azure.Monitoring.DependencyAgent",
    "type": "DependencyAgentLinux",
    "type_handler_version": "9.10",
}


# --- the parent: databases, Redis, repetitions, summary ------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    scenarios = ["zero", "realistic"] if args.scenario == "both" else [args.scenario]
    redis_server = None
    if not os.environ.get("REDIS_URL"):
        from config.embedded_redis import EmbeddedRedis

        redis_server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="vmss-bench-redis-")) / "redis.sock")
        redis_server.start()
        os.environ["REDIS_URL"] = redis_server.url
        print(f"embedded Redis on {redis_server.url}")
    else:
        print(f"Redis: {os.environ['REDIS_URL']}")
    results: list[dict[str, Any]] = []
    try:
        for database in databases:
            for scenario in scenarios:
                for n in range(1, args.repeat + 1):
                    result = _measured_run(args, database, scenario)
                    result.update(database=database, scenario=scenario, repeat=n)
                    results.append(result)
                    print(_one_line(result), flush=True)
    finally:
        if redis_server is not None:
            redis_server.stop()
            os.environ.pop("REDIS_URL", None)
    print()
    print(_summary(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("ok") for r in results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--scenario", choices=["zero", "realistic", "both"], default="both")
    parser.add_argument("--time-scale", type=float, default=30.0, help="TIME_SCALE of the realistic scenario")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--beat-interval", type=float, help="BEAT_INTERVAL_SECONDS (default: the setting's)")
    parser.add_argument("--poll", type=float, help="ENGINE_POLL_SECONDS (default: the setting's)")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker and beat logs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def _measured_run(args: argparse.Namespace, database: str, scenario: str) -> dict[str, Any]:
    """Create and migrate a throwaway database, run the child in it, drop the database."""
    workdir = Path(tempfile.mkdtemp(prefix="vmss-bench-"))
    dropper = None
    try:
        if database == "sqlite":
            url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        else:
            url, dropper = _postgres_database(args.postgres_url)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_DEFAULT_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
            "TIME_SCALE": str(args.time_scale),
            "LOG_LEVEL": "WARNING",
        }
        if scenario == "zero":
            env["SIMULATOR_DURATIONS"] = json.dumps(ZERO_DURATIONS)
        else:
            env.pop("SIMULATOR_DURATIONS", None)
        if args.beat_interval is not None:
            env["BEAT_INTERVAL_SECONDS"] = str(args.beat_interval)
        if args.poll is not None:
            env["ENGINE_POLL_SECONDS"] = str(args.poll)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
        )
        command = [
            sys.executable,
            "-m",
            "bench.engine",
            "--child",
            "--scenario",
            scenario,
            "--instances",
            str(args.instances),
            "--concurrency",
            str(args.concurrency),
            "--time-scale",
            str(args.time_scale),
        ]
        if args.keep_logs:
            command.append("--keep-logs")
        done = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            return {"ok": False, "error": (done.stdout + done.stderr)[-3000:]}
        return json.loads(lines[-1])
    finally:
        if dropper is not None:
            dropper()
        shutil.rmtree(workdir, ignore_errors=True)


def _postgres_database(admin_url: str) -> tuple[str, Any]:
    """A new empty database on the server of `admin_url`, and a function that drops it."""
    import psycopg

    name = f"bench_engine_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


def _one_line(r: dict[str, Any]) -> str:
    head = f"{r['database']:8} {r['scenario']:9} #{r['repeat']}"
    if not r.get("ok"):
        return f"{head}  FAILED\n{r.get('error', '')}"
    text = f"{head}  wall {r['wall_seconds']:7.3f} s  {r['ms_per_instance']:6.3f} ms/instance"
    if r["scenario"] == "realistic":
        text += f"  ideal {r['ideal_seconds']:6.2f} s  ratio {r['ratio']:.3f}  overhead {r['overhead_seconds']:.3f} s"
    batches = r.get("batches", [])
    if batches:
        text += "\n" + "\n".join(
            f"    batch {b['index']}: gap {b['gap']:6.3f}  upgrade {b['upgrade']:6.3f}  health {b['health']:6.3f}"
            for b in batches
        )
    return text


def _summary(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.instances} instances, 1 scale set, 20 % batches; worker --concurrency {args.concurrency}; "
        f"realistic TIME_SCALE {args.time_scale:g}",
        f"{'database':9}{'scenario':10}{'runs':>5}  {'wall s median (min-max)':>26}  "
        f"{'ms/instance median (min-max)':>30}  {'ratio median (min-max)':>24}",
    ]
    keys = sorted({(r["database"], r["scenario"]) for r in results}, key=lambda k: (k[0] != "sqlite", k[1] != "zero"))
    for database, scenario in keys:
        group = [r for r in results if (r["database"], r["scenario"]) == (database, scenario) and r.get("ok")]
        failed = sum(1 for r in results if (r["database"], r["scenario"]) == (database, scenario) and not r.get("ok"))
        if not group:
            lines.append(f"{database:9}{scenario:10}{0:>5}  all {failed} failed")
            continue

        def spread(key: str, fmt: str, rows: list[dict[str, Any]] = group) -> str:
            values = [r[key] for r in rows]
            return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

        ratio = spread("ratio", ".3f") if scenario == "realistic" else "-"
        line = (
            f"{database:9}{scenario:10}{len(group):>5}  {spread('wall_seconds', '.3f'):>26}  "
            f"{spread('ms_per_instance', '.3f'):>30}  {ratio:>24}"
        )
        if failed:
            line += f"  ({failed} failed)"
        lines.append(line)
    return "\n".join(lines)


# --- the child: one measured run in one database -------------------------------------------


def _child(args: argparse.Namespace) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    scale_set = _build_fleet(args.instances, args.scenario)
    processes = _Processes(keep_logs=args.keep_logs)
    try:
        processes.start(concurrency=args.concurrency)
        result = _time_the_run(scale_set, processes)
    finally:
        processes.stop()
    print(json.dumps(result))
    return 0


def _build_fleet(instances: int, scenario: str) -> Any:
    """One scale set on the old image, a newer image published: like tests.factories does."""
    import datetime as dt

    from fleet import clock, services
    from fleet.models import Region

    region = Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})[0]

    def publish(version: str, at: dt.datetime) -> None:
        services.platform_image_publish(
            publisher=UBUNTU["image_publisher"],
            offer=UBUNTU["image_offer"],
            sku=UBUNTU["image_sku"],
            version=version,
            regions=[region],
            at=at,
        )

    publish(OLD_VERSION, clock.now() - dt.timedelta(days=1))
    scale_set = services.scale_set_create(
        subscription_id="11111111-1111-1111-1111-111111111111",
        resource_group="rg-bench",
        name="bench",
        region=region,
        capacity=instances,
        extensions=[APP_HEALTH if scenario == "realistic" else DEPENDENCY_AGENT],
        single_placement_group=instances <= 100,
        max_batch_instance_percent=20,
        image_version="latest",
        **UBUNTU,
    )
    publish(NEW_VERSION, clock.now() - dt.timedelta(seconds=1))
    return scale_set


def _ideal_seconds(run: Any) -> float:
    """batches × (reimage + boot + extensions + health settle + pause), in real seconds."""
    from django.conf import settings

    from fleet.drivers.simulator import configured_durations
    from fleet.health import health_source_of

    scale_set = run.scale_set
    extensions = list(scale_set.extensions.all())
    durations = configured_durations()
    upgrade = durations.reimage + durations.boot + durations.extension * len(extensions)
    health = health_source_of(scale_set, extensions).settle_seconds
    pause = run.policy_snapshot.pause_seconds
    return run.batch_count * (upgrade + health + pause) / settings.TIME_SCALE


def _time_the_run(scale_set: Any, processes: _Processes) -> dict[str, Any]:
    from django.utils import timezone

    from upgrades import services
    from upgrades.models import TERMINAL, RunStatus, UpgradeRun

    started = timezone.now()
    run = services.os_upgrade_now(scale_set=scale_set)
    deadline = time.monotonic() + 600
    while not UpgradeRun.objects.filter(pk=run.pk, status__in=TERMINAL).exists():
        if time.monotonic() > deadline or not processes.alive():
            raise SystemExit(f"run {run.pk} did not end\n{processes.log_tail()}")
        time.sleep(0.05)  # the benchmark's own poll; the wall time comes from the run's ended_at
    run.refresh_from_db()
    ok = run.status == RunStatus.COMPLETED and run.successful_count == scale_set.capacity
    wall = (run.ended_at - started).total_seconds()
    ideal = _ideal_seconds(run)
    batches = []
    previous_end = started
    for batch in run.batches.order_by("index"):
        batches.append(
            {
                "index": batch.index,
                "size": batch.size,
                "gap": (batch.started_at - previous_end).total_seconds(),
                "upgrade": (batch.upgraded_at - batch.started_at).total_seconds(),
                "health": (batch.ended_at - batch.upgraded_at).total_seconds(),
            }
        )
        previous_end = batch.ended_at
    return {
        "ok": ok,
        "status": run.status,
        "error": run.error_message,
        "instances": scale_set.capacity,
        "batch_count": run.batch_count,
        "wall_seconds": wall,
        "ms_per_instance": wall * 1000 / scale_set.capacity,
        "ideal_seconds": ideal,
        "ratio": wall / ideal if ideal else None,
        "overhead_seconds": wall - ideal,
        "batches": batches,
    }


class _Processes:
    """A Celery worker and beat for this run only (own queue), stopped by process group."""

    def __init__(self, *, keep_logs: bool) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="vmss-bench-logs-"))
        self.keep_logs = keep_logs
        self.queue = os.environ["CELERY_DEFAULT_QUEUE"]
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, *, concurrency: int) -> None:
        celery = [sys.executable, "-m", "celery", "-A", "config"]
        hostname = f"bench-{self.queue}@%h"
        self._spawn(
            "worker",
            celery
            + ["worker", "--loglevel", "WARNING", "--pool", "prefork", "--concurrency", str(concurrency)]
            + ["--hostname", hostname, "--queues", self.queue, "--without-gossip", "--without-mingle"],
        )
        self._spawn("beat", celery + ["beat", "--loglevel", "INFO", "--schedule", str(self.logs / "beat-schedule")])
        self._wait_until_ready(hostname.replace("%h", _hostname()))

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.children.append(
            subprocess.Popen(command, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _wait_until_ready(self, hostname: str, timeout: float = 60) -> None:
        """The worker answers a ping and the beat has sent tasks twice (both pool processes
        have then had a task, their database connections open): the run starts warm."""
        from config.celery import app

        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if time.monotonic() > deadline or not self.alive():
                raise SystemExit(f"the worker did not start\n{self.log_tail()}")
        beat_log = self.logs / "beat.log"
        while beat_log.read_text(errors="replace").count("Sending due task") < 4:
            if time.monotonic() > deadline or not self.alive():
                raise SystemExit(f"the beat did not start\n{self.log_tail()}")
            time.sleep(0.1)
        time.sleep(0.5)

    def alive(self) -> bool:
        return all(child.poll() is None for child in self.children)

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if self.keep_logs:
            print(f"logs kept in {self.logs}", file=sys.stderr)
        else:
            shutil.rmtree(self.logs, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _hostname() -> str:
    import socket

    return socket.gethostname()


if __name__ == "__main__":
    sys.exit(main())
