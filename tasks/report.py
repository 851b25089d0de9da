"""Report: one self-contained HTML page (images, plots and the lineage index inlined; opens with no network).

Sections: the DAG with each stage's status and timing, the dataset, the quality gate (pass rates, score
histograms, kept and rejected grids), sample grids, training (curve, source weights), evaluation
(per-class accuracy, confusion matrix, robustness), the strategy comparison, and a lineage view (a
search box over an inline index of samples and their ancestors, with one small inline script).

Every part reads only what exists: a missing input renders "missing: run the X stage", a part that
cannot be read renders the error, and a report asked for before any run says so. The page is
deterministic for the same outputs (the flow and `dvc repro` write identical bytes), except the stage
timings when a run recorded them (`class="timing"` marks every place they appear).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from augdag.params import Params
from augdag.storage import MANIFEST, StageData, atomic_dir, read_json, read_manifest, try_read_json, write_text
from augdag.tasks import STAGES, UPSTREAM, out_dir

# The lineage index holds up to this many merged samples (taken round robin over the sources, so every
# branch is searchable), up to LINEAGE_REJECTED gate-rejected ones, and all their ancestors. A module
# constant, not a param: params.py has no key for it.
LINEAGE_SAMPLES = 400
LINEAGE_REJECTED = 50
ORIGIN = ["ingest", "traditional", "mix", "generative"]  # where a sample is produced (augdag.lineage's order)
TIMINGS = ("validation", "timings")  # data/validation/timings/<stage>.json: {"seconds", "ok", "error"}, if written

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "form-action 'none'; base-uri 'none'")

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}.grid img{image-rendering:pixelated;width:56px;height:56px;margin:2px;border:1px solid #ddd}
.missing{color:#a00}code{font-size:90%}figure{display:inline-block;margin:4px;text-align:center;font-size:11px}
nav a{margin-right:.8em}.left{text-align:left}.banner{padding:.6em 1em;border:1px solid #d62728;background:#fdecea}
.st-ran{color:#1a7f37}.st-off{color:#777}.st-missing{color:#a00}.st-failed{color:#fff;background:#c62828}
.st-page{color:#1f5fa8}td.cm{min-width:2.2em}img.thumb{image-rendering:pixelated;width:56px;height:56px;border:1px solid #ddd}
#lineage-out ul{list-style:none;padding-left:1.6em;border-left:2px solid #ddd;margin:.3em 0}
#lineage-out>ul{padding-left:0;border-left:none}.lin-node{margin:.4em 0}
.lin-card{display:flex;gap:.8em;align-items:flex-start}.lin-card div{font-size:13px}.lin-card .id{font-weight:bold}
.lin-params{font-family:monospace;font-size:12px;white-space:pre-wrap}"""

STATUS_CLASS = {"ran": "st-ran", "off": "st-off", "missing": "st-missing", "failed or incomplete": "st-failed",
                "failed": "st-failed", "this page": "st-page"}
STATUS_FILL = {"ran": ("#e6f4ea", "#2ca02c"), "off": ("#f1f1f1", "#999"), "missing": ("#fff", "#d62728"),
               "failed or incomplete": ("#f8d7da", "#c62828"), "failed": ("#f8d7da", "#c62828"),
               "this page": ("#e8f0fb", "#1f5fa8")}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _png(arr: np.ndarray) -> str:
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _missing(what: str) -> str:
    return f'<p class="missing">missing: {html.escape(what)}</p>'


def _section(sid: str, title: str, fn, *args) -> list[str]:
    """One section; an input that exists but cannot be read renders the error instead of breaking the page."""
    try:
        body = fn(*args)
    except Exception as err:  # noqa: BLE001: a broken part must not take the rest of the report with it
        body = [f'<p class="missing">could not render this part: {html.escape(type(err).__name__)}: '
                f'{html.escape(str(err))}</p>']
    return [f'<section id="{sid}"><h2>{html.escape(title)}</h2>', *body, "</section>"]


# ---------------------------------------------------------------------------------------------- plots

def _line_svg(rows: list[dict], series: list[str], label: str, ymax: float | None = None) -> str:
    """A small inline SVG line chart over `step` (no plotting library, no scripts)."""
    rows = [r for r in rows if r.get("step") not in (None, "")]
    series = [k for k in series if rows and k in rows[0]]
    if not rows or not series:
        return '<p class="missing">no data</p>'
    w, h, pad = 520, 220, 36
    val = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None  # noqa: E731
    steps = [float(r["step"]) for r in rows]
    top = ymax or max((v for r in rows for k in series if (v := val(r, k)) is not None), default=1.0) or 1.0
    sx = lambda s: pad + (w - 2 * pad) * (s - steps[0]) / max(steps[-1] - steps[0], 1)  # noqa: E731
    sy = lambda v: h - pad - (h - 2 * pad) * v / top  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(label)}">',
             f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="#999"/>',
             f'<text x="{pad}" y="{pad-8}" font-size="11">max {top:.3g}</text>',
             f'<text x="{pad}" y="{h-pad+14}" font-size="11">step {int(steps[0])}</text>',
             f'<text x="{w-pad}" y="{h-pad+14}" font-size="11" text-anchor="end">step {int(steps[-1])}</text>']
    for i, k in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = [(sx(s), sy(v)) for s, r in zip(steps, rows) if (v := val(r, k)) is not None]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>')
        if len(pts) <= 60:
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in pts)
        parts.append(f'<text x="{w-pad-130}" y="{pad+14*i}" font-size="11" fill="{color}">{html.escape(k)}</text>')
    return "".join(parts) + "</svg>"


