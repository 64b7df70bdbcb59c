"""Charts drawn on the server as SVG: no scripts, no CDN, readable by screen readers."""

from __future__ import annotations

from markupsafe import Markup, escape

PALETTE = ("#8a1c1c", "#24384f", "#1f6b3a", "#b26a00", "#6b4e16", "#5f6368")


def _svg(width: int, height: int, title: str, body: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" class="chart"><title>{escape(title)}</title>{body}</svg>'
    )


def funnel(rows: list[dict], title: str = "Funnel") -> Markup:
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
    return _svg(width, height, title, "".join(parts))


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
