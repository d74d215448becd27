"""Benchmark of automatic OS upgrades across a fleet: 200 sets × 100 instances, 1 and 2 workers.

One command (from the repository root, in the venv):

    python -m bench.fleet [--sets 200] [--instances 100] [--workers 1 2] [--repeat 3]
                          [--database postgres|sqlite] [--time-scale 100]

Each measured run uses a fresh throwaway database (PostgreSQL by default: a database
`bench_fleet_<random>` created on --postgres-url's server and dropped afterwards; SQLite: a
file in a temporary directory), migrated by a `manage.py migrate` subprocess. In it the
benchmark builds --sets scale sets of --instances instances each through fleet.services (one
region, Rolling mode, 20 % batches, image version "latest" of a supported platform SKU,
Canonical/UbuntuServer/18.04-LTS, an Application Health extension as the health source that
R-AUTO-1 requires), turns automatic OS upgrades on for every set with
upgrades.services.automatic_os_upgrade_set, and starts N REAL Celery worker processes
(`celery worker --concurrency 1` each, all on the run's own queue) and a Celery beat. Then the
clock starts, a newer image version is published (fleet.services.platform_image_publish),
and nothing else is done by the benchmark: the beat's automatic_upgrades_task notices the new
latest version, creates the rollout, and the workers start one automatic run per set and
drive every run and the rollout to their end. The run is over at the last run's ended_at.

"1 and 2 workers" means one and two worker processes, each with a pool of one: one and two
tasks at a time. The beat, PostgreSQL, Redis and this process share the same cores.

Durations: every simulated duration is 0 (SIMULATOR_DURATIONS all zero), and the rollout's
delays are 0 (AUTOMATIC_UPGRADE_DELAY_SECONDS=0: a new version rolls out at once, not 30 min
later; AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS=0: the first automatic upgrade after enabling
does not wait 3 h). What is left of simulated time is the health source's first verdict,
interval 5 s × 1 probe (the least Application Health allows), which --time-scale shrinks (at
100: 50 ms per batch; 300 s health wait = 3 s real). Everything else is orchestration.

Figures per run: instance upgrades per second (upgraded instances / wall seconds, publish to
the last run's end), when the rollout was created and when the first and last runs started
(after the publish), and the load average. Summary: median (min–max) per worker count and
the speed-up of 2 workers over 1 (ratio of the medians; target ≥ 1.6). The repetitions
alternate (1, 2, 1, 2, …) so that load from elsewhere falls on both. --json PATH writes every
figure. Internally the command re-runs itself with --child once per measured run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    APP_HEALTH,
    DEFAULT_POSTGRES_URL,
    NEW_VERSION,
    OLD_VERSION,
    UBUNTU,
    ZERO_DURATIONS,
    Processes,
    child_environment,
    load_average,
    publish_image,
    redis_for_benchmark,
    run_child,
    spread,
    throwaway_database,
)

TARGET_SPEED_UP = 1.6
# The settings a run's processes get besides the database and queue (see the docstring).
ROLLOUT_ENV = {
    "SIMULATOR_DURATIONS": json.dumps(ZERO_DURATIONS),
    "AUTOMATIC_UPGRADE_DELAY_SECONDS": "0",
    "AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS": "0",
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    results: list[dict[str, Any]] = []
    with redis_for_benchmark() as redis_url:
        print(f"Redis: {redis_url}; load average before: {load_average()}", flush=True)
        for n in range(1, args.repeat + 1):
            for workers in args.workers:
                result = _measured_run(args, workers)
                result.update(workers=workers, repeat=n, load=load_average())
                results.append(result)
                print(_one_line(result), flush=True)
    print()
    print(_summary(results, args))
    print(f"load average after: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("ok") for r in results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=200, help="scale sets, all upgrading at once")
    parser.add_argument("--instances", type=int, default=100, help="instances per set")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts to compare")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--time-scale", type=float, default=100.0, help="TIME_SCALE (shrinks the health verdict)")
    parser.add_argument("--beat-interval", type=float, help="BEAT_INTERVAL_SECONDS (default: the setting's)")
    parser.add_argument("--poll", type=float, help="ENGINE_POLL_SECONDS (default: the setting's)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on a run after this many seconds")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker and beat logs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def _measured_run(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """Create and migrate a throwaway database, run the child in it, drop the database."""
    with throwaway_database(args.database, args.postgres_url, prefix="bench_fleet") as url:
        env = child_environment(
            url, queue="bench-fleet", time_scale=args.time_scale, beat_interval=args.beat_interval, poll=args.poll
        )
        env.update(ROLLOUT_ENV)
        command = [
            *(sys.executable, "-m", "bench.fleet", "--child", "--workers", str(workers)),
            *("--sets", str(args.sets), "--instances", str(args.instances)),
            *("--concurrency", str(args.concurrency), "--timeout", str(args.timeout)),
        ]
        if args.keep_logs:
            command.append("--keep-logs")
        return run_child(command, env)


def _one_line(r: dict[str, Any]) -> str:
    head = f"{r['workers']} worker(s) #{r['repeat']}"
    if not r.get("ok"):
        if "error" in r:
            return f"{head}  FAILED\n{r['error']}"
        return (
            f"{head}  FAILED: rollout {r['rollout_status']} {r['halt_reason']}; {r['runs']} runs "
            f"{', '.join(r['run_statuses'])}; {r['upgraded']:,} instances upgraded"
        )
    return (
        f"{head}  {r['upgraded']:,} instances in {r['runs']} runs  wall {r['wall_seconds']:7.2f} s  "
        f"{r['instances_per_second']:7.1f} instance upgrades/s  rollout created +{r['rollout_created']:.2f} s  "
        f"runs started +{r['first_run_started']:.2f}..+{r['last_run_started']:.2f} s  (load {r['load']})\n"
        + "\n".join(
            f"    {name:14} min {q[0]:6.3f}  q1 {q[1]:6.3f}  median {q[2]:6.3f}  q3 {q[3]:6.3f}  max {q[4]:6.3f} s"
            for name, q in (
                ("run", r["run_seconds"]),
                ("batch gap", r["batch_gap"]),
                ("batch upgrade", r["batch_upgrade"]),
                ("batch health", r["batch_health"]),
            )
        )
    )


def _summary(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.sets} sets × {args.instances} instances, automatic OS upgrade, zero durations, "
        f"TIME_SCALE {args.time_scale:g}; workers of --concurrency {args.concurrency}; {args.database}",
        f"{'workers':>7}{'runs':>5}  {'wall s median (min-max)':>26}  {'instance upgrades/s median (min-max)':>38}",
    ]
    medians: dict[int, float] = {}
    for workers in args.workers:
        same = [r for r in results if r["workers"] == workers]
        group = [r for r in same if r.get("ok")]
        failed = len(same) - len(group)
        if not group:
            lines.append(f"{workers:>7}{0:>5}  all {failed} failed")
            continue
        rates = [r["instances_per_second"] for r in group]
        medians[workers] = statistics.median(rates)
        line = (
            f"{workers:>7}{len(group):>5}  {spread([r['wall_seconds'] for r in group], '.2f'):>26}  "
            f"{spread(rates, '.1f'):>38}"
        )
        if failed:
            line += f"  ({failed} failed)"
        lines.append(line)
    if 1 in medians:
        for workers, median in medians.items():
            if workers == 1:
                continue
            pairs = _paired_speed_ups(results, workers)
            paired = f"; per repetition {spread(pairs, '.2f')}" if pairs else ""
            verdict = "met" if median / medians[1] >= TARGET_SPEED_UP else "not met"
            lines.append(
                f"speed-up of {workers} workers over 1: {median / medians[1]:.2f}× (medians){paired}; "
                f"target ≥ {TARGET_SPEED_UP}: {verdict}"
            )
    return "\n".join(lines)


def _paired_speed_ups(results: list[dict[str, Any]], workers: int) -> list[float]:
    """The speed-up within each repetition (its 1-worker and N-worker runs ran back to back)."""
    ups = []
    for n in sorted({r["repeat"] for r in results}):
        one = [r for r in results if r["repeat"] == n and r["workers"] == 1 and r.get("ok")]
        many = [r for r in results if r["repeat"] == n and r["workers"] == workers and r.get("ok")]
        if one and many:
            ups.append(many[0]["instances_per_second"] / one[0]["instances_per_second"])
    return ups


# --- the child: one measured run in one database -------------------------------------------


def _child(args: argparse.Namespace) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    (workers,) = args.workers  # the parent passes one worker count to each child
    region = _build_fleet(args.sets, args.instances)
    processes = Processes(keep_logs=args.keep_logs)
    try:
        processes.start(concurrency=args.concurrency, workers=workers)
        result = _time_the_rollout(region, args.sets, processes, timeout=args.timeout)
    finally:
        processes.stop()
    print(json.dumps(result))
    return 0


def _build_fleet(sets: int, instances: int) -> Any:
    """`sets` sets on the old image with automatic OS upgrades on; returns their region."""
    import datetime as dt

    from fleet import clock, services
    from fleet.models import Region, SupportedOsSku
    from upgrades.services import automatic_os_upgrade_set

    region = Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})[0]
    # Seeded by a migration; made sure of here so that R-AUTO-1 does not depend on the seed.
    SupportedOsSku.objects.get_or_create(
        publisher=UBUNTU["image_publisher"], offer=UBUNTU["image_offer"], sku=UBUNTU["image_sku"]
    )
    publish_image(region, OLD_VERSION, clock.now() - dt.timedelta(days=1))
    for n in range(sets):
        scale_set = services.scale_set_create(
            subscription_id="11111111-1111-1111-1111-111111111111",
            resource_group="rg-bench-fleet",
            name=f"fleet-{n:03d}",
            region=region,
            capacity=instances,
            extensions=[APP_HEALTH],
            single_placement_group=instances <= 100,
            max_batch_instance_percent=20,
            upgrade_mode="Rolling",
            image_version="latest",
            **UBUNTU,
        )
        automatic_os_upgrade_set(scale_set=scale_set, enabled=True)
    return region


def _time_the_rollout(region: Any, sets: int, processes: Processes, *, timeout: float) -> dict[str, Any]:
    """Publish the new version, then wait until every set has had its automatic run and the
    rollout has ended."""
    from django.utils import timezone

    from upgrades.models import TERMINAL, Kind, Rollout, RolloutStatus, RunStatus, UpgradeRun

    started = timezone.now()
    publish_image(region, NEW_VERSION, started)
    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS)
    deadline = time.monotonic() + timeout
    while True:
        rollout = Rollout.objects.first()
        ended = rollout is not None and rollout.status in (RolloutStatus.COMPLETED, RolloutStatus.HALTED)
        if ended and not runs.exclude(status__in=TERMINAL).exists():
            break
        if time.monotonic() > deadline or not processes.alive():
            raise SystemExit(
                f"the rollout did not end ({runs.filter(status__in=TERMINAL).count()} of {sets} runs ended)\n"
                f"{processes.log_tail()}"
            )
        time.sleep(0.2)  # the benchmark's own poll; the figures come from the rows' times
    assert rollout is not None
    finished = list(runs)
    upgraded = sum(r.successful_count for r in finished)
    ok = (
        rollout.status == RolloutStatus.COMPLETED
        and len(finished) == sets
        and all(r.status == RunStatus.COMPLETED and r.failed_count == 0 for r in finished)
    )
    wall = (max(r.ended_at for r in finished) - started).total_seconds()

    def after(moment: Any) -> float:
        return (moment - started).total_seconds()

    return {
        "ok": ok,
        "rollout_status": rollout.status,
        "halt_reason": rollout.halt_reason,
        "runs": len(finished),
        "run_statuses": sorted({r.status for r in finished}),
        "upgraded": upgraded,
        "wall_seconds": wall,
        "instances_per_second": upgraded / wall,
        "rollout_created": after(rollout.created_at),
        "first_run_started": after(min(r.started_at for r in finished)),
        "last_run_started": after(max(r.started_at for r in finished)),
        "first_run_ended": after(min(r.ended_at for r in finished)),
        "rollout_ended": after(rollout.ended_at) if rollout.ended_at else None,
        "run_seconds": _quartiles([(r.ended_at - r.started_at).total_seconds() for r in finished]),
        **_batch_figures(finished),
    }


def _batch_figures(runs: list[Any]) -> dict[str, list[float]]:
    """Where a run's time goes, over every batch of every run (quartiles): `gap` from the
    run's start or its previous batch's end to the batch's start, `upgrade` to every instance
    provisioned, `health` to the batch's verdict."""
    from upgrades.models import UpgradeBatch

    gaps, upgrades, healths = [], [], []
    previous: dict[int, Any] = {r.pk: r.started_at for r in runs}
    for batch in UpgradeBatch.objects.filter(run__in=runs).order_by("run_id", "index"):
        gaps.append((batch.started_at - previous[batch.run_id]).total_seconds())
        upgrades.append((batch.upgraded_at - batch.started_at).total_seconds())
        healths.append((batch.ended_at - batch.upgraded_at).total_seconds())
        previous[batch.run_id] = batch.ended_at
    return {"batch_gap": _quartiles(gaps), "batch_upgrade": _quartiles(upgrades), "batch_health": _quartiles(healths)}


def _quartiles(values: list[float]) -> list[float]:
    """[min, 25th percentile, median, 75th percentile, max]."""
    if len(values) < 2:
        return (values or [float("nan")]) * 5
    q1, median, q3 = statistics.quantiles(values, n=4)
    return [min(values), q1, median, q3, max(values)]


if __name__ == "__main__":
    sys.exit(main())
