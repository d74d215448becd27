"""Benchmark of the upgrade engine: rolling OS upgrades of 100, 1,000 and 10,000 instances, end to end.

One command (from the repository root, in the venv):

    python -m bench.engine [--instances 100 1000 10000] [--set-size 1000] [--repeat 3]
                           [--database sqlite|postgres|both] [--scenario zero|realistic|both]
                           [--time-scale 30]

Each measured run uses a fresh throwaway database (SQLite: a file in a temporary directory,
with the embedded defaults of config/settings.py; PostgreSQL: a database created on
--postgres-url's server and dropped afterwards), migrated by a `manage.py migrate`
subprocess. In it the benchmark builds the instances of one size through fleet.services as
scale sets of at most --set-size instances (10,000 = ten sets of 1,000; singlePlacementGroup
false above 100, 20 % batches: 5 batches of 200 for 1,000), starts a REAL Celery worker
(--concurrency 2) and Celery beat on their own queue, real Redis (REDIS_URL, or an embedded
redis-server when it is unset), starts one upgrades.services.os_upgrade_now() on each set,
one after the other, and times them until every run has completed.

Scenarios:
  zero       every simulated duration 0 (SIMULATOR_DURATIONS all zero; the sets have no health
             source, so an instance is healthy as soon as it has booted): what is measured is
             the orchestration overhead alone. Figure: wall seconds and ms per instance
             (target < 2 ms).
  realistic  the simulator's default durations (reimage 30 s, boot 45 s, 10 s per extension)
             and an Application Health extension (interval 5 s × 1 probe) at TIME_SCALE
             --time-scale. Figure: wall time / ideal schedule time, where ideal = batches ×
             (reimage + boot + extensions + interval × probes + pause) / TIME_SCALE
             (target < 1.05). Sets upgrading at once run in parallel: the ideal of ten sets
             is one set's.

Wall time runs from just before the first os_upgrade_now() (planning and writing the runs
included; "starts" is how long starting them all took) to the last run's ended_at. The beat
interval and the engine poll are the settings' defaults unless --beat-interval / --poll are
given: the figures do not come from polling harder.

Output: one line per measured run, then a summary (median, min–max) per database, size and
scenario, and a growth line per database: how ms per instance (zero) and overhead per
instance (realistic) change with size — flat or falling is linear or better. --json PATH also
writes every figure as JSON. Internally the command re-runs itself with --child once per
measured run, in a process whose settings point at that run's database.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# The names other benchmarks imported from here live in bench.common now.
from bench.common import (
    APP_HEALTH,
    DEFAULT_POSTGRES_URL,
    DEPENDENCY_AGENT,
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

__all__ = ["APP_HEALTH", "DEFAULT_POSTGRES_URL", "NEW_VERSION", "OLD_VERSION", "UBUNTU", "main"]

DEFAULT_SIZES = [100, 1000, 10_000]


# --- the parent: databases, Redis, repetitions, summary ------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    scenarios = ["zero", "realistic"] if args.scenario == "both" else [args.scenario]
    results: list[dict[str, Any]] = []
    with redis_for_benchmark() as redis_url:
        print(f"Redis: {redis_url}; load average before: {load_average()}", flush=True)
        for database in databases:
            for size in args.instances:
                for scenario in scenarios:
                    for n in range(1, args.repeat + 1):
                        result = _measured_run(args, database, scenario, size)
                        result.update(database=database, scenario=scenario, size=size, repeat=n, load=load_average())
                        results.append(result)
                        print(_one_line(result), flush=True)
    print()
    print(_summary(results, args))
    print(f"load average after: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("ok") for r in results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--instances", type=int, nargs="+", default=DEFAULT_SIZES, help="sizes to measure (instances in all)"
    )
    parser.add_argument("--set-size", type=int, default=1000, help="instances per scale set at most")
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


def _measured_run(args: argparse.Namespace, database: str, scenario: str, size: int) -> dict[str, Any]:
    """Create and migrate a throwaway database, run the child in it, drop the database."""
    with throwaway_database(database, args.postgres_url) as url:
        env = child_environment(
            url, queue="bench", time_scale=args.time_scale, beat_interval=args.beat_interval, poll=args.poll
        )
        if scenario == "zero":
            env["SIMULATOR_DURATIONS"] = json.dumps(ZERO_DURATIONS)
        else:
            env.pop("SIMULATOR_DURATIONS", None)
        command = [
            *(sys.executable, "-m", "bench.engine", "--child", "--scenario", scenario),
            *("--instances", str(size), "--set-size", str(args.set_size)),
            *("--concurrency", str(args.concurrency), "--time-scale", str(args.time_scale)),
        ]
        if args.keep_logs:
            command.append("--keep-logs")
        return run_child(command, env)


def _one_line(r: dict[str, Any]) -> str:
    head = f"{r['database']:8} {r['size']:>6} {r['scenario']:9} #{r['repeat']}"
    if not r.get("ok"):
        return f"{head}  FAILED\n{r.get('error', '')}"
    text = (
        f"{head}  {r['sets']} set(s)  wall {r['wall_seconds']:7.3f} s  {r['ms_per_instance']:6.3f} ms/instance"
        f"  starts {r['start_seconds']:.3f} s"
    )
    if r["scenario"] == "realistic":
        text += f"  ideal {r['ideal_seconds']:6.2f} s  ratio {r['ratio']:.3f}  overhead {r['overhead_seconds']:.3f} s"
    text += f"  (load {r['load']})"
    batches = r.get("batches", [])
    if batches:
        text += "\n" + "\n".join(
            f"    batch {b['index']}: gap {b['gap']:6.3f}  upgrade {b['upgrade']:6.3f}  health {b['health']:6.3f}"
            + (" (slowest set)" if r["sets"] > 1 else "")
            for b in batches
        )
    return text


def _summary(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"sets of at most {args.set_size} instances, 20 % batches; worker --concurrency {args.concurrency}; "
        f"realistic TIME_SCALE {args.time_scale:g}",
        f"{'database':9}{'instances':>9} {'scenario':10}{'runs':>5}  {'wall s median (min-max)':>26}  "
        f"{'ms/instance median (min-max)':>30}  {'ratio median (min-max)':>24}",
    ]
    keys = sorted(
        {(r["database"], r["size"], r["scenario"]) for r in results},
        key=lambda k: (k[0] != "sqlite", k[1], k[2] != "zero"),
    )
    for database, size, scenario in keys:
        same = [r for r in results if (r["database"], r["size"], r["scenario"]) == (database, size, scenario)]
        group = [r for r in same if r.get("ok")]
        failed = len(same) - len(group)
        if not group:
            lines.append(f"{database:9}{size:>9} {scenario:10}{0:>5}  all {failed} failed")
            continue
        ratio = spread([r["ratio"] for r in group], ".3f") if scenario == "realistic" else "-"
        line = (
            f"{database:9}{size:>9} {scenario:10}{len(group):>5}  "
            f"{spread([r['wall_seconds'] for r in group], '.3f'):>26}  "
            f"{spread([r['ms_per_instance'] for r in group], '.3f'):>30}  {ratio:>24}"
        )
        if failed:
            line += f"  ({failed} failed)"
        lines.append(line)
    lines.extend(_growth(results))
    return "\n".join(lines)


def _growth(results: list[dict[str, Any]]) -> list[str]:
    """Per database: the per-instance cost at each size (medians) and its change from the
    smallest size to the largest; linear or better means flat or falling."""
    lines = []
    for database in dict.fromkeys(r["database"] for r in results):
        for scenario, key, unit in (
            ("zero", "ms_per_instance", "ms/instance"),
            ("realistic", "overhead_ms_per_instance", "overhead ms/instance"),
        ):
            by_size: dict[int, float] = {}
            for size in sorted({r["size"] for r in results}):
                values = [
                    r[key]
                    for r in results
                    if r.get("ok") and (r["database"], r["scenario"], r["size"]) == (database, scenario, size)
                ]
                if values:
                    by_size[size] = statistics.median(values)
            if len(by_size) < 2:
                continue
            sizes = list(by_size)
            # Each step up in size, not only the ends: a rise in the middle is not linear.
            factors = [
                by_size[b] / by_size[a] if by_size[a] > 0 else float("inf") for a, b in itertools.pairwise(sizes)
            ]
            verdict = "linear or better" if max(factors) <= 1.1 else "worse than linear"
            steps = " -> ".join(f"{size:,}: {value:.3f}" for size, value in by_size.items())
            lines.append(
                f"growth {database} {scenario} ({unit}, median): {steps}  "
                f"step factors {', '.join(f'x{f:.2f}' for f in factors)}: {verdict}"
            )
    return lines


# --- the child: one measured run in one database -------------------------------------------


def _child(args: argparse.Namespace) -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    (size,) = args.instances  # the parent passes one size to each child
    scale_sets = _build_fleet(size, args.set_size, args.scenario)
    processes = Processes(keep_logs=args.keep_logs)
    try:
        processes.start(concurrency=args.concurrency)
        result = _time_the_runs(scale_sets, processes)
    finally:
        processes.stop()
    print(json.dumps(result))
    return 0


def _build_fleet(instances: int, set_size: int, scenario: str) -> list[Any]:
    """Sets of at most `set_size` instances on the old image, a newer image published: like
    tests.factories does."""
    import datetime as dt

    from fleet import clock, services
    from fleet.models import Region

    region = Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})[0]
    publish_image(region, OLD_VERSION, clock.now() - dt.timedelta(days=1))
    capacities = [min(set_size, instances - start) for start in range(0, instances, set_size)]
    scale_sets = [
        services.scale_set_create(
            subscription_id="11111111-1111-1111-1111-111111111111",
            resource_group="rg-bench",
            name=f"bench-{n:02d}",
            region=region,
            capacity=capacity,
            extensions=[APP_HEALTH if scenario == "realistic" else DEPENDENCY_AGENT],
            single_placement_group=capacity <= 100,
            max_batch_instance_percent=20,
            image_version="latest",
            **UBUNTU,
        )
        for n, capacity in enumerate(capacities)
    ]
    publish_image(region, NEW_VERSION, clock.now() - dt.timedelta(seconds=1))
    return scale_sets


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


def _time_the_runs(scale_sets: list[Any], processes: Processes) -> dict[str, Any]:
    """Start one rolling OS upgrade per set, one after the other, and wait for all of them."""
    from django.utils import timezone

    from upgrades import services
    from upgrades.models import TERMINAL, RunStatus, UpgradeRun

    started = timezone.now()
    runs = [services.os_upgrade_now(scale_set=scale_set) for scale_set in scale_sets]
    start_seconds = (timezone.now() - started).total_seconds()
    pks = [run.pk for run in runs]
    deadline = time.monotonic() + 600 + 60 * len(pks)
    while UpgradeRun.objects.filter(pk__in=pks).exclude(status__in=TERMINAL).exists():
        if time.monotonic() > deadline or not processes.alive():
            raise SystemExit(f"runs {pks} did not end\n{processes.log_tail()}")
        time.sleep(0.05)  # the benchmark's own poll; the wall time comes from the runs' ended_at
    runs = list(UpgradeRun.objects.filter(pk__in=pks).select_related("scale_set").order_by("pk"))
    instances = sum(scale_set.capacity for scale_set in scale_sets)
    ok = all(r.status == RunStatus.COMPLETED and r.successful_count == r.scale_set.capacity for r in runs)
    wall = (max(r.ended_at for r in runs) - started).total_seconds()
    # Sets upgrading at once run in parallel: the ideal is the longest single run's.
    ideal = max(_ideal_seconds(r) for r in runs)
    return {
        "ok": ok,
        "status": sorted({r.status for r in runs}),
        "error": "; ".join(sorted({r.error_message for r in runs if r.error_message})),
        "instances": instances,
        "sets": len(runs),
        "batch_count": max(r.batch_count for r in runs),
        "start_seconds": start_seconds,
        "wall_seconds": wall,
        "ms_per_instance": wall * 1000 / instances,
        "ideal_seconds": ideal,
        "ratio": wall / ideal if ideal else None,
        "overhead_seconds": wall - ideal,
        "overhead_ms_per_instance": (wall - ideal) * 1000 / instances,
        "batches": _slowest_batches(runs, started),
    }


def _slowest_batches(runs: list[Any], started: Any) -> list[dict[str, Any]]:
    """Per batch index, the largest gap (previous batch's end, or the clock's start, to this
    batch's start), upgrade (start to every instance provisioned) and health (to the batch's
    verdict) over the runs: with one run, its own figures."""
    slowest: dict[int, dict[str, Any]] = {}
    for run in runs:
        previous_end = started
        for batch in run.batches.order_by("index"):
            figures = {
                "gap": (batch.started_at - previous_end).total_seconds(),
                "upgrade": (batch.upgraded_at - batch.started_at).total_seconds(),
                "health": (batch.ended_at - batch.upgraded_at).total_seconds(),
            }
            row = slowest.setdefault(batch.index, {"index": batch.index, "size": batch.size, **figures})
            for key, value in figures.items():
                row[key] = max(row[key], value)
            previous_end = batch.ended_at
    return [slowest[index] for index in sorted(slowest)]


if __name__ == "__main__":
    sys.exit(main())
