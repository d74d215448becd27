"""Settings read from the environment fail loudly on bad values; the embedded Redis works."""

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from config.embedded_redis import EmbeddedRedis
from config.env import env_bool, env_float, env_int, env_list, local_secret_key
from config.settings import _celery_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("YES", True), ("off", False), ("0", False)])
def test_booleans_read_the_usual_spellings(monkeypatch, raw, value):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", not value) is value


def test_a_bad_boolean_names_the_variable(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)


def test_numbers_are_checked(monkeypatch):
    monkeypatch.setenv("TIME_SCALE", "fast")
    with pytest.raises(ImproperlyConfigured, match="TIME_SCALE='fast' is not a number"):
        env_float("TIME_SCALE", 1.0)
    monkeypatch.setenv("TIME_SCALE", "0")
    with pytest.raises(ImproperlyConfigured, match="must be greater than 0"):
        env_float("TIME_SCALE", 1.0, minimum_exclusive=0)
    monkeypatch.setenv("SIMULATOR_SEED", "1.5")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        env_int("SIMULATOR_SEED", 1)
    monkeypatch.setenv("SIMULATOR_SEED", "-3")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("SIMULATOR_SEED", 1, minimum=0)


def test_lists_split_on_commas(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example, b.example,,")
    assert env_list("ALLOWED_HOSTS", []) == ["a.example", "b.example"]
    assert env_list("UNSET_LIST_VARIABLE", ["x"]) == ["x"]


def test_a_bad_setting_stops_the_process_at_start_up():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env={"PATH": "/usr/bin:/bin", "TIME_SCALE": "-1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "TIME_SCALE=-1.0 must be greater than 0" in result.stderr


def test_celery_spells_a_unix_socket_its_own_way():
    assert _celery_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert _celery_url("redis://127.0.0.1:6379/1") == "redis://127.0.0.1:6379/1"


def test_the_embedded_redis_starts_answers_and_stops(tmp_path):
    server = EmbeddedRedis(tmp_path / "r.sock")
    server.start()
    try:
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.poll() is not None
    assert not server.socket_path.exists()


def test_without_secret_key_each_checkout_makes_its_own_and_keeps_it(tmp_path):
    key = local_secret_key(tmp_path / "var" / "secret_key")
    assert len(key) >= 50  # what check --deploy asks of a key
    assert len(set(key)) >= 5
    assert local_secret_key(tmp_path / "var" / "secret_key") == key  # read back, not made again
    assert local_secret_key(tmp_path / "other" / "secret_key") != key
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert list((tmp_path / "var").iterdir()) == [tmp_path / "var" / "secret_key"]  # no draft left


def test_processes_starting_together_agree_on_one_key(tmp_path):
    """web, worker and beat start at once under `make run`: they must sign with the same key."""
    script = (
        "import sys; from pathlib import Path; from config.env import local_secret_key; "
        "print(local_secret_key(Path(sys.argv[1])))"
    )
    path = tmp_path / "secret_key"
    children = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, cwd=BASE_DIR)
        for _ in range(6)
    ]
    keys = {child.communicate(timeout=60)[0].strip() for child in children}
    assert keys == {path.read_text().strip()}
