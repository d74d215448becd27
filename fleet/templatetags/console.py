"""Tags every page shares. `{% when moment %}` prints a timestamp the way the console shows
them all: UTC in the page as served (so it reads right without JavaScript and in tests), then
static/js/time.js rewrites it in the operator's time zone and keeps UTC in the hover title."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag
def when(moment: dt.datetime | str | None, empty: str = "—") -> SafeString | str:
    """<time datetime="…" title="… UTC">2026-06-01 12:00:00 UTC</time>; ISO strings (from a
    run summary's JSON) are taken too."""
    if isinstance(moment, str):
        moment = parse_datetime(moment)
    if moment is None:
        return empty
    utc = moment.astimezone(dt.UTC)
    text = f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    return format_html('<time datetime="{}" title="{}" data-local>{}</time>', utc.isoformat(), text, text)
