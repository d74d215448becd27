"""Benchmark of the local-process driver: health probes over real sockets, and rolling upgrades
of a set whose instances are real processes.

One command (from the repository root, in the venv):

    python -m bench.probe [--instances 300] [--rounds 5] [--set-size 50] [--repeat 3]
                          [--database sqlite|postgres] [--time-scale 1] [--part probes|engine|both]

Part 1, probe throughput (--instances, --rounds). A temporary image store gets one "healthy"
image (fleet.drivers.local.images.build); --instances real instance programs are started from
it, each from its own OS directory (images.install_os_disk), on a free port of 127.0.0.1, as
`python program.py --port P --protocol http --data-dir D --name N`, and polled (with a
deadline) until every one answers Healthy; a program that lost its port to another process
before it could bind it is started again on another one. Then fleet.drivers.local.probe.
probe_all probes all of them --rounds times, each round as the driver's probe round makes it:
a fresh event loop, at most 256 connections at a time, an http GET /health with the
extension's default 5 s time-out. Figures per round: wall seconds, instances probed per second
(instances / wall), and the CPU the probing process used. A round in which the probing
process's full garbage collection falls (it walks every object of the process, Django's
included, as a worker's would) is marked: it is slower by that collection, not by the sockets.
Then every tenth program is stopped and the same rounds are timed again: their connections are
refused at once by the kernel, so a round should not be slower (only an endpoint that accepts
and never answers holds a round, up to the time-out; that is not measured here). This part
needs no database and runs in a child process of its own: its settings (the image store) come
from its environment, as the engine children's do, and the parent never loads Django. The
programs are killed at the end, also on an error or a Ctrl-C; the parent then kills any
program still running from the part's temporary directory before removing it.

Part 2, the engine on a set of real processes (--set-size, --repeat, --time-scale). One child
per repetition, in a throwaway database (SQLite file or a database on --postgres-url's server),
migrated by `manage.py migrate`, with a temporary image store and instance root given to the
child, its worker and its beat through LOCAL_IMAGE_STORE and LOCAL_INSTANCE_ROOT. The child
builds the demo app's versions 1.0.0 and 1.1.0 (Contoso/DemoApp/app, both "healthy"), publishes
1.0.0 a day ago, creates one scale set with driver "local" of --set-size instances on "latest"
(an Application Health extension: http, port 8080, /health, interval 5 s, 1 probe; 20 %
batches; no zones; single placement group up to 100 instances), starts a REAL Celery worker
(--concurrency 2) and beat on a queue of their own (real Redis: REDIS_URL, or an embedded
redis-server), and waits until every instance is Healthy with a live process. Then it publishes
1.1.0 and times upgrades.services.os_upgrade_now() from just before the call to the run's
ended_at (the wall time). The beat interval and the engine poll are the settings' defaults.

    ideal = batches × (probe interval × numberOfProbes + pause between batches)

in real seconds, the interval as the driver probes (fleet.drivers.local.driver.probe_spec: the
set's interval compressed by TIME_SCALE, never under 0.25 s), and the ratio wall / ideal. The
ideal leaves out everything but the probe slots, so the ratio shows what the rest costs: each
instance of a batch is a real process that is stopped (SIGTERM, its exit polled), given a fresh
OS directory copied from the image, and started again (a Python interpreter starting and
binding its port), and the probe tracker probes it at once when it starts (usually refused: the
program is not listening yet) and then at each interval from its start, so a batch turns
healthy at the first slot after its programs listen; the beat tick and the engine poll that
notice each step come on top. A ratio near 1 says the driver and the engine add little to the
probe slots themselves (it can fall under 1 when a program listens before the first probe).
Per batch: upgrade (batch start to every instance upgraded: stop, OS directory, start) and
health (upgraded to the batch's verdict: the probe slots) seconds. At the end every instance
must answer GET /version with 1.1.0 from the process its row names, or the repetition FAILED.
Each child stops every instance process it started (driver.stop_all, and stop_processes of
orphan_processes) before it exits.

Output: per-run lines, then a summary (median, min–max), and the load average before and after
(the machine's other work shows in every figure). --json PATH also writes every figure as JSON.
Internally the command re-runs itself with --child for each part and repetition.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench.common import (
    BASE_DIR,
    DEFAULT_POSTGRES_URL,
    Processes,
    child_environment,
    load_average,
    migrate,
    redis_for_benchmark,
    spread,
    throwaway_database,
)

APP = {"image_publisher": "Contoso", "image_offer": "DemoApp", "image_sku": "app"}
OLD_APP_VERSION = "1.0.0"
NEW_APP_VERSION = "1.1.0"
APP_HEALTH = {
    "name": "HealthExtension",
    "publisher": "Microsoft.ManagedServices",
    "type": "ApplicationHealthLinux",
    "type_handler_version": "2.0",
    "settings": {
        "protocol": "http",
        "port": 8080,
        "requestPath": "/health",
        "intervalInSeconds": 5,
        "numberOfProbes": 1,
    },
}
STOPPED_SHARE = 0.10  # of the programs stopped for the refused rounds
# A child that had a Ctrl-C stops what it started (worker, beat, instance programs) before it
# exits; the parent waits this long for it.
CHILD_CLEANUP_SECONDS = 60.0
STOP_SECONDS = 5.0  # a program asked to stop gets this long before it is killed
START_ATTEMPTS = 3  # per program: its free port may be taken by another process before it binds


# --- the parent: scratch directories, children, summary ------------------------------------------


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Whatever was started is stopped by now (the children's finally, then _scratch).
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.child == "probes":
        return _probes_child(args)
    if args.child == "engine":
        return _engine_child(args)
    report: dict[str, Any] = {"load_before": load_average(), "probes": None, "engine": []}
    print(f"load average before: {report['load_before']}", flush=True)
    if args.part in ("probes", "both"):
        report["probes"] = _probe_part(args)
        print(_probe_lines(report["probes"]), flush=True)
    if args.part in ("engine", "both"):
        with redis_for_benchmark() as redis_url:
            print(f"Redis: {redis_url}", flush=True)
            for n in range(1, args.repeat + 1):
                result = _engine_run(args)
                result.update(database=args.database, size=args.set_size, repeat=n, load=load_average())
                report["engine"].append(result)
                print(_engine_line(result), flush=True)
    print()
    print(_summary(report, args))
    report["load_after"] = load_average()
    print(f"load average after: {report['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    probes_ok = report["probes"] is None or report["probes"].get("ok")
    return 0 if probes_ok and all(r.get("ok") for r in report["engine"]) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="instance programs probed in part 1")
    parser.add_argument("--rounds", type=int, default=5, help="timed probe rounds in part 1, per case")
    parser.add_argument("--set-size", type=int, default=50, help="instances of the set upgraded in part 2")
    parser.add_argument("--repeat", type=int, default=3, help="upgrades measured in part 2 (a child each)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--time-scale", type=float, default=1.0, help="TIME_SCALE of part 2")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes in part 2")
    parser.add_argument("--part", choices=["probes", "engine", "both"], default="both")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker and beat logs")
    parser.add_argument("--child", choices=["probes", "engine"], help=argparse.SUPPRESS)
    return parser


def _programs_under(root: Path) -> list[int]:
    """Pids of the processes whose program (their first argument) lives under `root`. As
    fleet.drivers.local.procfs.programs_under, which cannot be imported here: importing the
    fleet package needs Django's settings, and the parent never loads Django."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(arguments) > 1 and arguments[1].decode(errors="replace").startswith(f"{root}/"):
            found.append(int(entry.name))
    return found


@contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory for one child's image store and instances. Afterwards any program
    still running from it (a child killed before it could stop them) is killed, by the pid
    whose command line names the directory, and the directory is removed."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        for pid in _programs_under(workdir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def _run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a child and return the JSON it printed last, or {"ok": False, "error": …}.

    Not bench.common.run_child's subprocess.run: that kills the child a quarter of a second
    after a Ctrl-C, before it has stopped the worker, the beat and the instance programs it
    started. The child has the Ctrl-C too; here it gets time to clean up."""
    child = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = child.communicate()
    except KeyboardInterrupt:
        try:
            child.communicate(timeout=CHILD_CLEANUP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"ok": False, "error": (stdout + stderr)[-3000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _probe_part(args: argparse.Namespace) -> dict[str, Any]:
    with _scratch("vmss-bench-probe-") as workdir:
        env = {
            **os.environ,
            "LOCAL_IMAGE_STORE": str(workdir / "images"),
            "LOCAL_INSTANCE_ROOT": str(workdir / "instances"),
            # Never opened (this part has no database): only so no settings point at a real one.
            "DATABASE_URL": f"sqlite:///{workdir / 'unused.sqlite3'}",
            "LOG_LEVEL": "WARNING",
        }
        command = [
            *(sys.executable, "-m", "bench.probe", "--child", "probes"),
            *("--instances", str(args.instances), "--rounds", str(args.rounds)),
        ]
        return _run(command, env)


def _engine_run(args: argparse.Namespace) -> dict[str, Any]:
    """Create and migrate a throwaway database, run one upgrade's child there, drop it."""
    with (
        throwaway_database(args.database, args.postgres_url, prefix="bench_probe") as url,
        _scratch("vmss-bench-local-") as workdir,
    ):
        env = child_environment(url, queue="bench-local", time_scale=args.time_scale, beat_interval=None, poll=None)
        env["LOCAL_IMAGE_STORE"] = str(workdir / "images")
        env["LOCAL_INSTANCE_ROOT"] = str(workdir / "instances")
        command = [
            *(sys.executable, "-m", "bench.probe", "--child", "engine"),
            *("--set-size", str(args.set_size), "--concurrency", str(args.concurrency)),
        ]
        if args.keep_logs:
            command.append("--keep-logs")
        migrate(env)
        return _run(command, env)