def _curve_svg(rows: list[dict]) -> str:
    if not rows:
        return '<p class="missing">no training curve</p>'
    return _line_svg(rows, ["train_loss", "val_loss", "val_accuracy"], "training curve")


def _hist_svg(kept: list[float], rejected: list[float], title: str, bins: int = 20) -> str:
    """Stacked histogram (kept blue, rejected red) of one score, inline SVG."""
    vals = kept + rejected
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hk = np.histogram(kept, edges)[0]
    hr = np.histogram(rejected, edges)[0]
    top = max(int((hk + hr).max()), 1)
    w, h, pad = 260, 120, 22
    bw = (w - 2 * pad) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="12" font-size="11">{html.escape(title)} (n={len(vals)})</text>']
    for i in range(bins):
        x = pad + i * bw
        yk = (h - 2 * pad) * hk[i] / top
        yr = (h - 2 * pad) * hr[i] / top
        parts.append(f'<rect x="{x:.1f}" y="{h - pad - yk:.1f}" width="{bw - 1:.1f}" height="{yk:.1f}" fill="#1f77b4"/>')
        parts.append(f'<rect x="{x:.1f}" y="{h - pad - yk - yr:.1f}" width="{bw - 1:.1f}" height="{yr:.1f}" fill="#d62728"/>')
    parts.append(f'<text x="{pad}" y="{h - 6}" font-size="10">{lo:.3g}</text>'
                 f'<text x="{w - pad}" y="{h - 6}" font-size="10" text-anchor="end">{hi:.3g}</text></svg>')
    return "".join(parts)


def _grid(data: StageData, rows, n: int, with_params: bool = False, reason: bool = False,
          linked: frozenset = frozenset()) -> str:
    figs = []
    for _, r in rows.head(n).iterrows():
        cap = html.escape(r.sample_id)
        if r.sample_id in linked:
            cap = f'<a href="#sample={html.escape(_frag(r.sample_id))}">{cap}</a>'
        if with_params:
            q = json.loads(r.op_params or "{}")
            ops = ", ".join(o["op"] for o in q.get("ops", [])) or q.get("op") or ("latent" if "latent_seed" in q else "identity")
            cap += f"<br>{html.escape(ops)}"
        if reason:
            cap += f"<br><b>{html.escape(r.reason)}</b>"
        figs.append(f'<figure><img src="{_png(data.image(r))}" alt="{html.escape(r.sample_id)}"><figcaption>{cap}</figcaption></figure>')
    return f'<div class="grid">{"".join(figs)}</div>' if figs else '<p class="missing">no samples</p>'


def _frag(sample_id: str) -> str:
    """The URL fragment value of a sample id (what the lineage script's decodeURIComponent reads back)."""
    from urllib.parse import quote

    return quote(sample_id, safe="~-._!*'()")


# -------------------------------------------------------------------------------------- stages / DAG

def _leftovers(root: Path, stage: str) -> list[str]:
    """Hidden siblings atomic_dir leaves only when a write was interrupted (.NAME.tmp-PID, .NAME.old-PID)."""
    parent = out_dir(root, stage).parent
    if not parent.is_dir():
        return []
    return sorted(p.name for pat in (f".{stage}.tmp-*", f".{stage}.old-*") for p in parent.glob(pat))


