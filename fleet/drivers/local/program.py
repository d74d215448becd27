"""The program an image runs: one scale-set instance, a small server on a port of its own.

    python <os-dir>/program.py --port P --protocol http|https|tcp --data-dir D --name N

It reads `image.json` beside itself (the image it was installed from) and behaves as the
image says (see BEHAVIOURS in images.py): a health endpoint answering as the Application
Health extension expects (R-H-2), or no listener at all. `GET /version` says what it runs,
whatever its health. Each start appends a line to `<data-dir>/boots.log`: the data directory
survives reimages, so the file is the instance's history.

Standard library only and few imports: a fleet starts this hundreds of times. Nothing goes to
stdout once it runs; errors go to stderr. SIGTERM stops it at once, even while it boots.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys

HEALTHY: dict[str, object] = {"ApplicationHealthState": "Healthy"}
UNHEALTHY: dict[str, object] = {"ApplicationHealthState": "Unhealthy"}
BEHAVIOURS = ("healthy", "slow", "unhealthy", "error", "refuses")  # as images.BEHAVIOURS
REQUEST_TIMEOUT = 5.0  # a client that sends nothing (a TCP probe holding on) is let go
MAX_REQUEST_HEAD = 16 * 1024
STOP_REQUESTED: list[int] = []  # signals received before the event loop handles them
REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 500: "Internal Server Error"}


def main(argv: list[str] | None = None) -> int:
    # A SIGTERM before the event loop takes signals over is remembered, not a kill: the loop
    # then stops at once, and the exit is as clean as a later one.
    signal.signal(signal.SIGTERM, _remember_stop)
    parser = argparse.ArgumentParser(description="A local-process scale-set instance.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=["http", "https", "tcp"], required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--name", required=True)
    options = parser.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        with open(os.path.join(here, "image.json"), encoding="utf-8") as file:
            image = json.load(file)
        behaviour = str(image["behaviour"])
        boot_seconds = float(image.get("boot_seconds", 0.0))
    except (OSError, ValueError, KeyError) as error:
        print(f"program: cannot read the image beside the program ({here}): {error}", file=sys.stderr)
        return 2
    if behaviour not in BEHAVIOURS:
        print(f"program: the image's behaviour {behaviour!r} is not one this program knows", file=sys.stderr)
        return 2
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    try:
        os.makedirs(options.data_dir, exist_ok=True)
        with open(os.path.join(options.data_dir, "boots.log"), "a", encoding="utf-8") as log:
            log.write(f"{started_at}\t{options.name}\t{image.get('version', '')}\t{os.getpid()}\n")
    except OSError as error:
        print(f"program: cannot write boots.log in {options.data_dir}: {error}", file=sys.stderr)
        return 2
    version = {
        "version": image.get("version", ""),
        "image": image.get("key", ""),
        "name": options.name,
        "pid": os.getpid(),
        "started_at": started_at,
        "behaviour": behaviour,
    }
    instance = Instance(behaviour, boot_seconds, options.protocol, version)
    try:
        return asyncio.run(instance.run(options.port, here))
    except OSError as error:  # the port is taken, the certificate unreadable
        print(f"program: {options.name} cannot listen on 127.0.0.1:{options.port}: {error}", file=sys.stderr)
        return 1


class Instance:
    def __init__(self, behaviour: str, boot_seconds: float, protocol: str, version: dict[str, object]) -> None:
        self.behaviour = behaviour
        self.boot_seconds = boot_seconds
        self.protocol = protocol
        self.version = version

    async def run(self, port: int, here: str) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if STOP_REQUESTED:  # checked after the loop took over, so no signal falls between
            stop.set()
        loop.set_exception_handler(_quiet_about_clients)
        if self.behaviour == "refuses":
            await stop.wait()  # runs, never listens: every connection is refused
            return 0
        if self.behaviour == "slow" and self.boot_seconds > 0:
            try:
                # Booting: not listening yet, but a SIGTERM still ends it at once.
                await asyncio.wait_for(stop.wait(), self.boot_seconds)
                return 0
            except TimeoutError:
                pass
        if self.protocol == "https":
            import ssl

            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(os.path.join(here, "cert.pem"), os.path.join(here, "key.pem"))
            server = await asyncio.start_server(
                self.serve, "127.0.0.1", port, reuse_address=True, ssl=tls, ssl_handshake_timeout=REQUEST_TIMEOUT
            )
        else:
            server = await asyncio.start_server(self.serve, "127.0.0.1", port, reuse_address=True)
        await stop.wait()
        # Not wait_closed(): it would wait for open connections; asyncio.run cancels them.
        server.close()
        return 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (Connection: close). Over tcp a probe just connects and
        hangs up; one that speaks HTTP gets the same answers as over http."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            await self.close(writer)
            return
        status, body = self.answer(head[:MAX_REQUEST_HEAD])
        if status == 0:  # not HTTP: over tcp that is fine, the connection was the probe
            await self.close(writer)
            return
        payload = json.dumps(body).encode()
        method = head.split(b" ", 1)[0]
        writer.write(
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
            + (b"" if method == b"HEAD" else payload)
        )
        await self.close(writer)

    def answer(self, head: bytes) -> tuple[int, dict[str, object]]:
        """(status, JSON body) for a request head; status 0 when it is not HTTP at all."""
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return (0, {}) if self.protocol == "tcp" else (400, {"error": "not an HTTP request"})
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method} is not answered here: use GET"}
        if target.split("?", 1)[0] == "/version":
            return 200, self.version
        if self.behaviour == "unhealthy":
            return 200, UNHEALTHY
        if self.behaviour == "error":
            return 500, {"error": "the application failed"}
        return 200, HEALTHY

    @staticmethod
    async def close(writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()


def _remember_stop(signum: int, frame: object) -> None:
    STOP_REQUESTED.append(signum)


def _quiet_about_clients(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """A client that hangs up mid-handshake or mid-request is the client's business (probes
    do it all the time): only the program's own errors reach stderr."""
    error = context.get("exception")
    if isinstance(error, ConnectionError | TimeoutError) or type(error).__name__.startswith("SSL"):
        return
    loop.default_exception_handler(context)


if __name__ == "__main__":
    sys.exit(main())
