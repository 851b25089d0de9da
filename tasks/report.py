"""Report: one self-contained HTML page (images and plots inlined; opens with no network)."""

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
from augdag.storage import StageData, atomic_dir
from augdag.tasks import STAGES, out_dir

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}.grid img{image-rendering:pixelated;width:56px;height:56px;margin:2px;border:1px solid #ddd}
.missing{color:#a00}code{font-size:90%}figure{display:inline-block;margin:4px;text-align:center;font-size:11px}"""


def _png(arr: np.ndarray) -> str:
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _curve_svg(rows: list[dict]) -> str:
    """A small inline SVG line chart of the training curve (no plotting library, no scripts)."""
    if not rows:
        return '<p class="missing">no training curve</p>'
    w, h, pad = 520, 220, 36
    steps = [float(r["step"]) for r in rows]
    series = [(k, c) for k, c in (("train_loss", "#1f77b4"), ("val_loss", "#ff7f0e"), ("val_accuracy", "#2ca02c"))
              if k in rows[0]]
    ymax = max(max(float(r[k]) for r in rows) for k, _ in series) or 1.0
    sx = lambda s: pad + (w - 2 * pad) * (s - steps[0]) / max(steps[-1] - steps[0], 1)
    sy = lambda v: h - pad - (h - 2 * pad) * v / ymax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="training curve">',
             f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="#999"/>',
             f'<text x="{pad}" y="{pad-8}" font-size="11">max {ymax:.3g}</text>',
             f'<text x="{w-pad}" y="{h-pad+14}" font-size="11" text-anchor="end">step {int(steps[-1])}</text>']
    for i, (k, color) in enumerate(series):
        pts = " ".join(f"{sx(s):.1f},{sy(float(r[k])):.1f}" for s, r in zip(steps, rows))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w-pad-120}" y="{pad+14*i}" font-size="11" fill="{color}">{k}</text>')
    return "".join(parts) + "</svg>"


def _grid(data: StageData, rows, n: int, with_params: bool = False, reason: bool = False) -> str:
    figs = []
    for _, r in rows.head(n).iterrows():
        cap = html.escape(r.sample_id)
        if with_params:
            q = json.loads(r.op_params or "{}")
            ops = ", ".join(o["op"] for o in q.get("ops", [])) or q.get("op") or ("latent" if "latent_seed" in q else "identity")
            cap += f"<br>{html.escape(ops)}"
        if reason:
            cap += f"<br><b>{html.escape(r.reason)}</b>"
        figs.append(f'<figure><img src="{_png(data.image(r))}" alt="{html.escape(r.sample_id)}"><figcaption>{cap}</figcaption></figure>')
    return f'<div class="grid">{"".join(figs)}</div>' if figs else '<p class="missing">no samples</p>'


SCORE_NAMES = ("psnr", "ssim", "in_frame", "label_prob", "outlier_z")


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