def _timing(root: Path, stage: str, summary) -> tuple[float | None, str]:
    """Seconds a stage took, if any run recorded it: a `timings` mapping in its summary.json, else
    data/validation/timings/<stage>.json. (None, "") when neither exists."""
    t = summary.get("timings") if isinstance(summary, dict) else None
    if isinstance(t, dict):
        nums = {k: float(v) for k, v in t.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        total = nums.get("total", nums.get("seconds", sum(nums.values()) if nums else None))
        return total, ", ".join(f"{k} {_secs(v)}" for k, v in nums.items()) if len(nums) > 1 else ""
    rec = try_read_json(Path(root, "data", *TIMINGS, f"{stage}.json"))
    if isinstance(rec, dict) and isinstance(rec.get("seconds"), (int, float)):
        return float(rec["seconds"]), ""
    return None, ""


def _secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def stage_status(root: Path, stage: str) -> tuple[str, str]:
    """(status, note): ran | off | missing | failed or incomplete | failed | this page."""
    if stage == "report":
        return "this page", ""
    folder = out_dir(root, stage)
    left = _leftovers(root, stage)
    rec = try_read_json(Path(root, "data", *TIMINGS, f"{stage}.json"))
    if (folder / "summary.json").exists():
        if left:
            return "failed or incomplete", (f"an interrupted write left {left[0]}; what is shown is the last complete "
                                            "output")
        if isinstance(rec, dict) and rec.get("ok") is False:
            return "failed", f"the last run failed ({rec.get('error') or 'no message'}); what is shown is an earlier output"
        summary = try_read_json(folder / "summary.json")
        if summary is None:
            return "failed or incomplete", "its summary.json cannot be read"
        return ("off", "branch disabled in params (strategy)") if isinstance(summary, dict) and summary.get("enabled") is False \
            else ("ran", "")
    failed = isinstance(rec, dict) and rec.get("ok") is False
    if folder.exists() or left:
        why = f"an interrupted write left {left[0]}" if left else "its folder has no summary.json"
        return "failed or incomplete", f"{why}: the stage failed or was interrupted" + (
            f" ({rec.get('error') or 'no message'})" if failed else "") + "; rerun it"
    if failed:  # dvc repro removes a stage's outputs before running it
        return "failed", f"the last run failed ({rec.get('error') or 'no message'}); no output"
    return "missing", f"run the {stage} stage"


def _layers() -> dict[str, int]:
    depth: dict[str, int] = {}
    for s in STAGES:  # STAGES is in topological order
        depth[s] = 1 + max((depth[u] for u in UPSTREAM[s]), default=-1)
    return depth


def dag_svg(status: dict[str, tuple[str, str]], timing: dict[str, float | None]) -> str:
    """The stage graph (STAGES / UPSTREAM) as inline SVG; each box: name, status, time."""
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
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h:.0f}" width="100%" style="max-width:{w}px" '
             'role="img" aria-label="stage graph" id="dag-svg"><defs><marker id="dag-arrow" viewBox="0 0 8 8" refX="8" '
             'refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z" fill="#888"/></marker></defs>']
    for s in STAGES:
        for u in UPSTREAM[s]:
            (x1, y1), (x2, y2) = pos[u], pos[s]
            x1, y1, y2 = x1 + bw, y1 + bh / 2, y2 + bh / 2
            parts.append(f'<path class="dag-edge" data-from="{u}" data-to="{s}" d="M{x1:.0f},{y1:.0f} C{x1 + gx / 2:.0f},'
                         f'{y1:.0f} {x2 - gx / 2:.0f},{y2:.0f} {x2 - 1:.0f},{y2:.0f}" fill="none" stroke="#888" '
                         'marker-end="url(#dag-arrow)"/>')
    for s in STAGES:
        x, y = pos[s]
        st, note = status[s]
        fill, stroke = STATUS_FILL[st]
        dash = ' stroke-dasharray="4 3"' if st == "missing" else ""
        tip = f"{s}: {st}" + (f" ({note})" if note else "")
        parts.append(f'<g class="dag-node" data-stage="{s}" data-status="{html.escape(st)}"><title>{html.escape(tip)}</title>'
                     f'<rect x="{x}" y="{y:.0f}" width="{bw}" height="{bh}" rx="6" fill="{fill}" stroke="{stroke}" '
                     f'stroke-width="1.5"{dash}/>'
                     f'<text x="{x + bw / 2:.0f}" y="{y + 17:.0f}" font-size="12" font-weight="bold" text-anchor="middle">{s}</text>'
                     f'<text x="{x + bw / 2:.0f}" y="{y + 33:.0f}" font-size="10" text-anchor="middle" fill="{stroke}">'
                     f'{html.escape(st)}</text>'
                     f'<text class="timing" x="{x + bw / 2:.0f}" y="{y + 48:.0f}" font-size="10" text-anchor="middle" '
                     f'fill="#555">{_secs(timing.get(s))}</text></g>')
    return "".join(parts) + "</svg>"


def _stages(root: Path, status: dict, timing: dict, detail: dict) -> list[str]:
    out = [dag_svg(status, timing),
           "<p>Status per stage from its output folder: <b>ran</b> (summary.json written), <b>off</b> (branch disabled), "
           "<b>missing</b> (no output yet), <b>failed or incomplete</b> (a folder without summary.json, or a hidden "
           "<code>.NAME.tmp-*</code> sibling an interrupted write left). Times appear when the run recorded them.</p>",
           "<table id='stage-table'><tr><th>stage</th><th>status</th><th>time</th><th>summary</th></tr>"]
    for s in STAGES:
        st, note = status[s]
        summary = try_read_json(out_dir(root, s) / "summary.json") if s != "report" else None
        text = json.dumps(summary, sort_keys=True)
        cell = ("" if s == "report" else '<span class="missing">missing</span>' if summary is None
                else f"<code>{html.escape(text)}</code>" if len(text) <= 240
                else f"<details><summary><code>{html.escape(text[:160])}…</code></summary><code>{html.escape(text)}</code></details>")
        t = _secs(timing.get(s)) + (f" ({detail[s]})" if detail.get(s) else "")
        out.append(f"<tr data-stage='{s}'><th>{s}</th><td class='left' style='min-width:9em'><span class='{STATUS_CLASS[st]}'>{html.escape(st)}</span>"
                   f"{'<br><small>' + html.escape(note) + '</small>' if note else ''}</td>"
                   f"<td><span class='timing'>{html.escape(t)}</span></td><td class='left'>{cell}</td></tr>")
    out.append("</table>")
    return out


# ------------------------------------------------------------------------------------------ dataset

def _classes(root: Path) -> list[str] | None:
    c = read_json(out_dir(root, "ingest") / "classes.json")
    return list(c["classes"]) if c else None


