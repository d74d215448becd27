"""The local image store, the instance program as a real process, and build_demo_images.

Programs run as real processes on free loopback ports; every one is killed at the end of its
test. Waiting is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from fleet import clock
from fleet.drivers.local import images
from fleet.drivers.local.images import DEMO_APP, DEMO_RELEASES, DemoRelease
from fleet.models import ImagePublication, PlatformImageVersion
from fleet.selectors import latest_platform_version
from tests import factories, processes

KEY = "platform:Contoso/DemoApp/app:1.1.0"
DEADLINE = 15.0  # seconds: generous, for a machine busy with other work


@pytest.fixture
def store(settings: Any, tmp_path: Path) -> Path:
    settings.LOCAL_IMAGE_STORE = tmp_path / "store"
    return tmp_path / "store"


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = DEADLINE) -> Any:
    """tests.processes.wait_for with this file's deadline."""
    return processes.wait_for(condition, timeout=timeout, what=what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the store -----------------------------------------------------------------------------------


def test_build_writes_the_image_and_find_reads_it_back(store: Path) -> None:
    build = images.build(KEY, behaviour="slow", boot_seconds=2.5)

    assert build == images.ImageBuild(
        key=KEY, version="1.1.0", behaviour="slow", boot_seconds=2.5, path=images.image_dir(KEY)
    )
    assert images.find(KEY) == build
    manifest = json.loads((build.path / "image.json").read_text())
    assert manifest["key"] == KEY
    assert manifest["version"] == "1.1.0"
    assert manifest["behaviour"] == "slow"
    assert manifest["boot_seconds"] == 2.5
    assert dt.datetime.fromisoformat(manifest["built_at"]).tzinfo is not None
    program = Path(images.__file__).with_name("program.py")
    assert (build.path / "program.py").read_bytes() == program.read_bytes()
    assert b"BEGIN CERTIFICATE" in (build.path / "cert.pem").read_bytes()
    assert b"PRIVATE KEY" in (build.path / "key.pem").read_bytes()
    assert images.image_dir(KEY).parent == store


def test_find_is_none_for_an_image_never_built(store: Path) -> None:
    assert images.find(KEY) is None
    assert images.all_builds() == []


def test_all_builds_lists_every_image_by_key_and_skips_leftovers(store: Path) -> None:
    images.build("platform:Contoso/DemoApp/app:1.2.0", behaviour="unhealthy")
    images.build(KEY)
    (store / ".builds" / ".tmp-deadbeef0000").mkdir()

    assert [(b.key, b.behaviour) for b in images.all_builds()] == [
        (KEY, "healthy"),
        ("platform:Contoso/DemoApp/app:1.2.0", "unhealthy"),
    ]


def test_rebuild_replaces_the_image_and_leaves_one_build(store: Path) -> None:
    first = images.build(KEY)
    first_build = first.path.resolve()

    second = images.build(KEY, behaviour="error")

    assert second.path == first.path  # the stable name operators and drivers use
    assert images.find(KEY) == second
    assert second.path.resolve() != first_build
    assert not first_build.exists()
    assert [p.name for p in (store / ".builds").iterdir()] == [second.path.resolve().name]
    assert sorted(p.name for p in store.iterdir()) == [".builds", ".lock", first.path.name]


def test_while_a_rebuild_is_written_the_old_image_is_seen_whole(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images.build(KEY, behaviour="unhealthy")
    seen_during_build: list[images.ImageBuild | None] = []
    write_certificate = images._write_certificate

    def watching(directory: Path) -> None:
        seen_during_build.append(images.find(KEY))
        write_certificate(directory)

    monkeypatch.setattr(images, "_write_certificate", watching)

    images.build(KEY, behaviour="healthy")

    assert [b.behaviour if b else None for b in seen_during_build] == ["unhealthy"]
    found = images.find(KEY)
    assert found is not None
    assert found.behaviour == "healthy"


def test_a_failed_rebuild_keeps_the_previous_image_and_leaves_nothing_behind(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images.build(KEY, behaviour="unhealthy")
    builds_before = sorted((store / ".builds").iterdir())

    def failing(directory: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(images, "_write_certificate", failing)

    with pytest.raises(OSError, match="disk full"):
        images.build(KEY, behaviour="healthy")
    found = images.find(KEY)
    assert found is not None
    assert found.behaviour == "unhealthy"
    assert sorted((store / ".builds").iterdir()) == builds_before


def test_a_build_removes_what_a_crashed_build_left(store: Path) -> None:
    images.build(KEY)
    crashed = store / ".builds" / ".tmp-0123456789ab"
    crashed.mkdir()
    (crashed / "program.py").write_text("half")
    unreferenced = store / ".builds" / f"{images.image_dir(KEY).name}.0123456789ab"
    unreferenced.mkdir()
    swap = store / ".link-0123456789ab"
    swap.symlink_to(unreferenced)

    images.build(KEY, behaviour="error")

    assert not crashed.exists()
    assert not unreferenced.exists()
    assert not swap.is_symlink()
    assert len(list((store / ".builds").iterdir())) == 1


@pytest.mark.parametrize(
    ("behaviour", "boot_seconds", "message"),
    [
        ("sleepy", 0.0, "Unknown behaviour 'sleepy': choose one of healthy, slow, unhealthy, error, refuses"),
        ("slow", -1.0, "The boot time must be a number of seconds, 0 or more"),
        ("slow", float("nan"), "The boot time must be a number of seconds, 0 or more"),
        ("healthy", 5.0, "A boot time applies to the 'slow' behaviour only"),
    ],
)
def test_build_refuses_a_bad_behaviour_or_boot_time(
    store: Path, behaviour: str, boot_seconds: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        images.build(KEY, behaviour=behaviour, boot_seconds=boot_seconds)
    assert images.find(KEY) is None


@pytest.mark.parametrize(
    "key",
    [
        "platform:../../../escaped:1.0.0",
        "../../escaped",
        "..",
        ".",
        "/etc/passwd",
        "custom:https://example.com/images/../../x.vhd",
        "custom:\\..\\..\\x",
        "a" * 500,
        "nul\x00byte",
    ],
)
def test_no_key_names_a_directory_outside_the_store(store: Path, tmp_path: Path, key: str) -> None:
    directory = images.image_dir(key)

    assert directory.parent == store
    assert directory.name not in ("", ".", "..")
    assert not directory.name.startswith(".")
    assert "/" not in directory.name
    assert len(directory.name) <= 80
    build = images.build(key)
    assert build.path.resolve().is_relative_to(store.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # nothing written beside the store
    assert images.find(key) == build


def test_keys_that_read_alike_get_directories_of_their_own(store: Path) -> None:
    one, other = images.build("custom:a/b"), images.build("custom:a_b")

    assert one.path != other.path
    assert images.find("custom:a/b") == one
    assert images.find("custom:a_b") == other


# --- OS directories ------------------------------------------------------------------------------


def test_install_os_disk_copies_the_image_and_leaves_the_data_directory_alone(store: Path, tmp_path: Path) -> None:
    build = images.build(KEY)
    data = tmp_path / "instance" / "data"
    data.mkdir(parents=True)
    (data / "boots.log").write_text("history\n")
    target = tmp_path / "instance" / "os" / "disk-1"

    images.install_os_disk(build, target)

    assert sorted(p.name for p in target.iterdir()) == ["cert.pem", "image.json", "key.pem", "program.py"]
    for name in ("cert.pem", "image.json", "program.py"):
        assert (target / name).read_bytes() == (build.path / name).read_bytes()
    assert not target.is_symlink()
    assert (data / "boots.log").read_text() == "history\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["disk-1"]


def test_install_os_disk_leaves_a_complete_target_as_it_is(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "os" / "disk-1"
    images.install_os_disk(images.build(KEY), target)
    (target / "written-by-the-instance").write_text("kept")

    images.install_os_disk(images.build(KEY, behaviour="error"), target)

    assert (target / "written-by-the-instance").read_text() == "kept"
    assert json.loads((target / "image.json").read_text())["behaviour"] == "healthy"


def test_install_os_disk_removes_a_crashed_install_but_not_one_under_way(store: Path, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(dead.stdout)
    parent = tmp_path / "os"
    crashed = parent / f".disk-1.tmp-{dead_pid}-abcd"
    crashed.mkdir(parents=True)
    (crashed / "program.py").write_text("half a copy")
    under_way = parent / f".disk-1.tmp-{os.getpid()}-ef01"
    under_way.mkdir()

    images.install_os_disk(images.build(KEY), parent / "disk-1")

    assert not crashed.exists()
    assert under_way.exists()
    assert (parent / "disk-1" / "image.json").is_file()


def test_install_os_disk_refuses_a_target_that_is_not_an_os_directory(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "os" / "disk-1"
    target.mkdir(parents=True)
    (target / "something").write_text("else")

    with pytest.raises(FileExistsError, match="not an OS directory"):
        images.install_os_disk(images.build(KEY), target)


def test_install_os_disk_of_an_image_no_longer_in_the_store_says_so(store: Path, tmp_path: Path) -> None:
    build = images.ImageBuild(KEY, "1.1.0", "healthy", 0.0, images.image_dir(KEY))

    with pytest.raises(FileNotFoundError, match="is not in the local image store"):
        images.install_os_disk(build, tmp_path / "os" / "disk-1")
    assert not (tmp_path / "os" / "disk-1").exists()
    assert list((tmp_path / "os").iterdir()) == []


# --- the program, as a real process --------------------------------------------------------------


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    os_dir: Path
    data_dir: Path
    name: str

    def boots(self) -> list[str]:
        log = self.data_dir / "boots.log"
        return log.read_text().splitlines() if log.exists() else []

    def stop(self) -> int:
        """SIGTERM; the exit code (it must come within a second or two)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=3)


@pytest.fixture
def start(store: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start the program of an image as an instance would run it; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    def run(
        behaviour: str = "healthy",
        *,
        protocol: str = "http",
        boot_seconds: float = 0.0,
        os_dir: Path | None = None,
        data_dir: Path | None = None,
    ) -> Running:
        if os_dir is None:
            os_dir = tmp_path / "instance" / "os" / f"disk-{len(started)}"
            key = f"platform:Contoso/DemoApp/app:1.{len(started)}.0"
            images.install_os_disk(images.build(key, behaviour=behaviour, boot_seconds=boot_seconds), os_dir)
        data_dir = data_dir or tmp_path / "instance" / "data"
        port = free_port()
        name = "app_3"
        process = subprocess.Popen(
            [
                sys.executable,
                str(os_dir / "program.py"),
                *("--port", str(port), "--protocol", protocol, "--data-dir", str(data_dir), "--name", name),
            ],
            cwd=elsewhere,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        return Running(process, port, os_dir, data_dir, name)

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def booted(running: Running, *, times: int) -> bool:
    """Whether the data directory's boots.log counts `times` starts."""
    return len(running.boots()) == times


def get(port: int, path: str = "/health", *, tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]] | None:
    """(status, JSON body), or None while nothing listens on the port."""
    connection: http.client.HTTPConnection
    if tls is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except ConnectionRefusedError:
        return None
    finally:
        connection.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize(
    ("behaviour", "status", "body"),
    [
        ("healthy", 200, {"ApplicationHealthState": "Healthy"}),
        ("unhealthy", 200, {"ApplicationHealthState": "Unhealthy"}),
        ("error", 500, {"error": "the application failed"}),
    ],
)
def test_a_listening_program_answers_its_health_and_version_then_exits_on_sigterm(
    start: Callable[..., Running], behaviour: str, status: int, body: dict[str, Any]
) -> None:
    running = start(behaviour)

    answer = wait_for(lambda: get(running.port, "/health"), what="the program to listen")

    assert answer == (status, body)
    assert get(running.port, "/any/other/path?x=1") == (status, body)
    version_status, version = get(running.port, "/version") or (0, {})
    assert version_status == 200
    assert version["version"] == "1.0.0"
    assert version["image"] == "platform:Contoso/DemoApp/app:1.0.0"
    assert version["name"] == "app_3"
    assert version["pid"] == running.process.pid
    assert version["behaviour"] == behaviour
    assert dt.datetime.fromisoformat(version["started_at"]).tzinfo is not None
    assert len(running.boots()) == 1
    assert running.boots()[0].split("\t") == [version["started_at"], "app_3", "1.0.0", str(running.process.pid)]
    assert running.stop() == 0
    stdout, stderr = running.process.communicate()
    assert (stdout, stderr) == (b"", b"")


def test_a_refusing_program_runs_but_every_connection_is_refused(start: Callable[..., Running]) -> None:
    running = start("refuses")
    wait_for(running.boots, what="the program to start")

    for _ in range(3):
        assert refused(running.port)
    assert running.process.poll() is None  # running all along

    assert running.stop() == 0
    assert running.process.communicate() == (b"", b"")


def test_a_slow_program_refuses_connections_for_its_boot_time_then_is_healthy(start: Callable[..., Running]) -> None:
    running = start("slow", boot_seconds=3.0)
    wait_for(running.boots, what="the program to start")
    assert refused(running.port)  # booting: the log line is written before the boot time starts
    assert running.process.poll() is None

    answer = wait_for(lambda: get(running.port), what="the program to listen after booting")

    assert answer == (200, {"ApplicationHealthState": "Healthy"})
    _, version = get(running.port, "/version") or (0, {})
    started_at = dt.datetime.fromisoformat(version["started_at"])
    assert dt.datetime.now(dt.UTC) - started_at >= dt.timedelta(seconds=3)
    assert running.stop() == 0


def test_a_slow_program_stops_at_once_on_sigterm_while_booting(start: Callable[..., Running]) -> None:
    running = start("slow", boot_seconds=60.0)
    wait_for(running.boots, what="the program to start")

    begun = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - begun < 2.0


def test_each_start_adds_a_line_to_boots_log_in_the_data_directory(start: Callable[..., Running]) -> None:
    first = start("healthy")
    wait_for(lambda: get(first.port), what="the first start to listen")
    assert first.stop() == 0

    second = start(os_dir=first.os_dir, data_dir=first.data_dir)
    wait_for(lambda: get(second.port), what="the second start to listen")

    assert len(second.boots()) == 2
    assert [line.split("\t")[3] for line in second.boots()] == [str(first.process.pid), str(second.process.pid)]
    assert second.stop() == 0


def test_https_answers_with_the_certificate_of_its_image(start: Callable[..., Running]) -> None:
    running = start("unhealthy", protocol="https")
    tls = ssl.create_default_context(cafile=str(running.os_dir / "cert.pem"))
    tls.verify_flags |= ssl.VERIFY_X509_STRICT

    answer = wait_for(lambda: get(running.port, tls=tls), what="the https endpoint")

    assert answer == (200, {"ApplicationHealthState": "Unhealthy"})
    status, version = get(running.port, "/version", tls=tls) or (0, {})
    assert (status, version["behaviour"]) == (200, "unhealthy")
    other_image = ssl.create_default_context(cafile=str(images.build(KEY).path / "cert.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        get(running.port, tls=other_image)
    assert running.stop() == 0
    assert running.process.communicate() == (b"", b"")


def test_tcp_accepts_connections_and_answers_http_if_spoken_to(start: Callable[..., Running]) -> None:
    running = start("unhealthy", protocol="tcp")
    wait_for(lambda: not refused(running.port), what="the tcp listener")

    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as probe:
        probe.sendall(b"hello\r\n\r\n")  # not HTTP: the connection was the probe, it is closed
        assert probe.recv(100) == b""
    assert get(running.port, "/version") is not None
    assert get(running.port) == (200, {"ApplicationHealthState": "Unhealthy"})
    assert running.stop() == 0
    assert running.process.communicate() == (b"", b"")


def test_the_program_handles_every_behaviour_the_store_offers(start: Callable[..., Running]) -> None:
    for started, behaviour in enumerate(images.BEHAVIOURS, start=1):
        running = start(behaviour)  # each in the same data directory: one more line each
        wait_for(partial(booted, running, times=started), what=f"the {behaviour} program to start")
        assert running.stop() == 0, behaviour
        assert running.process.communicate() == (b"", b""), behaviour


def test_a_program_whose_port_is_taken_says_so_on_stderr_and_exits(start: Callable[..., Running]) -> None:
    running = start("healthy")
    wait_for(lambda: get(running.port), what="the first program to listen")
    blocked = subprocess.run(
        [
            sys.executable,
            str(running.os_dir / "program.py"),
            *("--port", str(running.port), "--protocol", "http", "--data-dir", str(running.data_dir)),
            *("--name", "app_4"),
        ],
        capture_output=True,
        timeout=20,
    )

    assert blocked.returncode == 1
    assert blocked.stdout == b""
    assert f"app_4 cannot listen on 127.0.0.1:{running.port}".encode() in blocked.stderr


# --- build_demo_images --------------------------------------------------------------------------


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("build_demo_images", *args, stdout=out)
    return out.getvalue()


def publications() -> list[tuple[str, str]]:
    return sorted(
        ImagePublication.objects.filter(image_version__publisher="Contoso").values_list(
            "image_version__version", "region__name"
        )
    )


@pytest.mark.django_db
def test_the_command_builds_and_publishes_the_demo_set_and_latest_stays_healthy(store: Path, frozen_clock: Any) -> None:
    east, west = factories.region("eastus"), factories.region("westus", zones=[])

    output = run_command()

    built = {b.version: (b.behaviour, b.boot_seconds) for b in images.all_builds()}
    assert built == {r.version: (r.behaviour, r.boot_seconds) for r in DEMO_RELEASES}
    assert built["1.2.0"] == ("slow", 20.0)
    assert publications() == sorted((r.version, region) for r in DEMO_RELEASES for region in ("eastus", "westus"))
    dates = dict(ImagePublication.objects.filter(region=east).values_list("image_version__version", "published_at"))
    assert sorted(dates, key=dates.__getitem__) == [r.version for r in DEMO_RELEASES]  # oldest first
    publisher, offer, sku = DEMO_APP
    for region in (east, west):
        assert latest_platform_version(publisher=publisher, offer=offer, sku=sku, region_id=region.pk) == "1.5.0"
    assert "1.2.0  slow (boot 20 s): built; published in eastus, westus" in output
    assert "latest in eastus, westus: 1.5.0 (healthy)" in output
    assert "warning" not in output


@pytest.mark.django_db
def test_running_the_command_again_changes_nothing(store: Path) -> None:
    factories.region("eastus")
    run_command()
    manifests = {b.key: (b.path / "image.json").read_bytes() for b in images.all_builds()}
    published = list(ImagePublication.objects.values_list("pk", "published_at"))

    output = run_command()

    assert {b.key: (b.path / "image.json").read_bytes() for b in images.all_builds()} == manifests
    assert list(ImagePublication.objects.values_list("pk", "published_at")) == published
    assert output.count("already built; already published in eastus") == len(DEMO_RELEASES)
    assert ": built" not in output


@pytest.mark.django_db
def test_a_region_added_later_gets_the_versions_the_others_have(store: Path) -> None:
    factories.region("eastus")
    run_command()
    factories.region("westus", zones=[])

    output = run_command()

    assert sorted(v for v, r in publications() if r == "westus") == [r.version for r in DEMO_RELEASES]
    assert "1.0.0  healthy: already built; published in westus; already published in eastus" in output


@pytest.mark.django_db
def test_the_command_publishes_in_the_regions_named(store: Path) -> None:
    factories.region("eastus")
    factories.region("westus", zones=[])

    run_command("--region", "westus")

    assert {r for _, r in publications()} == {"westus"}


@pytest.mark.django_db
def test_only_build_publishes_nothing(store: Path) -> None:
    output = run_command("--only-build")

    assert len(images.all_builds()) == len(DEMO_RELEASES)
    assert not PlatformImageVersion.objects.exists()
    assert "not published (--only-build)" in output


@pytest.mark.django_db
def test_one_version_is_built_and_published_now_with_a_warning_when_it_becomes_a_broken_latest(
    store: Path, frozen_clock: Any
) -> None:
    region = factories.region("eastus")

    output = run_command("--version", "2.0.0", "--behaviour", "slow")

    build = images.find(DemoRelease("2.0.0", "slow").key)
    assert build is not None
    assert (build.behaviour, build.boot_seconds) == ("slow", 20.0)
    publication = ImagePublication.objects.get(region=region)
    assert publication.published_at == clock.now()
    assert "latest in eastus: 2.0.0 (slow)" in output
    assert "warning: scale sets on 'latest' in eastus take 2.0.0, which is not healthy." in output


@pytest.mark.django_db
def test_a_built_version_is_rebuilt_with_another_behaviour_only_when_asked(store: Path) -> None:
    factories.region("eastus")
    run_command("--version", "2.0.0", "--behaviour", "unhealthy")

    with pytest.raises(CommandError, match="2.0.0 is already built as unhealthy; give --rebuild"):
        run_command("--version", "2.0.0", "--behaviour", "error")
    output = run_command("--version", "2.0.0", "--behaviour", "error", "--rebuild")

    build = images.find(DemoRelease("2.0.0", "error").key)
    assert build is not None
    assert build.behaviour == "error"
    assert "2.0.0  error: rebuilt; already published in eastus" in output


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "1.x"], "--version:\n'1.x' is not a version"),
        (["--version", "latest"], "'latest' is resolved, never built or published"),
        (["--version", "2.0.0", "--behaviour", "sleepy"], "argument --behaviour: invalid choice: 'sleepy'"),
        (["--version", "2.0.0", "--behaviour", "slow", "--boot-seconds", "-1"], "0 or more"),
        (["--version", "2.0.0", "--boot-seconds", "5"], "applies to the 'slow' behaviour only"),
        (["--behaviour", "error"], "--behaviour and --boot-seconds go with --version"),
        (["--region", "nowhere"], "--region: unknown region nowhere"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_built(store: Path, args: list[str], message: str) -> None:
    factories.region("eastus")

    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_command(*args)
    assert images.all_builds() == []
    assert not PlatformImageVersion.objects.exists()


@pytest.mark.django_db
def test_without_regions_the_command_says_how_to_get_some(store: Path) -> None:
    with pytest.raises(CommandError, match="There is no region to publish in: load the demo fleet"):
        run_command()
    assert images.all_builds() == []