# --- printing ------------------------------------------------------------------------------------


def _probe_lines(r: dict[str, Any]) -> str:
    if not r.get("ok") and "cases" not in r:
        return f"probes  FAILED\n{r.get('error', '')}"
    lines = [
        f"probes  {r['instances']} programs started in {r['start_seconds']:.2f} s, all answering after "
        f"{r['answering_seconds']:.2f} s ({r['restarts']} restarted on another port); "
        f"probe_all concurrency {r['concurrency']}, time-out {r['timeout_seconds']:g} s"
    ]
    for case in r["cases"]:
        for n, round_ in enumerate(case["rounds"], start=1):
            answers = ", ".join(f"{count} {what}" for what, count in sorted(round_["answers"].items()))
            lines.append(
                f"probes  {case['name']:18} round {n}: {round_['seconds']:6.3f} s  "
                f"{round_['per_second']:8.0f} instances/s  CPU {round_['cpu_seconds']:.3f} s  ({answers})"
                + ("  (a full garbage collection fell in it)" if round_["full_collections"] else "")
            )
    if not r.get("ok"):
        lines.append(f"probes  FAILED: {r.get('error', '')}")
    return "\n".join(lines)


def _engine_line(r: dict[str, Any]) -> str:
    head = f"engine  {r['database']:8} {r['size']:>4} instances #{r['repeat']}"
    if "wall_seconds" not in r:
        return f"{head}  FAILED\n{r.get('error', '')}"
    text = (
        f"{head}  wall {r['wall_seconds']:7.3f} s  ideal {r['ideal_seconds']:6.2f} s  ratio {r['ratio']:.3f}"
        f"  {r['batch_count']} batches, interval {r['interval_seconds']:g} s  set healthy after "
        f"{r['boot_seconds']:.1f} s  (load {r['load']})"
    )
    if not r.get("ok"):
        text += f"\n    FAILED: {r.get('error', '')}"
    text += "\n" + "\n".join(
        f"    batch {b['index']}: gap {b['gap']:6.3f}  upgrade {b['upgrade']:6.3f}  health {b['health']:6.3f}"
        for b in r.get("batches", [])
    )
    return text