def _dataset(root: Path, source: str) -> list[str]:
    folder = out_dir(root, "ingest")
    if not (folder / MANIFEST).exists():
        return [_missing("run the ingest stage")]
    data = StageData(folder)
    m = data.manifest
    cls = _classes(root) or [str(i) for i in range(int(m.label.max()) + 1)]
    splits = ("train", "val", "test")
    first = m.iloc[0]
    out = [f"<p><b>{len(cls)}</b> classes, <b>{len(m)}</b> images ({', '.join(f'{s} {int((m.split == s).sum())}' for s in splits)}), "
           f"{int(first.height)}×{int(first.width)}×{int(first.channels)}; <code>ingest.source</code>: "
           f"<code>{html.escape(source)}</code>.</p>",
           "<table id='dataset-table'><tr><th>#</th><th>class</th><th>example</th>" + "".join(f"<th>{s}</th>" for s in splits) + "</tr>"]
    for i, c in enumerate(cls):
        rows = m[m.label == i]
        pick = rows[rows.split == "train"] if (rows.split == "train").any() else rows
        img = (f'<img class="thumb" src="{_png(data.image(pick.iloc[0]))}" alt="{html.escape(str(pick.iloc[0].sample_id))}">'
               if len(pick) else "–")
        out.append(f"<tr><td>{i}</td><th class='left'>{html.escape(c)}</th><td>{img}</td>" +
                   "".join(f"<td>{int((rows.split == s).sum())}</td>" for s in splits) + "</tr>")
    out.append("</table>")
    return out


# -------------------------------------------------------------------------------------- quality gate

SCORE_NAMES = ("psnr", "ssim", "in_frame", "label_prob", "outlier_z")


def _quality(root: Path, n: int, linked: frozenset) -> list[str]:
    """Gate section: pass rate per branch and check, score histograms, kept and rejected grids."""
    folder = out_dir(root, "quality")
    summary = read_json(folder / "summary.json")
    if summary is None or not (folder / "manifest.parquet").exists():
        return [_missing("run the quality stage")]
    kept = read_manifest(folder)
    rej_path = folder / "rejected.parquet"
    rejected = read_manifest(folder, rej_path.name) if rej_path.exists() else None
    out = ['<table id="gate-table"><tr><th>branch</th><th>in</th><th>kept</th><th>rejected</th><th>pass rate</th>'
           '<th>rejected by check (filter mode)</th><th>mean scores</th></tr>']
    for branch, s in summary.items():
        rate = "–" if s.get("pass_rate") is None else f"{s['pass_rate']:.3f}"
        by = ", ".join(f"{k}: {v}" for k, v in (s.get("rejected_by") or {}).items()) or "–"
        means = ", ".join(f"{k} {v}" for k, v in (s.get("mean_scores") or {}).items()) or "–"
        out.append(f"<tr><th>{html.escape(branch)}</th><td>{s['in']}</td><td>{s['kept']}</td><td>{s['rejected']}</td>"
                   f"<td>{rate}</td><td style='text-align:left'>{html.escape(by)}</td>"
                   f"<td style='text-align:left'>{html.escape(means)}</td></tr>")
    out.append("</table><p>Histograms: kept in blue, rejected in red.</p>")
    for branch in summary:
        bk = kept[kept.branch == branch]
        br = rejected[rejected.branch == branch] if rejected is not None else kept.iloc[0:0]
        if not len(bk) + len(br):
            continue
        sk = [json.loads(x or "{}") for x in bk.scores]
        sr = [json.loads(x or "{}") for x in br.scores]
        svgs = [_hist_svg([d[k] for d in sk if k in d], [d[k] for d in sr if k in d], k) for k in SCORE_NAMES]
        out.append(f"<h3>{html.escape(branch)}: scores</h3><div>{''.join(x for x in svgs if x)}</div>")
        if not (out_dir(root, branch) / MANIFEST).exists():
            out.append(f"<p class='missing'>missing: the {html.escape(branch)} stage output (no images to show)</p>")
            continue
        data = StageData(out_dir(root, branch))
        by_id = data.manifest.set_index("sample_id", drop=False)
        out.append(f"<h4>{html.escape(branch)}: kept</h4>" +
                   _grid(data, by_id.loc[bk.sample_id.head(n)], n, True, linked=linked))
        if len(br):
            rows = by_id.loc[br.sample_id.head(n)].assign(reason=list(br.gate_reason.head(n)))
            out.append(f"<h4>{html.escape(branch)}: rejected</h4>" + _grid(data, rows, n, True, reason=True, linked=linked))
        else:
            out.append(f"<h4>{html.escape(branch)}: rejected</h4><p>none</p>")
    return out


def _samples(root: Path, n: int, linked: frozenset) -> list[str]:
    out = []
    for stage, title, params in (("ingest", "raw train", False), ("traditional", "traditional branch", True),
                                 ("mix", "mix branch", True), ("generative", "generative branch", True)):
        folder = out_dir(root, stage)
        out.append(f"<h3>{title}</h3>")
        if not (folder / MANIFEST).exists():
            out.append(_missing(f"run the {stage} stage"))
            continue
        data = StageData(folder)
        rows = data.manifest[data.manifest.split == "train"] if stage == "ingest" else data.manifest
        out.append(_grid(data, rows, n, with_params=params, linked=linked))
    return out


# ----------------------------------------------------------------------------- training / evaluation

