"""Charts drawn on the server as SVG: no scripts, no CDN, readable by screen readers."""

from __future__ import annotations

from markupsafe import Markup, escape

PALETTE = ("#8a1c1c", "#24384f", "#1f6b3a", "#b26a00", "#6b4e16", "#5f6368")


def _svg(width: int, height: int, title: str, body: str, extra: str = "") -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" class="chart{extra}"><title>{escape(title)}</title>{body}</svg>'
    )


def funnel(rows: list[dict], title: str = "Funnel") -> Markup:
    """The funnel twice: wide for desktops, narrow for phones (the CSS shows one), so text stays legible."""
    # An SVG's text scales with it: a 720-wide chart on a 390-pixel phone drew 6-pixel labels.
    return _funnel_wide(rows, title) + _funnel_narrow(rows, title)


def _funnel_narrow(rows: list[dict], title: str) -> Markup:
    """A label line over each bar, in a viewBox about a phone's width."""
    width, bar_h, line = 340, 14, 20
    top = max([row["count"] for row in rows] + [1])
    parts = []
    for index, row in enumerate(rows):
        y = 4 + index * (line + bar_h + 12)
        length = (width - 2) * row["count"] / top
        parts.append(
            f'<text x="0" y="{y + 14}" class="chart__label">{escape(row["label"])}</text>'
            f'<text x="{width}" y="{y + 14}" text-anchor="end" class="chart__value">'
            f'{row["count"]:,} · {row["of_first"] * 100:.1f}%</text>'
            f'<rect x="0" y="{y + line}" width="{max(length, 1):.1f}" height="{bar_h}" fill="{PALETTE[0]}" '
            f'opacity="{1 - index * 0.13:.2f}"/>')
    height = 4 + len(rows) * (line + bar_h + 12)
    return _svg(width, height, title, "".join(parts), " chart--narrow")


def _funnel_wide(rows: list[dict], title: str) -> Markup:
    """Horizontal bars, one per step, labelled with the count and the share of the first step."""
    width, bar_h, gap, label_w = 720, 30, 14, 150
    height = len(rows) * (bar_h + gap) + gap
    top = max([row["count"] for row in rows] + [1])
    parts = []
    for index, row in enumerate(rows):
        y = gap + index * (bar_h + gap)
        length = (width - label_w - 150) * row["count"] / top
        parts.append(
            f'<text x="{label_w - 10}" y="{y + bar_h * 0.68:.1f}" text-anchor="end" class="chart__label">{escape(row["label"])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{max(length, 1):.1f}" height="{bar_h}" fill="{PALETTE[0]}" opacity="{1 - index * 0.13:.2f}"/>'
            f'<text x="{label_w + max(length, 1) + 8:.1f}" y="{y + bar_h * 0.68:.1f}" class="chart__value">'
            f'{row["count"]:,} · {row["of_first"] * 100:.1f}%</text>'
        )
    return _svg(width, height, title, "".join(parts), " chart--wide")


def intervals(rows: list[dict], metric: str, label: str, title: str) -> Markup:
    """Each arm's rate of ``metric`` as a dot on its 95% Wilson interval, on one shared scale."""
    width, row_h, left, right = 340, 44, 4, 4
    cells = [next(cell for cell in row["steps"] if cell["step"] == metric) for row in rows]
    top = min(1.0, max([cell["ci_high"] for cell in cells] + [0.01]) * 1.1)
    scale = (width - left - right) / top
    parts = [f'<text x="{left}" y="14" class="chart__tick">0%</text>',
             f'<text x="{width - right}" y="14" text-anchor="end" class="chart__tick">{top * 100:.1f}% {escape(label)}</text>']
    for index, (row, cell) in enumerate(zip(rows, cells)):
        y = 24 + index * row_h
        low, high, rate = (left + cell[name] * scale for name in ("ci_low", "ci_high", "rate"))
        colour = PALETTE[1] if row["is_control"] else PALETTE[0]
        parts.append(
            f'<text x="{left}" y="{y + 12}" class="chart__label">{escape(row["variant"])}</text>'
            f'<text x="{width - right}" y="{y + 12}" text-anchor="end" class="chart__value">{cell["rate"] * 100:.1f}%'
            f' [{cell["ci_low"] * 100:.1f}–{cell["ci_high"] * 100:.1f}]</text>'
            f'<line x1="{low:.1f}" y1="{y + 26}" x2="{high:.1f}" y2="{y + 26}" stroke="{colour}" stroke-width="3"/>'
            f'<line x1="{low:.1f}" y1="{y + 20}" x2="{low:.1f}" y2="{y + 32}" stroke="{colour}" stroke-width="2"/>'
            f'<line x1="{high:.1f}" y1="{y + 20}" x2="{high:.1f}" y2="{y + 32}" stroke="{colour}" stroke-width="2"/>'
            f'<circle cx="{rate:.1f}" cy="{y + 26}" r="5" fill="{colour}"/>')
    return _svg(width, 24 + len(rows) * row_h, title, "".join(parts), " chart--intervals")


def lines(rows: list[dict], series: list[str], title: str = "Daily activity") -> Markup:
    """One polyline per series over the days of ``rows``, with axes and a legend."""
    width, height, left, right, top, bottom = 720, 260, 44, 12, 14, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([row[name] for row in rows for name in series] + [1])
    step = plot_w / max(len(rows) - 1, 1)
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="chart__axis"/>',
             f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="chart__tick">{peak:,}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="chart__tick">0</text>']
    for index in (0, len(rows) - 1) if rows else ():
        anchor = "start" if index == 0 else "end"
        parts.append(f'<text x="{left + index * step:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" '
                     f'class="chart__tick">{escape(rows[index]["day"])}</text>')
    for number, name in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        points = " ".join(f"{left + i * step:.1f},{top + plot_h - plot_h * row[name] / peak:.1f}"
                          for i, row in enumerate(rows))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        x = left + number * 118
        parts.append(f'<rect x="{x}" y="{height - 18}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{height - 9}" class="chart__tick">{escape(name.replace("_", " "))}</text>')
    return _svg(width, height, title, "".join(parts))