def _summary(report: dict[str, Any], args: argparse.Namespace) -> str:
    lines = []
    probes = report["probes"]
    if probes is not None:
        lines.append(
            f"probe rounds over {args.instances} instance programs, {args.rounds} rounds per case "
            "(instances/s median (min-max); slowest round)"
        )
        for case in probes.get("cases", []):
            rounds = case["rounds"]
            lines.append(
                f"  {case['name']:18} {spread([x['per_second'] for x in rounds], '.0f'):>20} instances/s  "
                f"slowest round {max(x['seconds'] for x in rounds):.3f} s  "
                f"CPU per round {spread([x['cpu_seconds'] for x in rounds], '.3f')} s"
            )
        if not probes.get("ok"):
            lines.append("  FAILED")
    engine = report["engine"]
    if engine:
        good = [r for r in engine if r.get("ok")]
        lines.append(
            f"engine on a local-process set of {args.set_size} instances, 20 % batches, {args.database}, "
            f"TIME_SCALE {args.time_scale:g}, worker --concurrency {args.concurrency}: "
            f"{len(good)} of {len(engine)} runs ok"
        )
        if good:
            batches = [b for r in good for b in r["batches"]]
            lines.append(
                f"  wall s {spread([r['wall_seconds'] for r in good], '.3f')}  "
                f"ideal s {spread([r['ideal_seconds'] for r in good], '.2f')}  "
                f"ratio {spread([r['ratio'] for r in good], '.3f')}"
            )
            lines.append(
                f"  per batch: upgrade s {spread([b['upgrade'] for b in batches], '.3f')}  "
                f"health s {spread([b['health'] for b in batches], '.3f')}  "
                f"gap s {spread([b['gap'] for b in batches], '.3f')}"
            )
    return "\n".join(lines)


# --- children --------------------------------------------------------------------------------------


def _django_setup() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


def _app_key(version: str) -> str:
    from fleet.images import ImageRef
    from fleet.models import ImageSource

    return ImageRef(ImageSource.PLATFORM, "/".join(APP.values()), version).key


# --- part 1: probe throughput ------------------------------------------------------------------------


