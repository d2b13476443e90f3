"""Formats the board's dashboard uses: shares as percentages, durations in words a board reads."""

from __future__ import annotations

from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


@register.filter
def share(board, outcome: str) -> str:
    return percent(board.outcome_share(outcome))


@register.filter
def rate_share(rate, kind: str) -> str:
    return f"{percent(rate.share(getattr(rate, kind)))} ({getattr(rate, kind)})"


@register.filter
def outcome_label(outcome: str) -> str:
    from approvals.board import OUTCOME_LABELS

    return OUTCOME_LABELS.get(outcome, outcome)


@register.filter
def sum_attr(items, name: str) -> int:
    return sum(getattr(item, name) for item in items)


@register.filter
def duration(value: timedelta | None) -> str:
    """"3 h 20 min", "12 min", "40 s", or "-" when there is nothing to measure."""
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"
