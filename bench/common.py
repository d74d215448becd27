"""What the benchmarks share: throwaway databases, an embedded Redis, a real Celery worker and
beat on a queue of their own, the images and extensions the benchmark fleets are built with,
and the median (min–max) summary of repeated figures."""

from __future__ import annotations

import datetime as dt
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def redis_for_benchmark() -> Iterator[str]:
    """REDIS_URL when set; otherwise an embedded redis-server of our own for the duration
    (its URL is put in REDIS_URL so the children inherit it)."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from config.embedded_redis import EmbeddedRedis

    directory = Path(tempfile.mkdtemp(prefix="vmss-bench-redis-"))
    server = EmbeddedRedis(directory / "redis.sock")
    server.start()
    os.environ["REDIS_URL"] = server.url
    try:
        yield server.url
    finally:
        server.stop()
        os.environ.pop("REDIS_URL", None)
        shutil.rmtree(directory, ignore_errors=True)


def postgres_database(admin_url: str, prefix: str = "bench_engine") -> tuple[str, Callable[[], None]]:
    """A new empty database on the server of `admin_url`, and a function that drops it."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


@contextmanager
def throwaway_database(database: str, postgres_url: str, *, prefix: str = "bench_engine") -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file in a temporary directory, or a
    PostgreSQL database created on `postgres_url`'s server; removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="vmss-bench-"))
    dropper = None
    try:
        if database == "sqlite":
            yield f"sqlite:///{workdir / 'bench.sqlite3'}"
        else:
            url, dropper = postgres_database(postgres_url, prefix)
            yield url
    finally:
        if dropper is not None:
            dropper()
        shutil.rmtree(workdir, ignore_errors=True)


def migrate(env: dict[str, str]) -> None:
    """Migrate the database of env's DATABASE_URL, in a subprocess with that environment."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True)


def child_environment(
    database_url: str, *, queue: str, time_scale: float, beat_interval: float | None, poll: float | None
) -> dict[str, str]:
    """The environment of a measured child: its own database and queue, quiet logs, and the
    beat interval and engine poll when given (otherwise the settings' defaults)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_DEFAULT_QUEUE": f"{queue}-{uuid.uuid4().hex[:8]}",
        "TIME_SCALE": str(time_scale),
        "LOG_LEVEL": "WARNING",
    }
    if beat_interval is not None:
        env["BEAT_INTERVAL_SECONDS"] = str(beat_interval)
    if poll is not None:
        env["ENGINE_POLL_SECONDS"] = str(poll)
    return env


def run_child(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Migrate env's database, run a benchmark's child there and return the JSON it printed
    last, or {"ok": False, "error": …} with the end of its output."""
    migrate(env)
    done = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"ok": False, "error": (done.stdout + done.stderr)[-3000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def load_average() -> str:
    """The machine's load average (1, 5, 15 min): the figures are only as quiet as the machine."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def publish_image(region: Any, version: str, at: dt.datetime | None = None) -> None:
    """Publish a version of the benchmarks' Ubuntu platform image in `region`."""
    from fleet import services

    services.platform_image_publish(
        publisher=UBUNTU["image_publisher"],
        offer=UBUNTU["image_offer"],
        sku=UBUNTU["image_sku"],
        version=version,
        regions=[region],
        at=at,
    )


def spread(values: Sequence[float], fmt: str) -> str:
    """'median (min-max)' of repeated figures."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


class Processes:
    """Celery workers and a beat for one measured run only (own queue, from
    CELERY_DEFAULT_QUEUE), stopped by process group."""

    def __init__(self, *, keep_logs: bool) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="vmss-bench-logs-"))
        self.keep_logs = keep_logs
        self.queue = os.environ["CELERY_DEFAULT_QUEUE"]
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, *, concurrency: int, workers: int = 1) -> None:
        """`workers` worker processes (Celery nodes) of `concurrency` pool processes each."""
        celery = [sys.executable, "-m", "celery", "-A", "config"]
        hostnames = []
        for n in range(1, workers + 1):
            hostname = f"bench{n}-{self.queue}@%h"
            hostnames.append(hostname.replace("%h", _hostname()))
            self._spawn(
                f"worker{n}",
                celery
                + ["worker", "--loglevel", "WARNING", "--pool", "prefork", "--concurrency", str(concurrency)]
                + ["--hostname", hostname, "--queues", self.queue, "--without-gossip", "--without-mingle"],
            )
        self._spawn("beat", celery + ["beat", "--loglevel", "INFO", "--schedule", str(self.logs / "beat-schedule")])
        self._wait_until_ready(hostnames, pool_processes=workers * concurrency)

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        self.children.append(
            subprocess.Popen(command, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _wait_until_ready(self, hostnames: list[str], *, pool_processes: int, timeout: float = 90) -> None:
        """Every worker answers a ping and the beat has sent tasks a few times (the pool
        processes have then had tasks, their database connections open): the run starts warm."""
        from config.celery import app

        deadline = time.monotonic() + timeout
        for hostname in hostnames:
            while not app.control.ping(destination=[hostname], timeout=0.5):
                if time.monotonic() > deadline or not self.alive():
                    raise SystemExit(f"the worker {hostname} did not start\n{self.log_tail()}")
        beat_log = self.logs / "beat.log"
        while beat_log.read_text(errors="replace").count("Sending due task") < 2 * max(2, pool_processes):
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
