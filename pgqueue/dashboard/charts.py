"""Charts drawn on the server as SVG: no script, nothing to download, nothing to trust.

Each chart is a fixed-size SVG scaled by CSS; colours come from the stylesheet through class
names (`series-0`, `series-1`, ..., or a series' own name), so that the Content-Security-Policy
needs no inline style. Every piece of text is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from markupsafe import Markup, escape

WIDTH = 600
HEIGHT = 160
LEFT = 44  # room for the y axis labels
BOTTOM = 18  # room for the x axis labels
TOP = 8
SECONDS_SHOWN_UNDER = 600  # x axes spanning less than this many seconds label the seconds


def _number(value: float, unit: str) -> str:
    if unit == "s":
        if value >= 1:
            return f"{value:.3g} s"
        return f"{value * 1000:.3g} ms"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _frame(x_labels: Sequence[datetime], top: float, unit: str, title: str) -> list[str]:
    plot_h = HEIGHT - BOTTOM - TOP
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/>',
        f'<text class="label" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(_number(top, unit))}</text>",
        f'<text class="label" x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    if x_labels:
        n = len(x_labels)
        # Minutes alone would read "10:05 10:05 10:05" on a span of a few minutes.
        short = (x_labels[-1] - x_labels[0]).total_seconds() < SECONDS_SHOWN_UNDER
        shape = "%H:%M:%S" if short else "%H:%M"
        for index in sorted({0, n // 2, n - 1}):
            x = _x(index, n)
            anchor = "start" if index == 0 else "end" if index == n - 1 else "middle"
            parts.append(
                f'<text class="label" x="{x:.1f}" y="{HEIGHT - 4}" text-anchor="{anchor}">'
                f"{escape(x_labels[index].strftime(shape))}</text>"
            )
    return parts


def _x(index: int, count: int) -> float:
    span = WIDTH - LEFT - 4
    return LEFT + 2 + (span * index / max(count - 1, 1))


def _y(value: float, top: float) -> float:
    plot_h = HEIGHT - BOTTOM - TOP
    return TOP + plot_h - (plot_h * value / top if top else 0)


def _top(values: Sequence[float]) -> float:
    highest = max(values, default=0.0)
    return highest * 1.1 if highest > 0 else 1.0


def lines(
    x_labels: Sequence[datetime],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    unit: str = "",
) -> Markup:
    """A line per series (None: no point); each path has the class `line series-<name>`."""
    values = [v for points in series.values() for v in points if v is not None]
    top = _top(values)
    parts = _frame(x_labels, top, unit, title)
    n = len(x_labels)
    for name, points in series.items():
        path: list[str] = []
        pen_up = True
        for index, value in enumerate(points):
            if value is None:
                pen_up = True
                continue
            command = "M" if pen_up else "L"
            path.append(f"{command}{_x(index, n):.1f},{_y(value, top):.1f}")
            pen_up = False
        if path:
            parts.append(f'<path class="line series-{escape(name)}" d="{" ".join(path)}"/>')
        # A point with no neighbour draws no line: mark it.
        for index, value in enumerate(points):
            before = points[index - 1] if index > 0 else None
            after = points[index + 1] if index + 1 < len(points) else None
            if value is not None and before is None and after is None:
                parts.append(
                    f'<circle class="dot series-{escape(name)}" cx="{_x(index, n):.1f}" '
                    f'cy="{_y(value, top):.1f}" r="2.5"/>'
                )
    if not values:
        parts.append(_empty())
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bars(
    x_labels: Sequence[datetime],
    series: Mapping[str, Sequence[int]],
    *,
    title: str,
) -> Markup:
    """One bar per x, its series stacked in order; each rect has the class
    `bar series-<name>` and a title giving the count."""
    n = len(x_labels)
    totals = [sum(points[i] for points in series.values()) for i in range(n)]
    top = _top([float(t) for t in totals])
    parts = _frame(x_labels, top, "", title)
    width = max((WIDTH - LEFT - 4) / max(n, 1) - 1, 1)
    for index in range(n):
        base = 0.0
        x = _x(index, n) - width / 2
        for name, points in series.items():
            value = points[index]
            if not value:
                continue
            y_top = _y(base + value, top)
            height = _y(base, top) - y_top
            parts.append(
                f'<rect class="bar series-{escape(name)}" x="{x:.1f}" y="{y_top:.1f}" '
                f'width="{width:.1f}" height="{max(height, 0.5):.1f}">'
                f"<title>{escape(x_labels[index].strftime('%H:%M'))} {escape(name)}: "
                f"{value}</title></rect>"
            )
            base += value
    if not any(totals):
        parts.append(_empty())
    parts.append("</svg>")
    return Markup("".join(parts))


def _empty() -> str:
    x = (LEFT + WIDTH) / 2
    y = (HEIGHT - BOTTOM) / 2
    return f'<text class="empty" x="{x:.0f}" y="{y:.0f}" text-anchor="middle">no data yet</text>'