def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _training(root: Path) -> list[str]:
    folder = out_dir(root, "finetune")
    summary = read_json(folder / "summary.json")
    if summary is None and not (folder / "curve.csv").exists():
        return [_missing("run the finetune stage")]
    out = []
    if summary:
        s = summary.get("sampling") or {}
        out.append(f"<p>{summary.get('steps')} steps on {summary.get('samples')} samples; sampling "
                   f"<b>{html.escape(str(s.get('mode', '–')))}</b>" +
                   (f", final source weights {html.escape(', '.join(f'{k} {v:.3f}' for k, v in s['final_weights'].items()))}"
                    if s.get("final_weights") else "") + ".</p>")
    out.append("<h3>Training curve</h3>")
    out.append(_curve_svg(_csv(folder / "curve.csv")) if (folder / "curve.csv").exists() else _missing("curve.csv (run the finetune stage)"))
    out.append("<h3>Source sampling weights</h3>")
    wpath = folder / "weights.csv"
    if wpath.exists():
        rows = _wide(_csv(wpath))
        keys = [k for k in (rows[0] if rows else {}) if k.startswith("w_")]
        out.append(_line_svg(rows, keys, "sampling weights", ymax=1.0) if keys else '<p class="missing">no weights recorded</p>')
        fb = [k for k in (rows[0] if rows else {}) if k.startswith("feedback_")]
        if fb and any(r.get(k) not in (None, "") for r in rows for k in fb):
            out.append("<table id='feedback-table'><tr><th>step</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys + fb) +
                       "</tr>" + "".join("<tr><td>" + html.escape(r["step"]) + "</td>" +
                                         "".join(f"<td>{_num(r.get(k))}</td>" for k in keys + fb) + "</tr>" for r in rows[:50]) +
                       "</table>")
    else:
        out.append(_missing("weights.csv (run the finetune stage)"))
    return out


def _wide(rows: list[dict]) -> list[dict]:
    """weights.csv in long form (step, source, weight, feedback) as one row per step: w_<source>, feedback_<source>."""
    if not rows or "source" not in rows[0]:
        return rows
    by: dict[str, dict] = {}
    for r in rows:
        d = by.setdefault(r["step"], {"step": r["step"]})
        d[f"w_{r['source']}"], d[f"feedback_{r['source']}"] = r.get("weight"), r.get("feedback")
    return list(by.values())


def _num(v) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "–"


def _shade(frac: float) -> str:
    return f"background:rgba(31,119,180,{0.08 + 0.8 * frac:.2f});color:{'#fff' if frac > 0.55 else '#222'}"


def _evaluation(root: Path) -> list[str]:
    folder = out_dir(root, "evaluate")
    metrics = read_json(folder / "metrics.json")
    if not metrics:
        return [_missing("run the evaluate stage")]
    out = [f"<p id='headline'>accuracy <b>{metrics['accuracy']:.4f}</b>, macro-F1 <b>{metrics['macro_f1']:.4f}</b> on "
           f"{metrics['n_test']} test images</p>"]
    per = metrics.get("per_class_accuracy") or {}
    order = [c for c in (_classes(root) or []) if c in per]
    per = {c: per[c] for c in order + [c for c in per if c not in order]}  # in class-index order
    out.append("<h3>Accuracy per class</h3><table id='class-accuracy'><tr><th>class</th><th>accuracy</th><th></th></tr>" + "".join(
        f"<tr><th class='left'>{html.escape(c)}</th><td>{a:.3f}</td><td style='width:160px'><div style='background:#1f77b4;"
        f"height:10px;width:{160 * a:.0f}px'></div></td></tr>" for c, a in per.items()) + "</table>")
    conf = read_json(folder / "confusion.json")
    if conf:
        mat = np.asarray(conf["matrix"], dtype=float)
        rows = np.maximum(mat.sum(1, keepdims=True), 1)
        head = "".join(f"<th title='{html.escape(c)}'>{i}</th>" for i, c in enumerate(conf["classes"]))
        body = "".join(f"<tr><th class='left'>{i} {html.escape(c)}</th>" + "".join(
            f"<td class='cm' style='{_shade(v / rows[i, 0])}'>{int(v)}</td>" for v in mat[i]) + "</tr>"
            for i, c in enumerate(conf["classes"]))
        out.append("<h3>Confusion matrix (rows: actual, columns: predicted; shading: share of the row)</h3>"
                   f"<table id='confusion'><tr><th></th>{head}</tr>{body}</table>")
    else:
        out.append(_missing("confusion.json (run the evaluate stage)"))
    out.append("<h3>Robustness</h3>")
    rob = metrics.get("robustness")
    if rob:
        attacks = [a for a in rob if isinstance(rob[a], dict)]
        eps = sorted({e for a in attacks for e in rob[a]}, key=float)
        out.append(f"<p>Accuracy under attack on {rob.get('n')} test images (L∞ ε on [0, 1] pixels); clean "
                   f"<b>{rob.get('clean', float('nan')):.3f}</b>.</p><table id='robustness'><tr><th>attack</th><th>clean</th>" +
                   "".join(f"<th>ε {html.escape(e)}</th>" for e in eps) + "</tr>" + "".join(
                       f"<tr><th>{html.escape(a.upper())}</th><td>{rob.get('clean', float('nan')):.3f}</td>" +
                       "".join(f"<td>{_num(rob[a].get(e))}</td>" for e in eps) + "</tr>" for a in attacks) + "</table>")
    else:
        out.append("<p>not measured (evaluate.robustness.enabled is false)</p>")
    return out


