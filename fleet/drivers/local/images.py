"""The local image store: one directory per image version, and the OS directories made from them.

An image is what `program.py` needs to run as an instance: the program itself, `image.json`
(its key, version and behaviour) and a self-signed certificate for https health endpoints. An
OS directory is a copy of an image, made when an instance is created or reimaged; the
instance's data directory lives elsewhere and survives reimages.

Layout of the store (settings.LOCAL_IMAGE_STORE, by default var/images):

    <name>                  a symlink to the image's current build, `<name>` derived from the key
    .builds/<name>.<token>  complete builds; a rebuild makes a new one, then swaps the symlink
    .builds/.tmp-<token>    a build being written (removed by the next build if a crash left it)
    .link-<token>           the symlink about to replace `<name>` (likewise)
    .lock                   held while building, so two builds never swap under each other

Readers take no lock: the symlink always points at a complete build, and swapping it is one
rename, so a rebuild replaces an image atomically whoever looks.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from fleet.images import ImageRef
from fleet.models import ImageSource

# What an image's program does about health (operators see these when building images).
BEHAVIOURS: dict[str, str] = {
    "healthy": 'Listens at once and reports Healthy (200 {"ApplicationHealthState": "Healthy"}).',
    "slow": "Waits its boot time before listening (connections refused meanwhile), then reports Healthy.",
    "unhealthy": 'Listens at once and reports Unhealthy (200 {"ApplicationHealthState": "Unhealthy"}).',
    "error": "Listens at once and answers every health probe with HTTP 500 (Unknown to the extension).",
    "refuses": "Runs but never listens: every probe's connection is refused.",
}

IMAGE_FILE = "image.json"
PROGRAM_FILE = "program.py"
CERTIFICATE_FILE = "cert.pem"
PRIVATE_KEY_FILE = "key.pem"

_BUILDS = ".builds"
_BUILD_TEMP_PREFIX = ".tmp-"
_LINK_TEMP_PREFIX = ".link-"
_LOCK = ".lock"
_TOKEN_BYTES = 6
_READABLE_LENGTH = 60  # of a directory name; the hash keeps names of long keys apart
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_INSTALL_ATTEMPTS = 3  # a rebuild may remove the build being copied: copy the new one instead


# The demo app (`manage.py build_demo_images`): a platform image whose versions behave each in
# its own way. "latest" is the highest version published, whatever the dates, so the broken
# builds 1.2.0-1.4.0 are followed by a healthy 1.5.0: a set on "latest" runs a healthy app,
# and a broken build reaches a set only when an operator pins it.
DEMO_APP = ("Contoso", "DemoApp", "app")  # publisher, offer, sku


@dataclass(frozen=True)
class DemoRelease:
    """A version of the demo app and how its program behaves."""

    version: str
    behaviour: str
    boot_seconds: float = 0.0

    @property
    def key(self) -> str:
        return ImageRef(ImageSource.PLATFORM, "/".join(DEMO_APP), self.version).key


DEMO_RELEASES = (
    DemoRelease("1.0.0", "healthy"),
    DemoRelease("1.1.0", "healthy"),
    DemoRelease("1.2.0", "slow", boot_seconds=20.0),
    DemoRelease("1.3.0", "unhealthy"),
    DemoRelease("1.4.0", "refuses"),
    DemoRelease("1.5.0", "healthy"),
)


@dataclass(frozen=True)
class ImageBuild:
    """An image version built in the local store."""

    key: str  # the image key an OS disk records (fleet.images.ImageRef.key)
    version: str  # what an operator reads: ImageRef.label
    behaviour: str  # one of BEHAVIOURS
    boot_seconds: float  # how long a "slow" image waits before listening
    path: Path  # the image directory (a stable name; a rebuild swaps what it points at)

    @property
    def program(self) -> Path:
        return self.path / PROGRAM_FILE


def store_root() -> Path:
    return Path(getattr(settings, "LOCAL_IMAGE_STORE", settings.VAR_DIR / "images"))


def image_dir(key: str) -> Path:
    """The image's directory: a readable name made of the key's safe characters, then a hash
    of the whole key, so no key can name a path outside the store (no '/', never '.' or
    '..') and keys that read alike still get directories of their own."""
    readable = _UNSAFE.sub("_", key).strip("._-")[:_READABLE_LENGTH] or "image"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return store_root() / f"{readable}-{digest}"


def build(key: str, *, behaviour: str = "healthy", boot_seconds: float = 0.0) -> ImageBuild:
    """Build the image `key` in the store, replacing an existing build of it atomically.

    The new build is written in a temporary directory inside the store, renamed to a build
    directory of its own, and the image's symlink is then swapped to it in one rename: until
    that moment `find(key)` sees the old build whole, after it the new one whole. Instances
    made from the old build are unaffected (their OS directories are copies)."""
    validate_behaviour(behaviour, boot_seconds)
    if not key:
        raise ValueError("An image needs a key, like platform:Contoso/DemoApp/app:1.0.0.")
    version = ImageRef.from_key(key).label
    link = image_dir(key)
    builds = link.parent / _BUILDS
    builds.mkdir(parents=True, exist_ok=True)
    with _store_locked(link.parent):
        _remove_leftovers(link.parent, name=link.name, current=_link_target(link))
        temporary = builds / f"{_BUILD_TEMP_PREFIX}{secrets.token_hex(_TOKEN_BYTES)}"
        temporary.mkdir()
        try:
            _write_image(
                temporary,
                {
                    "key": key,
                    "version": version,
                    "behaviour": behaviour,
                    "boot_seconds": float(boot_seconds),
                    "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                },
            )
            complete = builds / f"{link.name}.{secrets.token_hex(_TOKEN_BYTES)}"
            temporary.rename(complete)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        previous = _link_target(link)
        swap = link.parent / f"{_LINK_TEMP_PREFIX}{secrets.token_hex(_TOKEN_BYTES)}"
        swap.symlink_to(Path(_BUILDS) / complete.name, target_is_directory=True)
        os.replace(swap, link)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    return ImageBuild(key=key, version=version, behaviour=behaviour, boot_seconds=float(boot_seconds), path=link)


def validate_behaviour(behaviour: str, boot_seconds: float) -> None:
    """Refuse (ValueError) a behaviour the program does not know, or a boot time that is
    negative, not a number, or given to a behaviour that would ignore it."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"Unknown behaviour {behaviour!r}: choose one of {', '.join(BEHAVIOURS)}.")
    if not math.isfinite(boot_seconds) or boot_seconds < 0:
        raise ValueError(f"The boot time must be a number of seconds, 0 or more (got {boot_seconds}).")
    if boot_seconds and behaviour != "slow":
        raise ValueError(f"A boot time applies to the 'slow' behaviour only, not to {behaviour!r}.")