class _Programs:
    """The instance programs of part 1, each in a directory of its own under `root` (OS
    directory `os/`, data directory `data/`, stderr in `process.log`), in a session of its own
    so a stop reaches the whole program."""

    def __init__(self, build: Any, root: Path) -> None:
        self.build = build
        self.root = root
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.attempts: Counter[str] = Counter()

    def start(self, name: str) -> None:
        from fleet.drivers.local import images

        if self.attempts[name] >= START_ATTEMPTS:
            raise SystemExit(f"{name} did not start in {START_ATTEMPTS} attempts:\n{self.log_tail(name)}")
        self.attempts[name] += 1
        directory = self.root / name
        images.install_os_disk(self.build, directory / "os")  # made once: a restart reuses it
        port = _free_port()
        with (directory / "process.log").open("ab") as stderr:
            self.children[name] = subprocess.Popen(
                [
                    *(sys.executable, str(directory / "os" / "program.py")),
                    *("--port", str(port), "--protocol", "http"),
                    *("--data-dir", str(directory / "data"), "--name", name),
                ],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.ports[name] = port

    def targets(self, spec: Any, names: Sequence[str] | None = None) -> list[tuple[str, int, Any]]:
        return [(name, self.ports[name], spec) for name in (names if names is not None else self.children)]

    def wait_until_answering(self, spec: Any, timeout: float) -> None:
        """Probe every program until each answers Healthy; one that exited (its port was
        taken meanwhile) is started again on another port."""
        from fleet.drivers.local.probe import probe_all
        from fleet.models import HealthState

        deadline = time.monotonic() + timeout
        waiting = list(self.children)
        while waiting:
            answers = probe_all(self.targets(spec, waiting))
            waiting = [name for name in waiting if answers[name].state != HealthState.HEALTHY]
            for name in waiting:
                if self.children[name].poll() is not None:
                    self.start(name)
            if waiting:
                if time.monotonic() > deadline:
                    name = waiting[0]
                    raise SystemExit(
                        f"{len(waiting)} programs not answering after {timeout:.0f} s, e.g. {name}: "
                        f"{answers[name].detail}\n{self.log_tail(name)}"
                    )
                time.sleep(0.2)  # starting programs: look again shortly

    def stop(self, names: Sequence[str]) -> None:
        """SIGTERM, wait for the exit (with a deadline), SIGKILL what is left."""
        for name in names:
            _signal_session(self.children[name], signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for name in names:
            try:
                self.children[name].wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_session(self.children[name], signal.SIGKILL)
                self.children[name].wait()

    def stop_all(self) -> None:
        self.stop([name for name, child in self.children.items() if child.poll() is None])

    def log_tail(self, name: str) -> str:
        log = self.root / name / "process.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _signal_session(child: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _probes_child(args: argparse.Namespace) -> int:
    _django_setup()
    from django.conf import settings

    from fleet.drivers.local import images
    from fleet.drivers.local.probe import ProbeSpec

    spec = ProbeSpec(protocol="http", request_path="/health", interval_seconds=5.0, number_of_probes=1)
    build = images.build(_app_key(OLD_APP_VERSION), behaviour="healthy")
    programs = _Programs(build, Path(settings.LOCAL_INSTANCE_ROOT))
    names = [f"instance-{n:04d}" for n in range(args.instances)]
    try:
        started = time.monotonic()
        for name in names:
            programs.start(name)
        start_seconds = time.monotonic() - started
        programs.wait_until_answering(spec, timeout=60 + 0.5 * args.instances)
        answering_seconds = time.monotonic() - started
        everyone = _timed_rounds(programs.targets(spec), args.rounds)
        count = max(1, round(len(names) * STOPPED_SHARE))
        stopped = [names[i * len(names) // count] for i in range(count)]  # spread over the ports
        programs.stop(stopped)
        with_refused = _timed_rounds(programs.targets(spec), args.rounds)
    finally:
        programs.stop_all()
    cases = [
        {"name": "all answering", "stopped": 0, "rounds": everyone},
        {"name": f"{len(stopped)} stopped", "stopped": len(stopped), "rounds": with_refused},
    ]
    problems = [
        f"{case['name']} round {n}: {round_['answers']}"
        for case in cases
        for n, round_ in enumerate(case["rounds"], start=1)
        if round_["answers"] != _expected_answers(len(names), case["stopped"])
    ]
    result = {
        "ok": not problems,
        "error": "; ".join(problems),
        "instances": len(names),
        "start_seconds": start_seconds,
        "answering_seconds": answering_seconds,
        "restarts": sum(programs.attempts.values()) - len(names),
        "concurrency": 256,  # probe_all's default, as the driver's probe round uses it
        "timeout_seconds": spec.timeout_seconds,
        "cases": cases,
    }
    print(json.dumps(result))
    return 0


def _expected_answers(instances: int, stopped: int) -> dict[str, int]:
    expected = {"Healthy": instances - stopped, "refused": stopped}
    return {what: count for what, count in expected.items() if count}


def _timed_rounds(targets: list[tuple[str, int, Any]], rounds: int) -> list[dict[str, Any]]:
    """`rounds` calls of probe_all over every target: wall and CPU seconds of each, the full
    garbage collections that fell in it, and what the probes heard (Healthy, refused, or
    anything else by its detail)."""
    from fleet.drivers.local.probe import probe_all

    figures = []
    for _ in range(rounds):
        full_collections = gc.get_stats()[2]["collections"]
        cpu, wall = time.process_time(), time.perf_counter()
        answers = probe_all(targets)
        seconds = time.perf_counter() - wall
        heard = Counter(
            "Healthy" if a.state == "Healthy" else "refused" if a.detail == "connection refused" else a.detail
            for a in answers.values()
        )
        figures.append(
            {
                "seconds": seconds,
                "per_second": len(targets) / seconds,
                "cpu_seconds": time.process_time() - cpu,
                "full_collections": gc.get_stats()[2]["collections"] - full_collections,
                "answers": dict(heard),
            }
        )
    return figures


# --- part 2: the engine on a set of real processes ---------------------------------------------------


def _engine_child(args: argparse.Namespace) -> int:
    _django_setup()
    from fleet.drivers.local import driver as local

    scale_set = _build_local_set(args.set_size)
    processes = Processes(keep_logs=args.keep_logs)
    try:
        processes.start(concurrency=args.concurrency)
        boot_seconds = _wait_until_healthy(scale_set, processes, timeout=120 + 2.0 * args.set_size)
        _publish(NEW_APP_VERSION, days_ago=0)
        result = _time_the_upgrade(scale_set, processes)
        result["boot_seconds"] = boot_seconds
    finally:
        processes.stop()  # first: a worker must not start what is being stopped
        local.stop_all()
        local.stop_processes(local.orphan_processes())
    print(json.dumps(result))
    return 0


def _publish(version: str, *, days_ago: float) -> None:
    import datetime as dt

    from fleet import clock, services
    from fleet.models import Region

    services.platform_image_publish(
        publisher=APP["image_publisher"],
        offer=APP["image_offer"],
        sku=APP["image_sku"],
        version=version,
        regions=[Region.objects.get(name="eastus")],
        at=clock.now() - dt.timedelta(days=days_ago),
    )


def _build_local_set(capacity: int) -> Any:
    """Both app versions built in the image store, 1.0.0 published a day ago, and a
    local-process set on "latest" (so 1.0.0 until 1.1.0 is published)."""
    from fleet import services
    from fleet.drivers.local import images
    from fleet.models import Region

    for version in (OLD_APP_VERSION, NEW_APP_VERSION):
        images.build(_app_key(version), behaviour="healthy")
    Region.objects.get_or_create(name="eastus", defaults={"display_name": "East US", "zones": []})
    _publish(OLD_APP_VERSION, days_ago=1)
    return services.scale_set_create(
        subscription_id="11111111-1111-1111-1111-111111111111",
        resource_group="rg-bench",
        name="bench-local",
        region=Region.objects.get(name="eastus"),
        capacity=capacity,
        extensions=[APP_HEALTH],
        driver="local",
        zones=[],
        single_placement_group=capacity <= 100,
        max_batch_instance_percent=20,
        image_source="platform",
        image_version="latest",
        **APP,
    )


def _wait_until_healthy(scale_set: Any, processes: Processes, timeout: float) -> float:
    """Seconds until every instance is Healthy, running, with no step pending and a live
    process (the beat starts a new set's processes)."""
    from fleet.drivers.local import driver as local
    from fleet.models import HealthState, PowerState

    started = time.monotonic()
    deadline = started + timeout
    while True:
        rows = list(scale_set.instances.select_related("process", "scale_set"))
        healthy = [
            row
            for row in rows
            if row.health_state == HealthState.HEALTHY
            and row.power_state == PowerState.RUNNING
            and row.driver_due_at is None
            and (process := getattr(row, "process", None)) is not None
            and process.pid
            and local.process_alive(process.pid, local.instance_directory(row))
        ]
        if len(healthy) == len(rows):
            return time.monotonic() - started
        if time.monotonic() > deadline or not processes.alive():
            raise SystemExit(
                f"{len(rows) - len(healthy)} of {len(rows)} instances not healthy after {timeout:.0f} s\n"
                f"{processes.log_tail()}"
            )
        time.sleep(0.1)  # the benchmark's own poll, before the clock starts


def _time_the_upgrade(scale_set: Any, processes: Processes) -> dict[str, Any]:
    from django.conf import settings
    from django.utils import timezone

    from fleet.drivers.local import driver as local
    from upgrades import services
    from upgrades.models import TERMINAL, RunStatus, UpgradeRun

    started = timezone.now()
    run = services.os_upgrade_now(scale_set=scale_set)
    deadline = time.monotonic() + 300 + 10 * scale_set.capacity
    while UpgradeRun.objects.filter(pk=run.pk).exclude(status__in=TERMINAL).exists():
        if time.monotonic() > deadline or not processes.alive():
            raise SystemExit(f"run {run.pk} did not end\n{processes.log_tail()}")
        time.sleep(0.05)  # the benchmark's own poll; the wall time comes from the run's ended_at
    run.refresh_from_db()
    spec = local.probe_spec(scale_set, list(scale_set.extensions.all()))
    if spec is None:
        raise SystemExit("the set has no health source: the benchmark's set is built with one")
    pause = run.policy_snapshot.pause_seconds / settings.TIME_SCALE
    ideal = run.batch_count * (spec.interval_seconds * spec.number_of_probes + pause)
    wall = (run.ended_at - started).total_seconds()
    wrong = _wrong_versions(scale_set)
    problems = []
    if run.status != RunStatus.COMPLETED or run.successful_count != scale_set.capacity:
        problems.append(f"run {run.status}, {run.successful_count} of {scale_set.capacity} upgraded")
    if run.error_message:
        problems.append(run.error_message)
    if wrong:
        problems.append(f"{len(wrong)} instances not on {NEW_APP_VERSION}, e.g. " + "; ".join(wrong[:3]))
    return {
        "ok": not problems,
        "error": "; ".join(problems),
        "status": run.status,
        "batch_count": run.batch_count,
        "interval_seconds": spec.interval_seconds,
        "number_of_probes": spec.number_of_probes,
        "pause_seconds": pause,
        "wall_seconds": wall,
        "ideal_seconds": ideal,
        "ratio": wall / ideal if ideal else None,
        "batches": _batch_figures(run, started),
    }


def _wrong_versions(scale_set: Any) -> list[str]:
    """Instances whose process, asked over its own port, does not say it runs the new version
    (or is not the process the row names)."""
    import urllib.request

    wrong = []
    for row in scale_set.instances.select_related("process").order_by("instance_id"):
        process = getattr(row, "process", None)
        if process is None or not process.port:
            wrong.append(f"{row.name}: no process")
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{process.port}/version", timeout=5) as answer:
                said = json.load(answer)
        except (OSError, ValueError) as error:
            wrong.append(f"{row.name}: no answer on port {process.port} ({error})")
            continue
        if said.get("version") != NEW_APP_VERSION or said.get("pid") != process.pid:
            wrong.append(f"{row.name}: pid {said.get('pid')} says {said.get('version')!r} (row: pid {process.pid})")
    return wrong


def _batch_figures(run: Any, started: Any) -> list[dict[str, Any]]:
    """Per batch, as bench.engine prints them: gap (previous batch's end, or the clock's start,
    to this batch's start), upgrade (start to every instance upgraded) and health (to the
    batch's verdict)."""
    figures = []
    previous_end = started
    for batch in run.batches.order_by("index"):
        if batch.started_at is None or batch.upgraded_at is None or batch.ended_at is None:
            continue  # a batch the run never finished (a FAILED run shows as such)
        figures.append(
            {
                "index": batch.index,
                "size": batch.size,
                "gap": (batch.started_at - previous_end).total_seconds(),
                "upgrade": (batch.upgraded_at - batch.started_at).total_seconds(),
                "health": (batch.ended_at - batch.upgraded_at).total_seconds(),
            }
        )
        previous_end = batch.ended_at
    return figures


if __name__ == "__main__":
    sys.exit(main())
