"""Settings for worker and beat processes of the SQLite database-outage test: the project's
settings with a one-second busy timeout, so a write lock held for a few seconds outlasts it
and the worker sees the database as unavailable ("database is locked")."""

from config.settings import *  # noqa: F403

BUSY_TIMEOUT_SECONDS = 1
DATABASES["default"]["OPTIONS"] = {**DATABASES["default"]["OPTIONS"], "timeout": BUSY_TIMEOUT_SECONDS}  # noqa: F405
