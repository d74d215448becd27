"""Benchmark of the console's pages: server time and SQL queries of each, against a big fleet.

One command (from the repository root, in the venv):

    python -m bench.pages [--small 100] [--large 1000] [--sets 200] [--set-capacity 100]
                          [--runs 10000] [--repeat 9] [--database sqlite|postgres] [--profile]

It builds its own throwaway database (SQLite: a file in a temporary directory with the
embedded defaults of config/settings.py; PostgreSQL: a database created on --postgres-url's
server and dropped afterwards), migrated by a `manage.py migrate` subprocess, and fills it:

  * two scale sets of --small and --large instances (singlePlacementGroup false above 100),
    made by fleet.services.scale_set_create like any set;
  * --sets sets in all (those two included), the others of --set-capacity instances, ten of
    them with an OS upgrade just started (rolling forward, before their first batch);
  * a real rolling OS upgrade of the --large set: started by upgrades.services.os_upgrade_now
    and driven to its end by the engine and the simulator in simulated time (a frozen clock
    jumped to each next due moment, as the tests' `drive` fixture does), so its batches,
    instance outcomes and events are the engine's own;
  * --runs finished runs for the history list, bulk-created over the fleet's sets (kinds,
    statuses and times varied; the history page reads runs with their set and actor only, so
    they get no batches or outcomes).

Then, in the same process, Django's test Client, logged in as a viewer, requests each page
through the real URLconf, views, templates and middleware: one warm-up request, one
request under CaptureQueriesContext for the query count, then --repeat timed requests
(time.perf_counter around client.get). Output: one line per page with the median and the
spread (min–max) in ms, the median CPU time of the process (SQLite runs in it, so this is
the request's own cost when other work shares the cores), the number of queries and the
response size; target: every page under 150 ms median. --profile also prints a cProfile of one request per page.

Redis: REDIS_URL when set, else an embedded redis-server (services publish to the channel
layer and enqueue Celery tasks on commit; nothing consumes them here, on a queue of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    APP_HEALTH,
    DEFAULT_POSTGRES_URL,
    NEW_VERSION,
    OLD_VERSION,
    UBUNTU,
    load_average,
    postgres_database,
    publish_image,
)

BASE_DIR = Path(__file__).resolve().parent.parent
TARGET_MS = 150.0
UPGRADING_SETS = 10


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    redis_server = None
    redis_dir = None
    if not os.environ.get("REDIS_URL"):
        from config.embedded_redis import EmbeddedRedis

        redis_dir = Path(tempfile.mkdtemp(prefix="vmss-bench-redis-"))
        redis_server = EmbeddedRedis(redis_dir / "redis.sock")
        redis_server.start()
        os.environ["REDIS_URL"] = redis_server.url
    workdir = Path(tempfile.mkdtemp(prefix="vmss-bench-pages-"))
    dropper = None
    try:
        if args.database == "sqlite":
            url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        else:
            url, dropper = postgres_database(args.postgres_url, "bench_pages")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "CELERY_DEFAULT_QUEUE": f"bench-pages-{uuid.uuid4().hex[:8]}",
            "TIME_SCALE": "1",
            "DEBUG": "false",
            "SECURE_COOKIES": "false",
            "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
            "LOG_LEVEL": "ERROR",
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True
        )
        command = [sys.executable, "-m", "bench.pages", "--child", *_forwarded(args)]
        return subprocess.run(command, cwd=BASE_DIR, env=env).returncode
    finally:
        if dropper is not None:
            dropper()
        shutil.rmtree(workdir, ignore_errors=True)
        if redis_server is not None:
            redis_server.stop()
            os.environ.pop("REDIS_URL", None)
        if redis_dir is not None:
            shutil.rmtree(redis_dir, ignore_errors=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100, help="instances of the small scale set")
    parser.add_argument("--large", type=int, default=1000, help="instances of the large set (and of its run)")
    parser.add_argument("--sets", type=int, default=200, help="scale sets in the fleet overview")
    parser.add_argument("--set-capacity", type=int, default=100, help="instances of each other set")
    parser.add_argument("--runs", type=int, default=10_000, help="finished runs in the history")
    parser.add_argument("--repeat", type=int, default=9, help="timed requests per page")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one request per page")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def _forwarded(args: argparse.Namespace) -> list[str]:
    forwarded = [
        *("--small", str(args.small), "--large", str(args.large), "--sets", str(args.sets)),
        *("--set-capacity", str(args.set_capacity), "--runs", str(args.runs), "--repeat", str(args.repeat)),
    ]
    if args.profile:
        forwarded.append("--profile")
    if args.json:
        forwarded += ["--json", str(Path(args.json).resolve())]
    return forwarded


# --- the child: build the data, request the pages ---------------------------------------------


def _child(args: argparse.Namespace) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.db import connection

    started = time.perf_counter()
    built = _build(args)
    print(
        f"built in {time.perf_counter() - started:.1f} s on {connection.vendor}: {built['sets']} sets, "
        f"{built['instances']:,} instances, {built['runs']:,} runs; the {args.large}-instance run has "
        f"{built['batches']} batches, {built['outcomes']:,} outcomes, {built['events']:,} events ({built['status']})",
        flush=True,
    )
    pages = [
        (f"scale-set page, {args.small:,} instances", f"/scale-sets/{built['small']}/"),
        (f"scale-set page, {args.large:,} instances", f"/scale-sets/{built['large']}/"),
        (f"fleet overview, {built['sets']:,} sets", "/"),
        (f"history list, {built['runs']:,} runs", "/history/"),
        (f"run page, {args.large:,}-instance run", f"/runs/{built['run']}/"),
    ]
    results = [_measure(name, path, built["user"], args) for name, path in pages]
    print()
    print(f"{args.repeat} timed requests per page; load average {load_average()}")
    print(f"{'page':40}{'median ms':>10}  {'min-max ms':>15}{'cpu ms':>8}{'queries':>9}{'KiB':>8}  target")
    for r in results:
        verdict = "ok" if r["median_ms"] < TARGET_MS else f"OVER {TARGET_MS:g} ms"
        print(
            f"{r['page']:40}{r['median_ms']:10.1f}  {r['min_ms']:7.1f}-{r['max_ms']:<7.1f}"
            f"{r['cpu_median_ms']:8.1f}{r['queries']:9d}{r['bytes'] / 1024:8.0f}  {verdict}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"built": _plain(built), "pages": results}, indent=2))
    return 0 if all(r["median_ms"] < TARGET_MS for r in results) else 1


def _plain(built: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in built.items() if isinstance(v, int | str)}


def _measure(name: str, path: str, user: Any, args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user)
    warm = client.get(path)
    assert warm.status_code == 200, f"{path}: {warm.status_code}"
    with CaptureQueriesContext(connection) as captured:
        client.get(path)
    queries = len(captured)  # now: the captured slice is read from the connection's log lazily
    if args.profile:
        slowest = sorted(captured.captured_queries, key=lambda q: -float(q["time"]))[:3]
        for q in slowest:
            print(f"    {float(q['time']) * 1000:7.1f} ms  {q['sql'][:300]}", flush=True)
    timings = []
    cpu = []
    size = 0
    for _ in range(args.repeat):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        response = client.get(path)
        timings.append((time.perf_counter() - begin) * 1000)
        # CPU time of this process (SQLite runs in it): what the request cost, whatever else
        # the machine's two cores were doing meanwhile.
        cpu.append((time.process_time() - begin_cpu) * 1000)
        size = len(response.content)
    if args.profile:
        _profile(client, path, name)
    return {
        "page": name,
        "path": path,
        "median_ms": statistics.median(timings),
        "min_ms": min(timings),
        "max_ms": max(timings),
        "cpu_median_ms": statistics.median(cpu),
        "queries": queries,
        "bytes": size,
        "timings_ms": timings,
    }


def _profile(client: Any, path: str, name: str) -> None:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    client.get(path)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    print(f"--- cProfile of one request: {name} ({path})\n{out.getvalue()}", flush=True)


def _build(args: argparse.Namespace) -> dict[str, Any]:
    import datetime as dt

    from django.contrib.auth.models import Group, User
    from django.utils import timezone

    from fleet import clock, services
    from fleet.models import Instance, Region
    from fleet.roles import VIEWERS
    from upgrades import services as upgrade_services
    from upgrades.models import InstanceOutcome, RunEvent, UpgradeBatch

    region = Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})[0]

    def make(name: str, capacity: int, **model: Any) -> Any:
        return services.scale_set_create(
            subscription_id="11111111-1111-1111-1111-111111111111",
            resource_group=f"rg-{name.split('-')[0]}",
            name=name,
            region=region,
            capacity=capacity,
            single_placement_group=capacity <= 100,
            max_batch_instance_percent=20,
            image_publisher=UBUNTU["image_publisher"],
            image_offer=UBUNTU["image_offer"],
            image_sku=UBUNTU["image_sku"],
            image_version="latest",
            **model,
        )

    with clock.frozen(timezone.now()) as frozen:
        publish_image(region, OLD_VERSION, clock.now() - dt.timedelta(days=60))
        small = make("small", args.small)
        large = make("large", args.large, extensions=[APP_HEALTH])
        fleet = [
            make(f"{('web', 'api', 'batch', 'cache')[n % 4]}-{n:03d}", args.set_capacity, upgrade_mode="Rolling")
            for n in range(max(0, args.sets - 2))
        ]
        publish_image(region, NEW_VERSION, clock.now() - dt.timedelta(seconds=1))
        run = upgrade_services.os_upgrade_now(scale_set=large)
        run = _drive(run, frozen)
        for scale_set in fleet[:UPGRADING_SETS]:
            upgrade_services.os_upgrade_now(scale_set=scale_set)
        history = _history_runs(args.runs, [small, *fleet], run, clock.now())
    user = User.objects.create_user(username="bench-viewer", password=uuid.uuid4().hex)
    user.groups.add(Group.objects.get_or_create(name=VIEWERS)[0])
    return {
        "user": user,
        "small": small.pk,
        "large": large.pk,
        "run": run.pk,
        "status": run.status,
        "sets": 2 + len(fleet),
        "instances": Instance.objects.count(),
        "runs": history + 1 + min(UPGRADING_SETS, len(fleet)),
        "batches": UpgradeBatch.objects.filter(run=run).count(),
        "outcomes": InstanceOutcome.objects.filter(run=run).count(),
        "events": RunEvent.objects.filter(run=run).count(),
    }


def _drive(run: Any, frozen: Any) -> Any:
    """The run to its end in simulated time: apply the simulator's due steps, advance the run,
    jump the frozen clock to the next due moment (what the beat and the worker do, exactly)."""
    from django.db.models import Min

    from fleet import clock
    from fleet.drivers import simulator
    from fleet.models import Instance
    from upgrades import engine
    from upgrades.models import TERMINAL

    for _ in range(20_000):
        now = clock.now()
        simulator.advance(now)
        engine.run_advance(run.pk)
        run.refresh_from_db()
        if run.status in TERMINAL:
            return run
        due = [run.next_action_at, Instance.objects.aggregate(t=Min("driver_due_at"))["t"]]
        upcoming = min(t for t in due if t is not None)
        if upcoming > now:
            frozen.advance((upcoming - now).total_seconds())
    raise SystemExit(f"run {run.pk} did not finish: {run.status} {run.phase}")


def _history_runs(count: int, scale_sets: list[Any], template: Any, now: Any) -> int:
    """`count` finished runs, newest an hour ago, one every few minutes back in time."""
    import datetime as dt

    from upgrades.models import Kind, RunStatus, StartedBy, UpgradeRun

    kinds = [Kind.MANUAL_OS, Kind.AUTOMATIC_OS, Kind.ROLLING_MODEL, Kind.MANUAL]
    statuses = [RunStatus.COMPLETED] * 6 + [RunStatus.FAULTED, RunStatus.CANCELLED]
    rows = []
    for n in range(count):
        scale_set = scale_sets[n % len(scale_sets)]
        started = now - dt.timedelta(hours=1, minutes=7 * n)
        status = statuses[n % len(statuses)]
        size = scale_set.capacity
        rows.append(
            UpgradeRun(
                scale_set=scale_set,
                kind=kinds[n % len(kinds)],
                started_by=StartedBy.PLATFORM if n % 4 == 1 else StartedBy.USER,
                status=status,
                phase="done",
                last_action_at=started,
                started_at=started,
                ended_at=started + dt.timedelta(minutes=4),
                target_image=template.target_image,
                target_model_version=1,
                policy=template.policy,
                batch_count=5,
                current_batch=4,
                successful_count=size if status == RunStatus.COMPLETED else size // 2,
                failed_count=0 if status == RunStatus.COMPLETED else size // 10,
                error_code="UpgradeFailed" if status == RunStatus.FAULTED else "",
                error_message="Too many instances were unhealthy after the batch."
                if status == RunStatus.FAULTED
                else "",
            )
        )
    UpgradeRun.objects.bulk_create(rows, batch_size=1000)
    return count


if __name__ == "__main__":
    sys.exit(main())
