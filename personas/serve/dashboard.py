"""The dashboard at ``GET /``: recent answers with their persona score, flag and judge verdict, and the flag rate
over time, rendered on the server (the Jinja2 template ``templates/dashboard.html.j2``, autoescaped: every prompt
and answer is model- or user-written text and is shown as text, never as markup). No script: the page refreshes
itself every few seconds; ``?flagged=1`` shows the flagged answers only. The plot is an inline SVG polyline of the
flag rate in equal spans of time (`personas.serve.record.Recorder.flag_rate_series`)."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

__all__ = ["render_dashboard"]

PLOT_WIDTH, PLOT_HEIGHT, PLOT_PAD = 640, 160, 20


@lru_cache(maxsize=1)
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("personas.serve", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("dashboard.html.j2")


def _plot(series: list[dict[str, Any]]) -> dict[str, Any]:
    inner_w, inner_h = PLOT_WIDTH - 2 * PLOT_PAD, PLOT_HEIGHT - 2 * PLOT_PAD
    dots = []
    for i, b in enumerate(series):
        if b["rate"] is None:
            continue
        x = PLOT_PAD + (inner_w * (i + 0.5) / len(series))
        y = PLOT_PAD + inner_h * (1.0 - b["rate"])
        stamp = time.strftime("%H:%M:%S", time.localtime(b["start"]))
        dots.append({"x": round(x, 1), "y": round(y, 1),
                     "label": f"from {stamp}: {b['flagged']} of {b['n']} flagged ({b['rate']:.2f})"})
    return {"width": PLOT_WIDTH, "height": PLOT_HEIGHT, "pad": PLOT_PAD, "dots": dots,
            "points": " ".join(f"{d['x']},{d['y']}" for d in dots)}


def render_dashboard(state: Any, *, flagged_only: bool = False, limit: int = 200, refresh: int = 5) -> str:
    """The dashboard's HTML for the server ``state`` (`personas.serve.app.ServerState`)."""
    rec = state.recorder
    rows = []
    for row in rec.snapshot(flagged_only=flagged_only, limit=limit):
        rows.append({**row, "time_text": time.strftime("%H:%M:%S", time.localtime(row["time"])),
                     "review": row.get("review")})
    series = rec.flag_rate_series()
    monitor = state.monitor
    return _template().render(
        model=state.served_name, monitor=monitor.source if monitor is not None else None,
        threshold=monitor.threshold if monitor is not None else None,
        threshold_source=monitor.threshold_source if monitor is not None else None,
        calibration=monitor.calibration if monitor is not None else None, n_answers=rec.n_answers,
        n_flagged=rec.n_flagged, judge=rec.cascade.stats() if rec.cascade is not None else None, rows=rows,
        series=series, plot=_plot(series), flagged_only=flagged_only, refresh=refresh,
    )
