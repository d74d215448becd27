"""End-to-end browser tests: the real console (daphne, a Celery worker, Celery beat) on a
database of its own, driven by Debian's Chromium through Playwright's sync API.

How it is wired, and why:

* pytest-django is loaded for the whole suite and has already configured Django in this
  process (from the environment as it was: without DATABASE_URL that is the developer's
  var/console.sqlite3). So this process never touches a database through Django; pytest-django
  blocks that anyway. Everything that reads or writes the fleet runs in a subprocess started
  with the same environment as the server (`ConsoleServer.django`), the way a second
  operator or a management command would: a change made there reaches the page only through
  the real path (service → commit → Redis channel layer → WebSocket).
* The database is made here, not by pytest-django: a fresh SQLite file in a temporary
  directory, or, when DATABASE_URL names PostgreSQL, a fresh database `<name>_browser_<pid>`
  next to it (dropped at the end). `manage.py migrate` builds the schema.
* Redis is not ours: REDIS_URL must be set (`make browser` runs pytest under
  `python -m config.embedded_redis`, which sets it; CI sets a real one).
* Readiness is polled with deadlines (the login page answers 200, the worker answers a
  ping); every process is stopped (terminate, then kill) even when a test fails, and a
  failed test's report carries the tail of each process's log and the browser console.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIME_SCALE = "1000"  # a simulated 10 s stop takes 10 ms; beat applies due steps each second
START_TIMEOUT = 60.0
LOG_TAIL = 4000  # characters of each process log shown with a failure


# --- the database ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database for this run: SQLite in a temporary directory by default,
    or a new PostgreSQL database beside the one DATABASE_URL names."""
    configured = os.environ.get("DATABASE_URL", "")
    if not configured:
        path = tmp_path_factory.mktemp("db") / "console.sqlite3"
        yield f"sqlite:///{path}"  # sqlite:// + an absolute path = four slashes
        return
    if not configured.startswith(("postgres://", "postgresql://")):
        pytest.fail(
            f"Browser tests run on SQLite (DATABASE_URL unset) or PostgreSQL, not {configured!r}.", pytrace=False
        )
    import psycopg

    parts = urlsplit(configured)
    name = f"{parts.path.lstrip('/') or 'postgres'}_browser_{os.getpid()}"
    with psycopg.connect(configured, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(configured, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the console's processes ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-LOG_TAIL:] or "(empty)"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class ConsoleServer:
    """The running console: its address, its environment and its processes."""

    base_url: str
    env: dict[str, str]
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=BASE_DIR,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals only; stopped by pid in stop_all
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):  # web first, then beat, then worker
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} (exit code {p.popen.poll()}) -----\n{p.tail()}" for p in self.processes)

    def django(self, code: str, timeout: float = 120) -> Any:
        """Run `code` in a fresh Django process on the console's database and Redis; the
        code leaves its answer in `result` (anything JSON can carry)."""
        script = "import json, django\ndjango.setup()\nresult = None\n"
        script += textwrap.dedent(code)
        script += "\nprint('\\nRESULT ' + json.dumps(result))\n"
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"Django subprocess failed ({done.returncode}):\n{code}\n--- stderr ---\n{done.stderr[-LOG_TAIL:]}"
            )
        answer = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        return json.loads(answer[-1].removeprefix("RESULT "))

    def manage(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def wait_until_ready(self) -> None:
        """Poll until the login page answers 200 and the worker answers a ping."""
        deadline = time.monotonic() + START_TIMEOUT
        checks = {"web": self._web_answers, "worker": self._worker_answers}
        while checks:
            for process in self.processes:
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{process.name} exited early.\n{self.logs()}")
            for name, check in list(checks.items()):
                if check():
                    del checks[name]
            if checks and time.monotonic() > deadline:
                raise RuntimeError(f"Not ready in {START_TIMEOUT:.0f}s: {', '.join(checks)}.\n{self.logs()}")
            if checks:
                time.sleep(0.2)  # the poll interval of a readiness loop, not a stand-in for it

    def _web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/login/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _worker_answers(self) -> bool:
        # `inspect ping` names this run's worker only: the broker may be shared (CI's Redis).
        done = subprocess.run(
            [
                sys.executable,
                *("-m", "celery", "-A", "config", "inspect", "ping", "--timeout", "2"),
                *("--destination", self.env["BROWSER_WORKER_NAME"]),
            ],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
        )
        return done.returncode == 0 and "pong" in done.stdout


@pytest.fixture(scope="session")
def console(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """The whole console, started once for the session on its own database, with a
    12-instance scale set `web` and an operator `op` (password in `console.data`)."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.fail(
            "REDIS_URL is not set. Run the browser tests under an embedded Redis:\n"
            "  python -m config.embedded_redis -- python -m pytest tests/browser   (or: make browser)",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("console")
    port = _free_port()
    worker_name = f"browser-{os.getpid()}@{socket.gethostname()}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TIME_SCALE": TIME_SCALE,
        "SECURE_COOKIES": "false",  # plain HTTP on 127.0.0.1
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "BROWSER_WORKER_NAME": worker_name,
        "PYTHONUNBUFFERED": "1",
    }
    server = ConsoleServer(base_url=f"http://127.0.0.1:{port}", env=env, workdir=workdir)
    server.manage("migrate", "--noinput")
    password = secrets.token_urlsafe(12)
    server.data = server.django(
        f"""
        from django.contrib.auth.models import Group, User
        from fleet.roles import OPERATORS
        from tests import factories

        scale_set = factories.scale_set("web", capacity=12)
        operator = User.objects.create_user(username="op", password={password!r})
        operator.groups.add(Group.objects.get(name=OPERATORS))
        result = {{"scale_set_id": scale_set.pk, "username": "op", "password": {password!r}}}
        """
    )
    try:
        server.start(
            "worker",
            *("-m", "celery", "-A", "config", "worker", "--pool", "solo", "--loglevel", "WARNING"),
            *("--hostname", worker_name),
        )
        server.start(
            "beat",
            *("-m", "celery", "-A", "config", "beat", "--loglevel", "WARNING"),
            *("--schedule", str(workdir / "beat-schedule")),
        )
        server.start("web", "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application")
        server.wait_until_ready()
        yield server
    finally:
        server.stop_all()


# --- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: sudo apt-get install chromium (or: make chromium).", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; its console is kept for the report."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    lines: list[str] = []
    new_page.on("console", lambda message: lines.append(f"console.{message.type}: {message.text}"))
    new_page.on("pageerror", lambda error: lines.append(f"page error: {error}"))
    request.node.browser_console = lines
    try:
        yield new_page
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report shows what each process and the browser said."""
    report = yield
    if report.failed:
        server = getattr(item, "funcargs", {}).get("console")
        if isinstance(server, ConsoleServer):
            report.sections.append(("console processes", server.logs()))
        lines = getattr(item, "browser_console", None)
        if lines:
            report.sections.append(("browser console", "\n".join(lines[-100:])))
    return report
