"""Small filters for the run panel and history pages, which draw from a run summary's JSON
(ISO timestamps, progress counts) the same way static/js/run_panel.js does."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.utils.dateparse import parse_datetime

register = template.Library()

PROGRESS_PARTS = [
    ("successful", "succeeded"),
    ("failed", "failed"),
    ("in_progress", "in progress"),
    ("pending", "pending"),
]


@register.filter
def moment(value: str | None) -> dt.datetime | None:
    """An ISO timestamp from a summary, as a datetime the `date` filter can format."""
    return parse_datetime(value) if value else None


@register.filter
def progress_parts(progress: dict[str, int]) -> list[dict[str, Any]]:
    """[{key, label, count, percent}] of the targeted instances, for the stacked bar (the
    percent as text with a dot, whatever the locale: it goes into a style attribute)."""
    whole = sum(progress.get(key, 0) for key, _ in PROGRESS_PARTS) or 1
    return [
        {
            "key": key,
            "label": label,
            "count": progress.get(key, 0),
            "percent": f"{100 * progress.get(key, 0) / whole:.2f}",
        }
        for key, label in PROGRESS_PARTS
    ]
