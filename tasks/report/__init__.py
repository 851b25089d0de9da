"""Report: one self-contained HTML page (images, plots and the lineage index inlined; opens with no network).

Sections: the DAG with each stage's status and timing, the dataset, the quality gate (pass rates, score
histograms, kept and rejected grids), sample grids, the cross-domain branch (its summary, and each
translation beside its source and cycle reconstruction), training (curve, source weights), evaluation
(per-class accuracy, confusion matrix, robustness; source and target domain side by side when evaluate
measured a target test folder), the strategy comparison, and a lineage view (a search box over an inline
index of samples and their ancestors, with one small inline script).

Every part reads only what exists: a missing input renders "missing: run the X stage", a part that
cannot be read renders the error, and a report asked for before any run says so. The page is
deterministic for the same outputs (the flow and `dvc repro` write identical bytes), except the stage
timings when a run recorded them (`class="timing"` marks every place they appear).

The page is Jinja2 templates (templates/: page.html.j2 on base.html.j2, one sections/<id>.html.j2 per
section, figures.svg.j2 for the inline SVG) with the stylesheet and the lineage script inlined from
static/ (see templating.py for the conventions). The modules: status (each stage's status and time),
sections (what each section shows), figures (the SVG figures' numbers, thumbnails), lineage (the index).
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from augdag.params import Params
from augdag.storage import atomic_dir, try_read_json, write_text
from augdag.tasks import STAGES, out_dir

from . import lineage, sections
from .lineage import LINEAGE_REJECTED, LINEAGE_SAMPLES, frag, lineage_index, plain
from .status import stage_status, timing
from .templating import macro, static
from .templating import render as render_template

__all__ = ["LINEAGE_REJECTED", "LINEAGE_SAMPLES", "frag", "lineage_index", "plain", "render", "run", "section",
           "stage_status"]


def section(sid: str, title: str, fn, *args) -> dict:
    """One section: fn(*args) gathers its data, sections/<sid>.html.j2 lays it out. An input that exists but
    cannot be read renders the error instead of breaking the page."""
    try:
        part = fn(*args)
        if isinstance(part, sections.Missing):
            body = macro("parts.html.j2", "missing")(part.what)
        else:
            body = render_template(f"sections/{sid}.html.j2", **part)
    except Exception as err:  # a broken part must not take the rest of the report with it
        body = macro("parts.html.j2", "note")(f"could not render this part: {type(err).__name__}: {err}")
    # the page puts the body between the heading's line and </section>'s: a last line break is the template's
    return {"id": sid, "title": title, "body": Markup(str(body).removesuffix("\n"))}


def render(p: Params, root: Path, timings: bool = True, extra: list | None = None) -> str:
    """The report page; `timings=False` leaves out the stage times (per-run facts), so the page is a function
    of the outputs alone. `extra`: sections after the sample grids (audio's clips), as (id, title, fn, *args),
    called fn(*args, linked) with the ids the lineage view holds; they may embed sound (the page then allows
    data: media)."""
    root = Path(root)
    status = {s: stage_status(root, s) for s in STAGES}
    times, detail = {s: None for s in STAGES}, {s: "" for s in STAGES}
    for s in STAGES if timings else ():
        summary = try_read_json(out_dir(root, s) / "summary.json") if s != "report" else None
        times[s], detail[s] = timing(root, s, summary)
    any_run = any(st != "missing" for s, (st, _) in status.items() if s != "report")
    n = p.report.grid_samples
    try:
        index = lineage_index(root) if any_run else None
        index_error = None
    except Exception as err:  # noqa: BLE001
        index, index_error = None, f"{type(err).__name__}: {err}"
    linked = frozenset(index["samples"]) if index else frozenset()
    headline = None
    if any_run:
        metrics = try_read_json(out_dir(root, "evaluate") / "metrics.json")
        try:
            headline = {"accuracy": f"{metrics['accuracy']:.4f}", "macro_f1": f"{metrics['macro_f1']:.4f}"}
        except (TypeError, KeyError, ValueError):
            pass  # the evaluation section says what is missing
    parts = [section("stages", "Stages", sections.stages, root, status, times, detail),
             section("dataset", "Dataset", sections.dataset, root,
                     str(p.audio.ingest.source if p.modality == "audio" else p.ingest.source)),
             section("gate", "Quality gate", sections.gate, root, n, linked),
             section("samples", "Samples", sections.samples, root, n, linked),
             *(section(*e, linked) for e in extra or ()),
             section("crossdomain", "Cross-domain translation", sections.crossdomain, root, n, linked),
             section("training", "Training", sections.training, root),
             section("evaluation", "Test metrics", sections.evaluation, root),
             section("comparison", "Strategy comparison", sections.comparison, root),
             section("search", "Strategy search", sections.search, root),
             section("lineage", "Lineage", lineage.section, index, index_error)]
    return str(render_template("page.html.j2", css=static("report.css"), any_run=any_run, headline=headline,
                               media=bool(extra),
                               failed=[s for s, (st, _) in status.items() if st in ("failed or incomplete", "failed")],
                               missing=[s for s, (st, _) in status.items() if st == "missing"], sections=parts))


def run(p: Params, root: Path, extra: list | None = None, **_) -> dict:
    """data/report/report.html (a DVC output: the same bytes for the same outputs) and, untracked beside the
    other per-run records, data/validation/report-timed.html: the same page with this run's stage times."""
    page = render(p, root, timings=False, extra=extra)
    with atomic_dir(out_dir(root, "report")) as tmp:
        write_text(tmp / "report.html", page)
    timed = out_dir(root, "validation") / "report-timed.html"
    timed.parent.mkdir(parents=True, exist_ok=True)
    write_text(timed, render(p, root, extra=extra))
    return {"report": str(out_dir(root, "report") / "report.html"), "bytes": len(page)}
