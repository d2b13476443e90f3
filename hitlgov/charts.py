"""Server-rendered SVG charts for the dashboard: served with the page, nothing fetched at run time.

Readable without colour: one series per chart (small multiples, each titled), every bar labelled
with its value, and a share bar draws each part with its own hatch pattern and names it in text.
"""

from __future__ import annotations

from datetime import date

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, TOP, BOTTOM = 600, 130, 18, 22
PATTERNS = {  # id: (svg body of a 8x8 tile); solid, hatched, dotted, crossed
    "solid": '<rect width="8" height="8" fill="#417690"/>',
    "hatch": '<rect width="8" height="8" fill="#fff"/><path d="M0,8 L8,0" stroke="#205067" stroke-width="2"/>',
    "dots": '<rect width="8" height="8" fill="#fff"/><circle cx="4" cy="4" r="1.8" fill="#205067"/>',
    "cross": '<rect width="8" height="8" fill="#fff"/><path d="M0,0 L8,8 M8,0 L0,8" stroke="#ba2121" stroke-width="1.5"/>',
}


def _n(value: float) -> str:
    """A coordinate as SVG text (format_html escapes its arguments into strings first)."""
    return f"{value:.1f}"


def _defs() -> str:
    tiles = "".join(f'<pattern id="p-{name}" width="8" height="8" patternUnits="userSpaceOnUse">{body}</pattern>'
                    for name, body in PATTERNS.items())
    return f"<defs>{tiles}</defs>"


def bar_chart(title: str, days: list[date], values: list[int], *, pattern: str = "solid") -> SafeString:
    """One bar per day, its value written above it; the chart's title says what is counted."""
    top = max(values, default=0) or 1
    step = (WIDTH - 40) / max(len(values), 1)
    bars = []
    for n, (day, value) in enumerate(zip(days, values, strict=True)):
        height = (HEIGHT - TOP - BOTTOM) * value / top
        x, y = 30 + n * step, HEIGHT - BOTTOM - height
        bars.append(format_html(
            '<g><title>{}: {}</title><rect x="{}" y="{}" width="{}" height="{}" fill="url(#p-{})" '
            'stroke="#205067" stroke-width="0.5"/><text x="{}" y="{}" font-size="9" text-anchor="middle">{}</text>'
            '<text x="{}" y="{}" font-size="8" text-anchor="middle">{}</text></g>',
            day.isoformat(), value, _n(x), _n(y), _n(step * 0.7), _n(height), pattern, _n(x + step * 0.35), _n(y - 2), value,
            _n(x + step * 0.35), HEIGHT - 8, day.strftime("%d %b") if n % 2 == 0 else "",
        ))
    return format_html(
        '<svg class="board-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="100%" '
        'xmlns="http://www.w3.org/2000/svg">{}<title>{}</title><text x="0" y="11" font-size="11" font-weight="bold">{}</text>'
        '<line x1="28" y1="{}" x2="{}" y2="{}" stroke="#999"/>{}</svg>',
        title, WIDTH, HEIGHT, mark_safe(_defs()), title, title, HEIGHT - BOTTOM, WIDTH - 8, HEIGHT - BOTTOM,
        mark_safe("".join(bars)),
    )


def share_bar(title: str, parts: list[tuple[str, int]]) -> SafeString:
    """One horizontal bar split into parts, each hatched differently and named with its count and share."""
    total = sum(count for _, count in parts) or 1
    names = list(PATTERNS)
    x, pieces, legend = 0.0, [], []
    for n, (label, count) in enumerate(parts):
        width = (WIDTH - 2) * count / total
        pattern = names[n % len(names)]
        pieces.append(format_html('<rect x="{}" y="16" width="{}" height="22" fill="url(#p-{})" stroke="#205067">'
                                  '<title>{}: {}</title></rect>', _n(1 + x), _n(width), pattern, label, count))
        legend.append((pattern, f"{label} {count} ({count / total:.0%})", n))
        x += width
    gap = WIDTH // max(len(parts), 1)
    keys = format_html_join("", '<rect x="{}" y="46" width="12" height="12" fill="url(#p-{})" stroke="#205067"/>'
                                '<text x="{}" y="56" font-size="9">{}</text>',
                            ((2 + n * gap, pattern, 17 + n * gap, text) for pattern, text, n in legend))
    return format_html(
        '<svg class="board-chart" role="img" aria-label="{}" viewBox="0 0 {} 62" width="100%" style="max-width:760px" '
        'xmlns="http://www.w3.org/2000/svg">{}<title>{}</title><text x="0" y="11" font-size="11" font-weight="bold">{}'
        '</text>{}{}</svg>',
        title, WIDTH, mark_safe(_defs()), title, escape(title), mark_safe("".join(pieces)), keys,
    )