def find(key: str) -> ImageBuild | None:
    """The image `key` as built in the store, or None if it was never built."""
    return _read(image_dir(key), key=key)


def all_builds() -> list[ImageBuild]:
    """Every image in the store, by key."""
    root = store_root()
    if not root.is_dir():
        return []
    found = [_read(entry) for entry in root.iterdir() if not entry.name.startswith(".")]
    return sorted((b for b in found if b is not None), key=lambda b: b.key)


def install_os_disk(build: ImageBuild, target: Path) -> None:
    """Make a fresh OS directory at `target` from the image: a copy of its directory.

    Idempotent and crash-safe: the copy is written in a temporary directory beside `target`
    (named after this process) and renamed into place, so `target` exists only complete and
    a call for a complete `target` leaves it as is. A temporary directory left by a process
    that died half-way is removed; one of a live process (an install under way) is not.
    The instance's data directory is elsewhere and never touched."""
    if _os_disk_complete(target):
        return
    if target.exists():
        raise FileExistsError(f"{target} exists but is not an OS directory made from an image; remove it first.")
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    for leftover in target.parent.iterdir():
        if leftover.name.startswith(prefix) and not _process_alive(_temp_owner(leftover.name, prefix)):
            shutil.rmtree(leftover, ignore_errors=True)
    temporary = target.parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _copy_image(build, temporary)
        try:
            temporary.rename(target)
        except OSError as error:
            # Another install of the same OS directory finished first: its copy is as good.
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not _os_disk_complete(target):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


