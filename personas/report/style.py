"""The look shared by every figure of `personas.report`: one palette, one axes style, labels that never overlap.

* `PALETTE`: the colours of the two directions and of what is not significant, used by every figure, the HTML
  report and the examples, so red always means "the misaligned side" (higher in misaligned responses, rose after
  fine-tuning) and blue "the aligned side"; `SERIES_COLORS` for lines that are not a direction.
* `place_labels`: text labels on points, each moved around its point until it overlaps no other label, the legend
  or the axes' edge, and left out when no place is free (two feature ids printed on top of each other read as one
  number).
* `make_figure`: a `Figure` (no pyplot) that shows itself as an image in Jupyter without ``%matplotlib inline``;
  every figure of `personas.report.plots` is one.
* `figure_to_bytes` / `figure_to_base64`: a figure as PNG or SVG, without pyplot, for files and self-contained HTML.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from personas.errors import PersonasError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ALIGNED_COLOR", "MISALIGNED_COLOR", "NEUTRAL_COLOR", "PALETTE", "SERIES_COLORS", "figure_to_base64",
           "figure_to_bytes", "make_figure", "place_labels"]

#: The one palette of directions, used by every figure, the HTML report and the examples: ``misaligned`` (label 1,
#: higher in misaligned responses, rose after fine-tuning), ``aligned`` (label 0, the other way) and ``neutral``
#: (not significant, reference lines).
PALETTE: Mapping[str, str] = MappingProxyType({"misaligned": "#c0392b", "aligned": "#2874a6", "neutral": "#9aa5b1"})
MISALIGNED_COLOR = PALETTE["misaligned"]
ALIGNED_COLOR = PALETTE["aligned"]
NEUTRAL_COLOR = PALETTE["neutral"]
#: Colours of lines that are not a direction (scorers in a ROC plot, steered features): none is red or blue.
SERIES_COLORS = ("#27ae60", "#8e44ad", "#d68910", "#17a589", "#5d6d7e", "#a04000", "#1b2631", "#b7950b")
REFERENCE_COLOR = "#566573"


@functools.cache
def _figure_class() -> type:
    """`PersonasFigure`, made on first use so that matplotlib is imported only when a figure is drawn."""
    from matplotlib.figure import Figure

    class PersonasFigure(Figure):
        """A matplotlib `Figure` that shows itself as a PNG in Jupyter, with no ``%matplotlib inline``."""

        def _repr_png_(self) -> bytes:
            return figure_to_bytes(self, "png")

    PersonasFigure.__module__ = __name__  # found again by pickle through the module's __getattr__
    return PersonasFigure


def __getattr__(name: str) -> Any:
    if name == "PersonasFigure":
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_figure(figsize: tuple[float, float] = (6.4, 4.6), **kwargs: Any) -> Figure:
    """An empty figure (constrained layout, no pyplot) that displays itself in a notebook like personas' figures."""
    return _figure_class()(figsize=figsize, layout="constrained", **kwargs)


def new_figure(figsize: tuple[float, float], ax: Axes | None = None) -> tuple[Figure, Axes]:
    """A fresh figure with one axes, or the figure of ``ax`` when the caller passes axes to draw into."""
    if ax is not None:
        return ax.figure, ax
    fig = make_figure(figsize)
    return fig, fig.add_subplot()


def style_axes(ax: Axes) -> None:
    """The house style: no top or right spine, a light grid behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e8eb", linewidth=0.6)
    ax.set_axisbelow(True)


def table_column(table: Any, name: str, what: str) -> np.ndarray:
    """Column ``name`` of ``table`` as floats; an error that lists the columns when it is missing."""
    if name not in table.columns:
        raise PersonasError(
            f"{what} needs a {name!r} column; the table has {list(table.columns)}. "
            "Pass a Ranking from personas.rank_features / personas.rank, or name the column to use."
        )
    return np.asarray(table[name], dtype=np.float64)


def direction_colors(positive: np.ndarray) -> list[str]:
    """Red where ``positive`` (the misaligned side), blue elsewhere."""
    return [MISALIGNED_COLOR if p else ALIGNED_COLOR for p in positive]


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's parent, up to the Figure
        fig = fig.figure
    return fig


# Where a label may sit around its point, in points: right-above first, then around the point.
_LABEL_OFFSETS = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
                  (-4, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
                  (10, 9, "left", "bottom"), (-10, -9, "right", "top"))


def place_labels(ax: Axes, points: Sequence[tuple[float, float, str]], *, fontsize: float = 8) -> int:
    """Annotate ``(x, y, text)`` points in order, each at the first offset where its text overlaps no label placed
    before it, the axes' other texts, the legend or the axes' edge; a label with no free place is left out. Returns how many were placed.

    The figure's layout is settled first (a draw without rendering), so the boxes compared are the final ones.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _root_figure(ax)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [text.get_window_extent(renderer) for text in ax.texts]  # e.g. the volcano's "q = 0.05"
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(renderer))
    placed = 0
    for x, y, text in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        for dx, dy, ha, va in _LABEL_OFFSETS:
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                ha=ha, va=va, color="#1b2631", annotation_clip=True)
            label.set_in_layout(False)
            box = label.get_window_extent(renderer)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                placed += 1
                break
            label.remove()
    return placed


# ------------------------------------------------------------------------------------------------ export


def figure_to_bytes(fig: Figure, fmt: str = "png", *, dpi: int = 110) -> bytes:
    """The figure rendered as ``png`` or ``svg`` bytes (works without pyplot, under any backend)."""
    if fmt not in ("png", "svg"):
        raise PersonasError(f"figure format {fmt!r}; expected 'png' or 'svg'.")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()


def figure_to_base64(fig: Figure, fmt: str = "png", *, dpi: int = 110) -> str:
    """A ``data:`` URI of the figure, for self-contained HTML (``<img src="...">``)."""
    mime = "image/png" if fmt == "png" else "image/svg+xml"
    return f"data:{mime};base64," + base64.b64encode(figure_to_bytes(fig, fmt, dpi=dpi)).decode("ascii")
