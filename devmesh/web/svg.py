"""Small pictures drawn on the server as inline SVG: error sparklines and a service's
dependency neighbourhood.

Why server-side SVG: no chart library to vendor or load, nothing for the phone to compute,
and the picture works with scripts off. Every label is escaped; numbers are formatted by
this module, so nothing from a log line reaches the markup unescaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from devmesh_core.graph.base import Neighbourhood


def sparkline(
    values: Sequence[int], *, width: int = 120, height: int = 28, label: str = ""
) -> Markup:
    """A polyline of ``values`` (oldest first) scaled to the box, with the last point
    marked; an all-zero series is a flat line at the bottom."""
    n = len(values)
    peak = max(values, default=0)
    pad = 2.0
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    points = []
    for i, value in enumerate(values):
        x = pad + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)
        y = pad + inner_h - (inner_h * value / peak if peak else 0.0)
        points.append((x, y))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    last = points[-1] if points else (pad, pad + inner_h)
    cls = "spark hot" if values and values[-1] > 0 else "spark"
    title = escape(label or f"errors per bucket: {', '.join(str(v) for v in values)}")
    return Markup(
        f'<svg class="{cls}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{title}"><title>{title}</title>'
        f'<polyline points="{path}" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        f'<circle cx="{last[0]:.1f}" cy="{last[1]:.1f}" r="2" fill="currentColor"/></svg>'
    )


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def neighbourhood_svg(nb: Neighbourhood, *, width: int = 360) -> Markup:
    """The service in the middle, what it depends on to the right, what depends on it to
    the left, its hosts underneath. Edges show the dependency's confidence."""
    left = [d.service for d in nb.dependents][:6]
    right = [d.service for d in nb.depends_on][:6]
    conf_left = [d.confidence for d in nb.dependents][:6]
    conf_right = [d.confidence for d in nb.depends_on][:6]
    hosts = list(nb.hosts)[:4]
    rows = max(len(left), len(right), 1)
    row_h = 34
    top = 24
    height = top + rows * row_h + (40 if hosts else 10)
    box_w, box_h = 104, 24
    cx, cy = width / 2, top + rows * row_h / 2
    parts: list[str] = []

    def node(x: float, y: float, text: str, cls: str) -> None:
        parts.append(
            f'<g class="node {cls}"><rect x="{x - box_w / 2:.1f}" y="{y - box_h / 2:.1f}" '
            f'width="{box_w}" height="{box_h}" rx="5"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">'
            f"<title>{escape(text)}</title>{escape(_short(text))}</text></g>"
        )

    def column(names: list[str], confs: list[float], x: float, towards_centre: bool) -> None:
        for i, name in enumerate(names):
            y = top + row_h * (i + 0.5) + (rows - len(names)) * row_h / 2
            x1, x2 = (
                (x + box_w / 2, cx - box_w / 2)
                if towards_centre
                else (cx + box_w / 2, x - box_w / 2)
            )
            parts.append(
                f'<line class="edge" x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{cy:.1f}" '
                f'marker-end="url(#arrow)"><title>confidence {confs[i]:.2f}</title></line>'
            )
            node(x, y, name, "dep")

    parts.append(
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="currentColor"/></marker>'
        "</defs>"
    )
    for x, text in ((box_w / 2 + 4, "depend on it"), (width - box_w / 2 - 4, "it depends on")):
        parts.append(f'<text class="caption" x="{x:.1f}" y="14" text-anchor="middle">{text}</text>')
    column(left, conf_left, box_w / 2 + 4, towards_centre=True)
    column(right, conf_right, width - box_w / 2 - 4, towards_centre=False)
    node(cx, cy, nb.service, "centre")
    if hosts:
        hy = top + rows * row_h + 22
        step = width / (len(hosts) + 1)
        for i, host in enumerate(hosts):
            hx = step * (i + 1)
            parts.append(
                f'<line class="edge runs" x1="{cx:.1f}" y1="{cy + box_h / 2:.1f}" '
                f'x2="{hx:.1f}" y2="{hy - 10:.1f}"/>'
            )
            parts.append(
                f'<text class="host" x="{hx:.1f}" y="{hy + 4:.1f}" text-anchor="middle">'
                f"{escape(_short(host, 20))}</text>"
            )
    label = escape(f"dependencies of {nb.service}")
    return Markup(
        f'<svg class="graph" viewBox="0 0 {width} {height:.0f}" role="img" aria-label="{label}">'
        + "".join(parts)
        + "</svg>"
    )
