"""Real worker and beat processes for end-to-end tests, pointed at the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
WORKER_APPLICATION_NAME = "vmss-test-worker"


def test_database_url() -> str:
    """The URL of the database the current test uses (pytest-django's test database)."""
    settings = connection.settings_dict
    if settings["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or ""
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    # Named, so that a test can drop exactly the workers' connections (tests/faults), never the
    # test process's own.
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}?application_name={WORKER_APPLICATION_NAME}"


class Processes:
    """Starts Celery workers and beat as subprocesses; stops (or kills) them on demand."""

    def __init__(self, **env: str) -> None:
        if not os.environ.get("REDIS_URL"):
            raise RuntimeError("REDIS_URL is not set: run the tests under `python -m config.embedded_redis --`.")
        self.logs = Path(tempfile.mkdtemp(prefix="vmss-e2e-"))
        self.queue = f"test-{uuid.uuid4().hex[:8]}"  # our own queue: no other run's tasks, none of ours lost
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_DEFAULT_QUEUE": self.queue,
            **env,
        }
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start_worker(self, name: str = "worker", *, concurrency: int = 1) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel",
            "WARNING",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}-{self.queue}@%h",
            "--queues",
            self.queue,
            "--without-gossip",
            "--without-mingle",
        ]
        return self._start(name, command)

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        """A beat; two with different names run side by side (each its own schedule file)."""
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel",
            "WARNING",
            "--schedule",
            str(self.logs / f"{name}-schedule"),
        ]
        return self._start(name, command)

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        child = subprocess.Popen(
            command, cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children[name] = child
        return child

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group: the worker and its pool children die mid-line."""
        child = self.children.pop(name)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    def stop_all(self) -> None:
        for name, child in list(self.children.items()):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            del self.children[name]

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, logs: Callable[[], str] = str) -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(0.05)  # a poll interval in the test process, not a wait standing in for sync
