"""A small SVG writer for laid-out diagrams: boxes of a few shapes, polyline edges, labels.

Why hand-written: the diagrams Concordia draws have a layout known before drawing (rows
are a saga's stages, compensation runs back up beside them), so a general layout engine
(Graphviz, or grandalf, the pure-Python Sugiyama layout on PyPI) would only rediscover
it, while its edge routing would still leave the drawing to us; and Graphviz is a
system binary a CI image or a laptop may not have. This module only draws what a layout
module placed; text is escaped, and nothing of a definition reaches the SVG unescaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

Shape = Literal["round", "box", "hexagon", "parallelogram", "circle", "stadium"]

LINE_HEIGHT = 15
CHAR_WIDTH = 6.6  # of the 11 px monospace-ish sans used for the lines under a title
FONT = "font-family:DejaVu Sans,Helvetica,Arial,sans-serif"


@dataclass(frozen=True, slots=True)
class Style:
    fill: str = "#ffffff"
    stroke: str = "#444444"
    width: float = 1.2
    dash: str = ""
    text: str = "#111111"


@dataclass(slots=True)
class Box:
    id: str
    x: float
    y: float
    w: float
    h: float
    shape: Shape
    title: str
    lines: tuple[str, ...] = ()
    style: Style = field(default_factory=Style)
    tooltip: str = ""
    css_class: str = ""  # for pages that style or find parts of a drawing

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass(slots=True)
class Line:
    points: list[tuple[float, float]]
    label: str = ""
    label_at: tuple[float, float] | None = None
    style: Style = field(default_factory=Style)
    curve: bool = False  # draw a smooth curve through the points (for loops and lanes)
    css_class: str = ""


@dataclass
class Drawing:
    width: float
    height: float
    title: str
    boxes: list[Box] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    legend: list[tuple[str, Style]] = field(default_factory=list)


def box_height(lines: int) -> float:
    return 26 + LINE_HEIGHT * lines


def fit(text: str, width: float) -> str:
    """``text`` cut to what fits in ``width`` pixels of the small font."""
    room = max(int(width / CHAR_WIDTH), 4)
    return text if len(text) <= room else text[: room - 1] + "…"


def render(drawing: Drawing) -> str:
    """The drawing as a standalone SVG document."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{drawing.width:.0f}" '
           f'height="{drawing.height:.0f}" viewBox="0 0 {drawing.width:.0f} '
           f'{drawing.height:.0f}" role="img" aria-label={quoteattr(drawing.title)}>',
           f"<title>{escape(drawing.title)}</title>",
           # Arrowheads sized in the drawing's units, not the line's: a bold line (the
           # path a run took) keeps the same head as a thin one.
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
           'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
           '<path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>',
           '<rect width="100%" height="100%" fill="#ffffff"/>']
    for line in drawing.lines:
        out.append(_line(line))
    for box in drawing.boxes:
        out.append(_box(box))
    for line in drawing.lines:
        if line.label:
            out.append(_label(line))
    y = drawing.height - 14.0
    x = 12.0
    for text, style in drawing.legend:
        out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 26:.1f}" y2="{y:.1f}" '
                   f'{_stroke(style)} marker-end="url(#arrow)"/>')
        out.append(f'<text x="{x + 32:.1f}" y="{y + 4:.1f}" style="{FONT};font-size:11px" '
                   f'fill="#333333">{escape(text)}</text>')
        x += 44 + CHAR_WIDTH * len(text)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _stroke(style: Style) -> str:
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    return f'fill="none" stroke="{style.stroke}" stroke-width="{style.width}"{dash}'


def _line(line: Line) -> str:
    pts = line.points
    if line.curve and len(pts) >= 3:
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f} " + " ".join(
            f"Q{pts[i][0]:.1f},{pts[i][1]:.1f} {pts[i + 1][0]:.1f},{pts[i + 1][1]:.1f}"
            for i in range(1, len(pts) - 1, 2))
    else:
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    css = f" class={quoteattr(line.css_class)}" if line.css_class else ""
    return f'<path d="{d}"{css} {_stroke(line.style)} marker-end="url(#arrow)"/>'


def _label(line: Line) -> str:
    x, y = line.label_at or _middle(line.points)
    width = CHAR_WIDTH * len(line.label) + 6
    return (f'<rect x="{x - width / 2:.1f}" y="{y - 8:.1f}" width="{width:.1f}" height="15" '
            f'rx="3" fill="#ffffff" fill-opacity="0.9"/>'
            f'<text x="{x:.1f}" y="{y + 3.5:.1f}" text-anchor="middle" '
            f'style="{FONT};font-size:11px" fill="{line.style.stroke}">'
            f"{escape(line.label)}</text>")


def _middle(points: list[tuple[float, float]]) -> tuple[float, float]:
    if len(points) == 2:
        (x1, y1), (x2, y2) = points
        return (x1 + x2) / 2, (y1 + y2) / 2
    return points[len(points) // 2]


def _box(box: Box) -> str:
    s = box.style
    attrs = f'fill="{s.fill}" stroke="{s.stroke}" stroke-width="{s.width}"' + (
        f' stroke-dasharray="{s.dash}"' if s.dash else "")
    x, y, w, h = box.x, box.y, box.w, box.h
    if box.shape == "round":
        shape = f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="8" {attrs}/>'
    elif box.shape == "box":
        shape = f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" {attrs}/>'
    elif box.shape == "stadium":
        shape = (f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                 f'rx="{h / 2:.1f}" {attrs}/>')
    elif box.shape == "circle":
        shape = (f'<ellipse cx="{box.cx:.1f}" cy="{box.cy:.1f}" rx="{w / 2:.1f}" '
                 f'ry="{h / 2:.1f}" {attrs}/>')
    elif box.shape == "hexagon":
        d = 14.0
        pts = [(x, box.cy), (x + d, y), (x + w - d, y), (x + w, box.cy), (x + w - d, y + h),
               (x + d, y + h)]
        shape = f'<polygon points="{_points(pts)}" {attrs}/>'
    else:  # parallelogram
        d = 12.0
        pts = [(x + d, y), (x + w, y), (x + w - d, y + h), (x, y + h)]
        shape = f'<polygon points="{_points(pts)}" {attrs}/>'
    text = [f'<text x="{box.cx:.1f}" y="{y + 18:.1f}" text-anchor="middle" '
            f'style="{FONT};font-size:13px;font-weight:bold" fill="{s.text}">'
            f"{escape(fit(box.title, w - 20))}</text>"]
    for i, line in enumerate(box.lines):
        text.append(f'<text x="{box.cx:.1f}" y="{y + 34 + i * LINE_HEIGHT:.1f}" '
                    f'text-anchor="middle" style="{FONT};font-size:11px" fill="{s.text}">'
                    f"{escape(fit(line, w - 24))}</text>")
    tip = f"<title>{escape(box.tooltip)}</title>" if box.tooltip else ""
    css = f" class={quoteattr(box.css_class)}" if box.css_class else ""
    return f'<g id={quoteattr(box.id)}{css}>{tip}{shape}{"".join(text)}</g>'


def _points(pts: list[tuple[float, float]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
