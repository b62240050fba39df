"""Small server-side SVG charts for the admin dashboard: no JavaScript, nothing from a CDN.

Each function returns one self-contained ``<svg>`` element (safe to embed: every piece of
text is escaped), sized by its ``viewBox`` so it scales with the page. Values of None are
gaps: a line is broken there rather than drawn through zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

Format = Callable[[float], str]

PALETTE = ("#417690", "#e08a1e", "#5b9a3c", "#b3452f", "#7a5aa6")
GRID = "#d9d9d9"
TEXT = "#555"
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 30, 28
MAX_X_LABELS = 6
LABEL_CHARS = 26


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str | None = None


def plain(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.3g}"


def percent(value: float) -> str:
    return f"{value:.0%}"


def dollars(value: float) -> str:
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.4f}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= value (1 for nothing to show)."""
    if not value or value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        ceiling = step * 10**exponent
        if ceiling >= value * (1 - 1e-12):
            return ceiling
    return 10.0 ** (exponent + 1)


def _text(x: float, y: float, content: str, *, anchor: str = "middle", size: int = 11, cls: str = "") -> str:
    extra = f' class="{cls}"' if cls else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{TEXT}" text-anchor="{anchor}"{extra}>'
        f"{escape(content)}</text>"
    )


def _open(title: str, width: int, height: int, kind: str, points: int) -> str:
    label = escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="console-chart" data-kind="{kind}" data-points="{points}" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{label}" '
        f'style="font-family:sans-serif"><title>{label}</title>'
    )


def _empty(title: str, width: int, height: int, message: str) -> SafeString:
    return mark_safe(
        _open(title, width, height, "empty", 0)
        + f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="{GRID}"/>'
        + _text(width / 2, height / 2, message, size=13)
        + "</svg>"
    )


def _y_axis(top: float, max_value: float, fmt: Format, width: int, plot_h: float) -> list[str]:
    parts = []
    for step in range(5):
        value = max_value * step / 4
        y = top + plot_h * (1 - step / 4)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(_text(LEFT - 6, y + 4, fmt(value), anchor="end", size=10))
    return parts


def _x_labels(labels: Sequence[str], xs: Sequence[float], y: float) -> list[str]:
    count = len(labels)
    if count == 0:
        return []
    every = max(1, math.ceil(count / MAX_X_LABELS))
    chosen = sorted({*range(0, count, every), count - 1})
    return [_text(xs[i], y, labels[i], size=10) for i in chosen]


def _legend(series: Sequence[Series], colors: Sequence[str]) -> list[str]:
    parts, x = [], LEFT
    for item, color in zip(series, colors, strict=True):
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{color}"/>')
        parts.append(_text(x + 14, 17, item.name, anchor="start"))
        x += 24 + 7 * len(item.name)
    return parts


def _runs(values: Sequence[float | None]) -> list[list[int]]:
    """Index runs of consecutive non-None values (each becomes one polyline)."""
    runs: list[list[int]] = []
    current: list[int] = []
    for index, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(index)
    if current:
        runs.append(current)
    return runs


def line_chart(
    series: Sequence[Series],
    labels: Sequence[str],
    *,
    title: str,
    fmt: Format = plain,
    y_max: float | None = None,
    width: int = 480,
    height: int = 220,
    empty_message: str = "No data in this range",
) -> SafeString:
    """Lines over shared x positions (``labels``); each series has one value (or None) per label."""
    count = len(labels)
    for item in series:
        if len(item.values) != count:
            raise ValueError(f"series {item.name!r} has {len(item.values)} values for {count} labels")
    present = [v for item in series for v in item.values if v is not None]
    if not count or not present:
        return _empty(title, width, height, empty_message)
    top_value = y_max if y_max is not None else nice_ceiling(max(present))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    xs = [LEFT + (plot_w * i / (count - 1) if count > 1 else plot_w / 2) for i in range(count)]
    colors = [item.color or PALETTE[i % len(PALETTE)] for i, item in enumerate(series)]
    parts = [_open(title, width, height, "line", len(present)), *_y_axis(TOP, top_value, fmt, width, plot_h)]
    for item, color in zip(series, colors, strict=True):
        for run in _runs(item.values):
            coords = [(xs[i], TOP + plot_h * (1 - min(float(item.values[i] or 0), top_value) / top_value)) for i in run]
            if len(coords) == 1:
                x, y = coords[0]
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>')
            else:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
    parts += _x_labels(labels, xs, height - 10)
    parts += _legend(series, colors)
    parts.append("</svg>")
    return mark_safe("".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    fmt: Format = plain,
    color: str = PALETTE[0],
    highlight: Callable[[str], bool] | None = None,
    highlight_color: str = PALETTE[1],
    width: int = 480,
    height: int = 220,
    empty_message: str = "No data in this range",
) -> SafeString:
    """Vertical bars, one per (label, value), in the given order; ``highlight(label)`` recolours a bar."""
    if not bars or not any(value > 0 for _, value in bars):
        return _empty(title, width, height, empty_message)
    top_value = nice_ceiling(max(value for _, value in bars))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    band = plot_w / len(bars)
    parts = [_open(title, width, height, "bar", len(bars)), *_y_axis(TOP, top_value, fmt, width, plot_h)]
    for index, (label, value) in enumerate(bars):
        bar_h = plot_h * max(0.0, value) / top_value
        x, y = LEFT + band * index + band * 0.15, TOP + plot_h - bar_h
        fill = highlight_color if highlight is not None and highlight(label) else color
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{band * 0.7:.1f}" height="{bar_h:.1f}" fill="{fill}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        parts.append(_text(LEFT + band * (index + 0.5), height - 10, label, size=10))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def hbar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    fmt: Format = plain,
    color: str = PALETTE[2],
    width: int = 480,
    empty_message: str = "No data in this range",
) -> SafeString:
    """Horizontal bars (a ranking): label on the left, value at the bar's end."""
    row, label_w, value_w = 24, 170, 70
    height = TOP + row * max(1, len(bars)) + 10
    if not bars or not any(value > 0 for _, value in bars):
        return _empty(title, width, max(height, 80), empty_message)
    top_value = max(value for _, value in bars)
    plot_w = width - label_w - value_w
    parts = [_open(title, width, height, "hbar", len(bars))]
    for index, (label, value) in enumerate(bars):
        y = TOP + row * index
        short = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026"
        bar_w = plot_w * max(0.0, value) / top_value if top_value > 0 else 0
        parts.append(_text(label_w - 8, y + 15, short, anchor="end"))
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w:.1f}" height="{row - 8}" fill="{color}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        parts.append(_text(label_w + bar_w + 6, y + 15, fmt(value), anchor="start"))
    parts.append("</svg>")
    return mark_safe("".join(parts))
