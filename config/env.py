"""Typed readers for settings that come from the environment.

Each helper fails loudly (ImproperlyConfigured, naming the variable) on a value it cannot
read, so a typo in a deployment stops the process at start-up instead of misbehaving later.
"""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(
    name: str, default: float, *, minimum_exclusive: float | None = None, minimum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum_exclusive is not None and not value > minimum_exclusive:
        raise ImproperlyConfigured(f"{name}={value} must be greater than {minimum_exclusive}.")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def local_secret_key(path: Path) -> str:
    """The signing key of a console with no SECRET_KEY set: random, made once per checkout and
    kept in `path`, so that no two installations share a key that is written in the repository.

    Several processes start at once (web, worker, beat): the key is written to a file of its own
    and linked into place, so exactly one of them creates it and every process reads the same key.
    A deployment with several hosts sets SECRET_KEY instead (the same on every host)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}")
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(secrets.token_urlsafe(50))
    try:
        os.link(draft, path)  # fails if another process linked its key first: then read that one
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()
