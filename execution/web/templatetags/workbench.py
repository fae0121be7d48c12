"""Template filters of the workbench: times people read, durations."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def ago(value: datetime | None) -> str:
    """``3 min ago`` / ``in 5 s``; the script keeps it current."""
    if not value:
        return ""
    seconds = int((timezone.now() - value).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size:
            amount = f"{seconds // size} {unit}"
            return f"in {amount}" if future else f"{amount} ago"
    return "just now"


@register.filter
def exact(value: datetime | None) -> str:
    """The exact time, for a tooltip: ``2026-12-02 15:04:05 UTC``."""
    if not value:
        return ""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


@register.filter
def as_json(value) -> str:
    """A settings value as the JSON a person edits (objects, lists); empty for None."""
    return "" if value is None else json.dumps(value)


@register.filter
def iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def format_span(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


@register.filter
def duration(run) -> str:
    """How long the run ran (so far, while it runs); empty before it starts."""
    if not run.started_at:
        return ""
    end = run.ended_at or timezone.now()
    return format_span(end - run.started_at)