def _comparison(root: Path) -> list[str]:
    """Strategy comparison (augdag compare): mean and 95% CI per strategy, from data/compare/."""
    folder = Path(root) / "data" / "compare"
    data = read_json(folder / "comparison.json")
    if not data or not data.get("strategies"):
        return ['<p class="missing">missing: run augdag compare</p>']
    b = data.get("baseline", "none")
    pct = lambda m, ci: "–" if m is None else f"{100 * m:.1f}" + ("" if ci is None else f" ± {100 * ci:.1f}")  # noqa: E731
    out = [f"<p>Best on validation: <b>{html.escape(str(data.get('best_on_validation')))}</b> (choose defaults by "
           "validation accuracy; test accuracy is reported, not used to choose). 95% CI: Student t over seeds.</p>",
           "<table><tr><th>strategy</th><th>seeds</th><th>test accuracy % (mean ± 95% CI)</th>"
           f"<th>validation accuracy % (mean ± 95% CI)</th><th>test vs {html.escape(b)}, paired</th>"
           "<th>seeds better</th></tr>"]
    for name, m in data["strategies"].items():
        diff = m.get(f"diff_vs_{b}")
        dtxt = "–" if diff is None else f"{100 * diff:+.1f}" + (
            "" if m.get(f"diff_vs_{b}_ci95") is None else f" ± {100 * m[f'diff_vs_{b}_ci95']:.1f}")
        better = "–" if diff is None else f"{m.get(f'seeds_better_vs_{b}')}/{m.get(f'seeds_paired_vs_{b}')}"
        out.append(f"<tr><th>{html.escape(name)}</th><td>{m.get('n')}</td>"
                   f"<td>{pct(m.get('test_mean'), m.get('test_ci95'))}</td><td>{pct(m.get('val_mean'), m.get('val_ci95'))}</td>"
                   f"<td>{dtxt}</td><td>{better}</td></tr>")
    out.append("</table>")
    svg = folder / "comparison.svg"
    if svg.exists():
        text = svg.read_text(encoding="utf-8")
        if text.lstrip().startswith("<svg") and "<script" not in text.lower():  # only our own plain SVG
            out.append(f"<div>{text}</div>")
    return out


# ------------------------------------------------------------------------------------------ lineage