def _quality(root: Path, n: int) -> list[str]:
    """Gate section: pass rate per branch and check, score histograms, kept and rejected grids."""
    folder = out_dir(root, "quality")
    summary = _json(folder / "summary.json")
    if summary is None or not (folder / "manifest.parquet").exists():
        return ['<h2>Quality gate</h2><p class="missing">missing: run the quality stage</p>']
    from augdag.storage import read_manifest

    kept = read_manifest(folder)
    rej_path = folder / "rejected.parquet"
    rejected = read_manifest(folder, rej_path.name) if rej_path.exists() else None
    out = ['<h2>Quality gate</h2><table><tr><th>branch</th><th>in</th><th>kept</th><th>rejected</th><th>pass rate</th>'
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
        data = StageData(out_dir(root, branch))
        by_id = data.manifest.set_index("sample_id", drop=False)
        out.append(f"<h4>{html.escape(branch)}: kept</h4>" + _grid(data, by_id.loc[bk.sample_id.head(n)], n, True))
        if len(br):
            rows = by_id.loc[br.sample_id.head(n)].assign(reason=list(br.gate_reason.head(n)))
            out.append(f"<h4>{html.escape(branch)}: rejected</h4>" + _grid(data, rows, n, True, reason=True))
        else:
            out.append(f"<h4>{html.escape(branch)}: rejected</h4><p>none</p>")
    return out


def _comparison(root: Path) -> list[str]:
    """Strategy comparison (augdag compare): mean and 95% CI per strategy, from data/compare/."""
    folder = Path(root) / "data" / "compare"
    data = _json(folder / "comparison.json")
    if not data or not data.get("strategies"):
        return ['<h2>Strategy comparison</h2><p class="missing">missing: run augdag compare</p>']
    b = data.get("baseline", "none")
    pct = lambda m, ci: "–" if m is None else f"{100 * m:.1f}" + ("" if ci is None else f" ± {100 * ci:.1f}")  # noqa: E731
    out = ["<h2>Strategy comparison</h2>",
           f"<p>Best on validation: <b>{html.escape(str(data.get('best_on_validation')))}</b> (choose defaults by "
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


def render(p: Params, root: Path) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>augdag report</title>",
           f"<style>{CSS}</style></head><body><h1>augdag report</h1>"]
    out.append("<h2>Stages</h2><table><tr><th>stage</th><th>summary</th></tr>")
    for s in STAGES[:-1]:
        summary = _json(out_dir(root, s) / "summary.json")
        cell = f"<code>{html.escape(json.dumps(summary, sort_keys=True))}</code>" if summary is not None else '<span class="missing">missing</span>'
        out.append(f"<tr><th>{s}</th><td style='text-align:left'>{cell}</td></tr>")
    out.append("</table>")

    metrics = _json(out_dir(root, "evaluate") / "metrics.json")
    out.append("<h2>Test metrics</h2>")
    if metrics:
        out.append(f"<p>accuracy <b>{metrics['accuracy']:.4f}</b>, macro-F1 <b>{metrics['macro_f1']:.4f}</b> on {metrics['n_test']} test images</p>")
        out.append("<table><tr><th>class</th><th>accuracy</th></tr>" + "".join(
            f"<tr><th>{html.escape(c)}</th><td>{a:.3f}</td></tr>" for c, a in metrics["per_class_accuracy"].items()) + "</table>")
    else:
        out.append('<p class="missing">missing: run the evaluate stage</p>')
    conf = _json(out_dir(root, "evaluate") / "confusion.json")
    if conf:
        head = "".join(f"<th>{i}</th>" for i in range(len(conf["classes"])))
        body = "".join(f"<tr><th>{i} {html.escape(c)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
                       for i, (c, row) in enumerate(zip(conf["classes"], conf["matrix"])))
        out.append(f"<h3>Confusion matrix (rows: actual, columns: predicted)</h3><table><tr><th></th>{head}</tr>{body}</table>")

    curve_path = out_dir(root, "finetune") / "curve.csv"
    out.append("<h2>Training curve</h2>")
    out.append(_curve_svg(list(csv.DictReader(curve_path.open())) if curve_path.exists() else []))

    out.extend(_comparison(root))
    out.extend(_quality(root, p.report.grid_samples))
    out.append("<h2>Samples</h2>")
    n = p.report.grid_samples
    for stage, title, params in (("ingest", "raw train", False), ("traditional", "traditional branch", True),
                                 ("mix", "mix branch", True), ("generative", "generative branch", True)):
        folder = out_dir(root, stage)
        out.append(f"<h3>{title}</h3>")
        if not (folder / "manifest.parquet").exists():
            out.append('<p class="missing">missing</p>')
            continue
        data = StageData(folder)
        rows = data.manifest[data.manifest.split == "train"] if stage == "ingest" else data.manifest
        out.append(_grid(data, rows, n, with_params=params))
    out.append("</body></html>")
    return "\n".join(out)


def run(p: Params, root: Path, **_) -> dict:
    page = render(p, root)
    with atomic_dir(out_dir(root, "report")) as tmp:
        (tmp / "report.html").write_text(page, encoding="utf-8")
    return {"report": str(out_dir(root, "report") / "report.html"), "bytes": len(page)}
