"""Django's deployment checklist (`manage.py check --deploy`) against the settings a real
deployment sets in its environment (deploy/env.example), and against a deployment that forgot them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Variables config/settings.py reads for these checks: the test sets them, nothing inherited.
DEPLOYMENT_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "SECURE_COOKIES",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
)
HARDENED = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "console.example.com",
    "SECURE_COOKIES": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_PROXY_SSL_HEADER": "true",
}
FORGOTTEN = {"DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "console.example.com"}


def _check(environment: dict[str, str]) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key not in DEPLOYMENT_VARIABLES} | environment
    return subprocess.Popen(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def checks() -> Iterator[dict[str, tuple[int, str]]]:
    """Both checks started at once: each is a Django start-up, seconds on a busy machine."""
    started = {"hardened": _check(HARDENED), "forgotten": _check(FORGOTTEN)}
    try:
        results = {}
        for name, process in started.items():
            output, _ = process.communicate(timeout=120)
            results[name] = (process.returncode, output)
        yield results
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_hardened_deployment_passes_the_deployment_checklist(checks: dict[str, tuple[int, str]]) -> None:
    returncode, output = checks["hardened"]
    assert "WARNINGS" not in output, output
    assert returncode == 0, output


def test_a_deployment_without_the_https_settings_is_warned(checks: dict[str, tuple[int, str]]) -> None:
    returncode, output = checks["forgotten"]
    assert returncode != 0, output
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in output, output  # HSTS, SSL redirect, secure session and CSRF cookies
