"""`make run`: the whole console on one machine, stopped cleanly by one Ctrl-C.

Starts the embedded Redis (unless REDIS_URL is set), a Celery worker, Celery beat and the
ASGI server (daphne: HTTP and WebSockets), each in its own session so that Ctrl-C reaches
only this supervisor, which then stops them in order and waits for each. If any of them
dies, the rest are stopped too: a half-running console would only mislead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from config.embedded_redis import EmbeddedRedis, default_socket_path

BASE_DIR = Path(__file__).resolve().parent.parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def main() -> int:
    if not _port_free(HOST, PORT):
        print(f"Port {PORT} on {HOST} is in use: stop what runs there, or run with PORT=8001.", file=sys.stderr)
        return 1
    python = sys.executable
    (BASE_DIR / "var").mkdir(exist_ok=True)  # beat's schedule file (and the embedded Redis) live here
    redis_server = None
    if not os.environ.get("REDIS_URL"):
        redis_server = EmbeddedRedis(default_socket_path())
        try:
            redis_server.start()
        except RuntimeError as error:
            print(f"Could not start the embedded Redis: {error}", file=sys.stderr)
            return 1
    commands = {
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel",
            os.environ.get("WORKER_LOG_LEVEL", "WARNING"),
            "--concurrency",
            os.environ.get("WORKER_CONCURRENCY", "2"),
            "--hostname",
            "worker1@%h",
        ],
        "beat": [
            python,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel",
            "WARNING",
            "--schedule",
            str(BASE_DIR / "var" / "celerybeat-schedule"),
        ],
        "web": [python, "-m", "daphne", "-b", HOST, "-p", str(PORT), "config.asgi:application"],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False
    # Instances of local-process sets that ran when the console last stopped start again.
    _local_processes("resume")

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    try:
        for name, command in commands.items():
            # The web server gives each request in flight its own thread, and so its own
            # database connection: kept open, they would pile up (docs/DEPLOYMENT.md).
            env = {**os.environ, "DATABASE_CONN_MAX_AGE": os.environ.get("DATABASE_CONN_MAX_AGE", "0")}
            children[name] = subprocess.Popen(
                command, cwd=BASE_DIR, start_new_session=True, env=env if name == "web" else None
            )
        _announce()
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"\n{name} exited with code {child.returncode}; stopping the console.", file=sys.stderr)
                    exit_code = 1
                    stopping = True
            time.sleep(0.5)  # the supervisor's own poll; no engine work happens here
    finally:
        print("\nStopping: web, beat, worker, redis …")
        for name in ("web", "beat", "worker"):
            process = children.get(name)
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        _local_processes("stop")
        if redis_server:
            redis_server.stop()
        print("Stopped.")
    return exit_code


def _local_processes(action: str) -> None:
    """The local-process sets' instances are processes of their own (sessions of their own,
    so a worker restart keeps them): the console resumes them on start, stops them on exit."""
    done = subprocess.run([sys.executable, "manage.py", "local_processes", action], cwd=BASE_DIR)
    if done.returncode != 0:
        print(f"Could not {action} the local-process instances (exit {done.returncode}).", file=sys.stderr)


def _announce() -> None:
    from fleet.roles import DEMO_USERS as USERS

    scale = os.environ.get("TIME_SCALE", "1")
    logins = ", ".join(f"{user} / {password} ({role})" for user, password, role in USERS)
    print(
        "\n"
        f"  VMSS Upgrade Console: http://{HOST}:{PORT}/\n"
        f"  Logins: {logins}\n"
        f"  Time runs {scale}x faster than real time (TIME_SCALE={scale}).\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