def _plain(v):
    """JSON-safe, and integers beyond 2**53 as strings (JavaScript numbers would round 63-bit seeds)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v) if abs(int(v)) <= 2 ** 53 else str(int(v))
    if isinstance(v, (float, np.floating)):
        return None if v != v else float(v)
    return v


def _opt(v):
    return None if v is None or v is np.nan or (isinstance(v, float) and v != v) or str(v) in ("<NA>", "nan") else v


def lineage_index(root: Path) -> dict:
    """Merged samples (up to LINEAGE_SAMPLES, round robin over sources), rejected ones (up to LINEAGE_REJECTED),
    and all their ancestors: id, stage, branch, label, parents, op params, gate decision and scores, thumbnail."""
    stores: dict[str, StageData] = {}
    where: dict[str, tuple[str, int]] = {}
    for s in ORIGIN + ["merge"]:
        if (out_dir(root, s) / MANIFEST).exists():
            stores[s] = StageData(out_dir(root, s))
            for i, sid in enumerate(stores[s].manifest.sample_id):
                where.setdefault(sid, (s, i))  # the producing stage first; merge only for extra sources
    gate: dict[str, tuple] = {}
    rejected = None
    qfolder = out_dir(root, "quality")
    for name in (MANIFEST, "rejected.parquet"):
        if (qfolder / name).exists():
            q = read_manifest(qfolder, name)
            gate.update(zip(q.sample_id, zip(q.gate, q.gate_reason, q.scores)))
            if name != MANIFEST:
                rejected = q
    merged = stores["merge"].manifest if "merge" in stores else None
    weight = dict(zip(merged.sample_id, merged.weight)) if merged is not None else {}

    def round_robin(frame, cap):
        if frame is None or not len(frame):
            return []
        groups = [list(g.sample_id) for _, g in frame.groupby("branch", sort=False)]
        out = []
        for k in range(max(len(g) for g in groups)):
            out.extend(g[k] for g in groups if k < len(g))
        return out[:cap]

    picked_merged, picked_rejected = round_robin(merged, LINEAGE_SAMPLES), round_robin(rejected, LINEAGE_REJECTED)
    picked = picked_merged + picked_rejected
    samples: dict[str, dict] = {}
    frontier = list(picked)
    while frontier:
        sid = frontier.pop(0)
        if sid in samples or sid not in where:
            continue
        stage, i = where[sid]
        data = stores[stage]
        r = data.manifest.iloc[i]
        g = gate.get(sid)
        scores = _opt(g[2]) if g else _opt(r.scores)
        parents = [str(x) for x in (r.parent_ids if r.parent_ids is not None else [])]
        e = {"stage": stage, "branch": r.branch, "split": r.split, "label": int(r.label),
             "parents": parents, "params": json.loads(_opt(r.op_params) or "{}"),
             "gate": (_opt(g[0]) if g else _opt(r.gate)) or ("raw, not gated" if r.branch == "raw" else None),
             "reason": (_opt(g[1]) if g else _opt(r.gate_reason)) or None,
             "scores": json.loads(scores) if scores else None, "source": _opt(r.source),
             "hash": str(r.content_hash)[:16], "img": _png(data.image(r))}
        if _opt(r.seed) is not None:
            e["seed"] = str(int(r.seed))
        if r.soft_label is not None and len(r.soft_label):
            e["soft"] = [round(float(x), 4) for x in r.soft_label]
        if sid in weight:
            e["weight"] = float(weight[sid])
        samples[sid] = _plain(e)
        frontier.extend(parents)
    n_rej = len(rejected) if rejected is not None else 0
    return {"classes": _classes(root) or [], "samples": samples,
            "merged_total": len(merged) if merged is not None else 0,
            "merged_indexed": sum(s in samples for s in picked_merged),
            "rejected_total": n_rej, "rejected_indexed": sum(s in samples for s in picked_rejected),
            "examples": {b: ids[0] for b, ids in _first_per_branch(picked, samples).items()}}


def _first_per_branch(ids: list[str], samples: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sid in ids:
        if sid in samples:
            out.setdefault(samples[sid]["branch"], []).append(sid)
    return out


LINEAGE_JS = r"""(function () {
  "use strict";
  var idx = JSON.parse(document.getElementById("lineage-index").textContent);
  var S = idx.samples, C = idx.classes;
  var out = document.getElementById("lineage-out"), q = document.getElementById("lineage-q");
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(+v.toPrecision(6));
    if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
    if (v !== null && typeof v === "object") return "{" + Object.keys(v).map(function (k) { return k + ": " + fmt(v[k]); }).join(", ") + "}";
    return String(v);
  }
  function kv(o) {
    return Object.keys(o).filter(function (k) { return k !== "op"; }).map(function (k) { return k + "=" + fmt(o[k]); }).join(", ");
  }
  function params(p) {
    if (!p || !Object.keys(p).length) return [];
    if (Array.isArray(p.ops)) return p.ops.length ? p.ops.map(function (o) { return o.op + (kv(o) ? ": " + kv(o) : ""); }) : ["no op drawn (identity)"];
    return [(p.op ? p.op + ": " : "") + kv(p)];
  }
  function cls(i) { return C[i] !== undefined ? i + " " + C[i] : String(i); }
  function card(id, s) {
    var box = el("div", {"class": "lin-card"});
    box.appendChild(el("img", {"class": "thumb", src: s.img, alt: id}));
    var d = el("div");
    d.appendChild(el("div", {"class": "id"}, id));
    var label = "label " + cls(s.label);
    if (s.soft) label += " (soft: " + s.soft.map(function (w, i) { return w > 0 ? fmt(w) + " " + cls(i) : null; }).filter(Boolean).join(" + ") + ")";
    d.appendChild(el("div", {}, s.stage + " / " + s.branch + " / " + s.split + "; " + label));
    var ps = params(s.params);
    if (ps.length) d.appendChild(el("div", {"class": "lin-params"}, ps.join("\n")));
    if (s.seed) d.appendChild(el("div", {}, "seed " + s.seed));
    if (s.gate) d.appendChild(el("div", {"class": s.gate === "rejected" ? "lin-gate missing" : "lin-gate"}, "gate: " + s.gate + (s.reason ? " (" + s.reason + ")" : "")));
    if (s.scores) d.appendChild(el("div", {}, "scores: " + kv(s.scores)));
    if (s.weight !== undefined) d.appendChild(el("div", {}, "in the merged set, sampling weight " + fmt(s.weight)));
    if (!s.parents.length && s.source) d.appendChild(el("div", {}, "source: " + s.source));
    d.appendChild(el("div", {}, "content hash " + s.hash + "…"));
    box.appendChild(d);
    return box;
  }
  function node(id, depth) {
    var li = el("li", {"class": "lin-node", "data-id": id});
    var s = S[id];
    if (!s) {
      li.setAttribute("data-missing", "1");
      li.appendChild(el("div", {"class": "missing"}, id + ": not in this page's index (augdag lineage " + id + " shows it)"));
      return li;
    }
    li.appendChild(card(id, s));
    if (s.parents.length && depth < 32) {
      var ul = el("ul");
      s.parents.forEach(function (p) { ul.appendChild(node(p, depth + 1)); });
      li.appendChild(ul);
    }
    return li;
  }
  function show(id) {
    out.textContent = "";
    if (!S[id]) {
      out.setAttribute("data-state", "not-found");
      out.appendChild(el("p", {"class": "missing", id: "lineage-notfound"}, "sample " + id + " not found"));
      out.appendChild(el("p", {}, "This page indexes " + Object.keys(S).length + " samples; augdag lineage '" + id + "' searches every stage output."));
      return;
    }
    out.setAttribute("data-state", "shown");
    out.appendChild(el("p", {}, "The sample, then its parents back to the raw image:"));
    var ul = el("ul");
    ul.appendChild(node(id, 0));
    out.appendChild(ul);
  }
  function fromHash() {
    var h = window.location.hash;
    if (h.indexOf("#sample=") !== 0) return;
    var id = h.slice(8);
    try { id = decodeURIComponent(id); } catch (e) { /* keep it as typed */ }
    q.value = id;
    show(id);
  }
  function go() {
    var id = q.value.trim();
    if (!id) return;
    var frag = "#sample=" + encodeURIComponent(id);
    if (window.location.hash === frag) show(id); else window.location.hash = frag;
  }
  q.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); go(); } });
  document.getElementById("lineage-go").addEventListener("click", go);
  window.addEventListener("hashchange", fromHash);
  fromHash();
  document.body.setAttribute("data-lineage", "ready");
})();"""


def _script_json(obj) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _lineage(index: dict | None) -> list[str]:
    if index is None or not index["samples"]:
        return [_missing("run the pipeline (the lineage index is built from the stage outputs)")]
    n = len(index["samples"])
    ex = index["examples"]
    out = [f"<p>Search a sample id (as in the grids, or from <code>augdag lineage</code>) and press Enter: the sample and "
           "its ancestors back to the raw image, with thumbnails and the applied parameters. This page indexes "
           f"<b id='lineage-count'>{index['merged_indexed']} of {index['merged_total']}</b> merged samples and "
           f"{index['rejected_indexed']} of {index['rejected_total']} gate-rejected ones (caps {LINEAGE_SAMPLES} and "
           f"{LINEAGE_REJECTED}, round robin over sources), with their ancestors: {n} samples in all. "
           "<code>augdag lineage ID</code> finds any sample.</p>",
           "<p><input id='lineage-q' type='search' size='48' aria-label='sample id' autocomplete='off' "
           f"placeholder='sample id, e.g. {html.escape(next(iter(ex.values()), ''))}'> "
           "<button id='lineage-go' type='button'>show lineage</button></p>"]
    if ex:
        out.append("<p>Examples: " + " ".join(f"<a href='#sample={html.escape(_frag(sid))}'>{html.escape(sid)}</a> ({html.escape(b)})"
                                              for b, sid in ex.items()) + "</p>")
    out += ["<div id='lineage-out' data-state='idle' aria-live='polite'></div>",
            f"<script type='application/json' id='lineage-index'>{_script_json(index)}</script>",
            f"<script>{LINEAGE_JS}</script>"]
    return out


# --------------------------------------------------------------------------------------------- page

def render(p: Params, root: Path) -> str:
    root = Path(root)
    status = {s: stage_status(root, s) for s in STAGES}
    timing, detail = {}, {}
    for s in STAGES:
        summary = try_read_json(out_dir(root, s) / "summary.json") if s != "report" else None
        timing[s], detail[s] = _timing(root, s, summary)
    any_run = any(st != "missing" for s, (st, _) in status.items() if s != "report")
    n = p.report.grid_samples
    try:
        index = lineage_index(root) if any_run else None
        index_error = None
    except Exception as err:  # noqa: BLE001
        index, index_error = None, f"{type(err).__name__}: {err}"
    linked = frozenset(index["samples"]) if index else frozenset()

    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
           "<meta name='viewport' content='width=device-width, initial-scale=1'><title>augdag report</title>",
           f"<style>{CSS}</style></head><body><h1>augdag report</h1>"]
    if not any_run:
        out.append("<p class='banner missing' id='no-run'><b>No run exists yet</b>: no stage has written its output under "
                   "<code>data/</code>. Run the pipeline first (<code>augdag run</code> or <code>dvc repro</code>); "
                   "every part below is marked missing until then.</p>")
    else:
        bad = [s for s, (st, _) in status.items() if st in ("failed or incomplete", "failed")]
        missing = [s for s, (st, _) in status.items() if st == "missing"]
        if bad:
            out.append(f"<p class='banner' id='failed-stages'><b>Failed or incomplete stages</b>: {', '.join(bad)}. Parts "
                       "built from them show their last complete output or are marked missing.</p>")
        if missing:
            out.append(f"<p class='banner' id='missing-stages'><b>Not run yet</b>: {', '.join(missing)}; their parts are "
                       "marked missing.</p>")
        metrics = try_read_json(out_dir(root, "evaluate") / "metrics.json")
        try:
            out.append(f"<p>Test accuracy <b>{metrics['accuracy']:.4f}</b>, macro-F1 <b>{metrics['macro_f1']:.4f}</b>.</p>")
        except (TypeError, KeyError, ValueError):
            pass  # the evaluation section says what is missing
    sections = [("stages", "Stages"), ("dataset", "Dataset"), ("gate", "Quality gate"), ("samples", "Samples"),
                ("training", "Training"), ("evaluation", "Test metrics"), ("comparison", "Strategy comparison"),
                ("lineage", "Lineage")]
    out.append("<nav>" + "".join(f"<a href='#{sid}'>{t}</a>" for sid, t in sections) + "</nav>")
    out += _section("stages", "Stages", _stages, root, status, timing, detail)
    out += _section("dataset", "Dataset", _dataset, root, str(p.ingest.source))
    out += _section("gate", "Quality gate", _quality, root, n, linked)
    out += _section("samples", "Samples", _samples, root, n, linked)
    out += _section("training", "Training", _training, root)
    out += _section("evaluation", "Test metrics", _evaluation, root)
    out += _section("comparison", "Strategy comparison", _comparison, root)
    if index_error:
        out += _section("lineage", "Lineage", lambda: [f'<p class="missing">could not build the lineage index: '
                                                       f'{html.escape(index_error)}</p>'])
    else:
        out += _section("lineage", "Lineage", _lineage, index)
    out.append("</body></html>")
    return "\n".join(out)


def run(p: Params, root: Path, **_) -> dict:
    page = render(p, root)
    with atomic_dir(out_dir(root, "report")) as tmp:
        write_text(tmp / "report.html", page)
    return {"report": str(out_dir(root, "report") / "report.html"), "bytes": len(page)}
