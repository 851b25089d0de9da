"""The numbers behind the inline figures (templates/figures.svg.j2 draws them) and the PNG thumbnails.

No plotting library and no scripts: each figure is a small SVG whose coordinates are computed here.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from augdag.tasks import STAGES, UPSTREAM

from .status import secs

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
STATUS_FILL = {"ran": ("#e6f4ea", "#2ca02c"), "off": ("#f1f1f1", "#999"), "missing": ("#fff", "#d62728"),
               "failed or incomplete": ("#f8d7da", "#c62828"), "failed": ("#f8d7da", "#c62828"),
               "this page": ("#e8f0fb", "#1f5fa8")}


def png(arr: np.ndarray) -> str:
    """An image array as a data: URI (the page's CSP allows images from data: only)."""
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def line_chart(rows: list[dict], series: list[str], label: str, ymax: float | None = None) -> dict | str:
    """A line chart over `step`, one line per series; "no data" when there is nothing to draw."""
    rows = [r for r in rows if r.get("step") not in (None, "")]
    series = [k for k in series if rows and k in rows[0]]
    if not rows or not series:
        return "no data"
    w, h, pad = 520, 220, 36
    val = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None
    steps = [float(r["step"]) for r in rows]
    top = ymax or max((v for r in rows for k in series if (v := val(r, k)) is not None), default=1.0) or 1.0
    sx = lambda s: pad + (w - 2 * pad) * (s - steps[0]) / max(steps[-1] - steps[0], 1)
    sy = lambda v: h - pad - (h - 2 * pad) * v / top
    lines = [{"name": k, "color": PALETTE[i % len(PALETTE)],
              "points": [(sx(s), sy(v)) for s, r in zip(steps, rows) if (v := val(r, k)) is not None]}
             for i, k in enumerate(series)]
    return {"w": w, "h": h, "pad": pad, "label": label, "top": top, "first": int(steps[0]), "last": int(steps[-1]),
            "lines": lines}


def curve_chart(rows: list[dict]) -> dict | str:
    """The training curve (DVCLive's points, augdag.tracking.read_curve)."""
    if not rows:
        return "no training curve"
    return line_chart(rows, ["train_loss", "val_loss", "val_accuracy"], "training curve")


def histogram(kept: list[float], rejected: list[float], title: str, bins: int = 20) -> dict | None:
    """A stacked histogram of one score (kept blue, rejected red); None when there are no values."""
    vals = kept + rejected
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if hi == lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hk = np.histogram(kept, edges)[0]
    hr = np.histogram(rejected, edges)[0]
    top = max(int((hk + hr).max()), 1)
    w, h, pad = 260, 120, 22
    bw = (w - 2 * pad) / bins
    bars = []
    for i in range(bins):
        yk = (h - 2 * pad) * hk[i] / top
        yr = (h - 2 * pad) * hr[i] / top
        bars.append({"x": pad + i * bw, "kept_y": h - pad - yk, "kept_h": yk, "rejected_y": h - pad - yk - yr,
                     "rejected_h": yr})
    return {"w": w, "h": h, "pad": pad, "title": title, "n": len(vals), "bar_w": bw - 1, "bars": bars, "lo": lo,
            "hi": hi}


def _layers() -> dict[str, int]:
    depth: dict[str, int] = {}
    for s in STAGES:  # STAGES is in topological order
        depth[s] = 1 + max((depth[u] for u in UPSTREAM[s]), default=-1)
    return depth


def dag(status: dict[str, tuple[str, str]], timing: dict[str, float | None]) -> dict:
    """The stage graph (STAGES / UPSTREAM) laid out in columns by depth; each box: name, status, time."""
    depth = _layers()
    cols: dict[int, list[str]] = {}
    for s in STAGES:
        cols.setdefault(depth[s], []).append(s)
    bw, bh, gx, gy, pad = 112, 58, 22, 12, 8
    rows = max(len(v) for v in cols.values())
    w = pad * 2 + len(cols) * (bw + gx) - gx
    h = pad * 2 + rows * (bh + gy) - gy
    pos = {}
    for c, names in cols.items():
        off = (rows - len(names)) * (bh + gy) / 2
        for i, s in enumerate(names):
            pos[s] = (pad + c * (bw + gx), pad + off + i * (bh + gy))
    edges = []
    for s in STAGES:
        for u in UPSTREAM[s]:
            (x1, y1), (x2, y2) = pos[u], pos[s]
            x1, y1, y2 = x1 + bw, y1 + bh / 2, y2 + bh / 2
            edges.append({"src": u, "dst": s, "path": f"M{x1:.0f},{y1:.0f} C{x1 + gx / 2:.0f},{y1:.0f} "
                                                      f"{x2 - gx / 2:.0f},{y2:.0f} {x2 - 1:.0f},{y2:.0f}"})
    nodes = []
    for s in STAGES:
        st, note = status[s]
        fill, stroke = STATUS_FILL[st]
        nodes.append({"stage": s, "status": st, "tip": f"{s}: {st}" + (f" ({note})" if note else ""),
                      "x": pos[s][0], "y": pos[s][1], "center": pos[s][0] + bw / 2, "fill": fill, "stroke": stroke,
                      "time": secs(timing[s]) if timing.get(s) is not None else ""})
    return {"w": w, "h": h, "box_w": bw, "box_h": bh, "edges": edges, "nodes": nodes}