# --- internals ----------------------------------------------------------------------------------


def _write_image(directory: Path, manifest: dict[str, object]) -> None:
    shutil.copyfile(Path(__file__).with_name(PROGRAM_FILE), directory / PROGRAM_FILE)
    _write_certificate(directory)
    (directory / IMAGE_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _write_certificate(directory: Path) -> None:
    """A self-signed certificate for localhost and 127.0.0.1, with its private key (https
    health endpoints: the extension does not check it, a test can)."""
    # Imported here: only building needs it, and `cryptography` takes a while to import.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private_key = ec.generate_private_key(ec.SECP256R1())  # instant, unlike RSA
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        # Its own authority, shaped so that strict verification (Python 3.13's default) takes it
        # as a trust anchor: a test client can check the endpoint against this file alone.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(private_key.public_key()), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    (directory / CERTIFICATE_FILE).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file = directory / PRIVATE_KEY_FILE
    key_file.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)


@contextmanager
def _store_locked(root: Path) -> Iterator[None]:
    with (root / _LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _link_target(link: Path) -> Path | None:
    """The build directory the image's symlink points at, if there is one."""
    if not link.is_symlink():
        return None
    return link.parent / os.readlink(link)


def _remove_leftovers(root: Path, *, name: str, current: Path | None) -> None:
    """Under the store lock no build is under way, so a temporary build directory or symlink
    is a crash's leftover, and so is a build of this image that its symlink does not point at."""
    for entry in root.iterdir():
        if entry.name.startswith(_LINK_TEMP_PREFIX):
            entry.unlink(missing_ok=True)
    builds_of_image = re.compile(rf"{re.escape(name)}\.[0-9a-f]{{{_TOKEN_BYTES * 2}}}")
    for entry in (root / _BUILDS).iterdir():
        leftover = entry.name.startswith(_BUILD_TEMP_PREFIX) or (
            builds_of_image.fullmatch(entry.name) is not None and (current is None or entry.name != current.name)
        )
        if leftover:
            shutil.rmtree(entry, ignore_errors=True)


def _read(directory: Path, *, key: str | None = None) -> ImageBuild | None:
    try:
        manifest = json.loads((directory / IMAGE_FILE).read_text(encoding="utf-8"))
        found = ImageBuild(
            key=str(manifest["key"]),
            version=str(manifest["version"]),
            behaviour=str(manifest["behaviour"]),
            boot_seconds=float(manifest["boot_seconds"]),
            path=directory,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if key is not None and found.key != key:
        return None
    return found


def _copy_image(build: ImageBuild, destination: Path) -> None:
    for attempt in range(_INSTALL_ATTEMPTS):
        try:
            source = build.path.resolve(strict=True)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Image {build.key} is not in the local image store ({build.path}): build it first."
            ) from None
        try:
            shutil.copytree(source, destination)
            return
        except (FileNotFoundError, shutil.Error):
            # The build was replaced and removed while we copied it: start again from the new one.
            shutil.rmtree(destination, ignore_errors=True)
            if attempt == _INSTALL_ATTEMPTS - 1:
                raise


def _os_disk_complete(target: Path) -> bool:
    return (target / IMAGE_FILE).is_file() and (target / PROGRAM_FILE).is_file()


def _temp_owner(name: str, prefix: str) -> int:
    pid, _, _ = name[len(prefix) :].partition("-")
    return int(pid) if pid.isdigit() else 0


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
