"""The HTML report: every section on a tiny real run, missing and failed parts, no run at all, the lineage
index, the templates (static files inlined, values escaped), and the page opened in headless Chromium
(screenshot, no console errors, the lineage search)."""

import html
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from jinja2 import UndefinedError

from augdag import tasks
from augdag.params import deep_merge, parse_params
from augdag.storage import read_manifest
from augdag.tasks import STAGES, UPSTREAM, report, run_stage
from helpers import REPO, SMALL, image_folder

OVER = deep_merge(SMALL, {
    # the generative branch off: its VAE and feature statistics cost more than the rest (and "off" is a status)
    "strategy": {"traditional": {"enabled": True, "multiplier": 2}, "generative": {"enabled": False}},
    "traditional": {"ops": {"gaussian_noise": {"p": 0.5, "std": [0.15, 0.2]}}},  # some samples fail the gate
    # the gate filtering, as the suites define it (params.yaml's default only warns)
    "quality": {"modes": {"psnr": "filter", "ssim": "filter", "label_consistency": "filter", "outlier": "filter"}},
    "finetune": {"pretrained": False, "steps": 4, "eval_every": 2,
                 "sampling": {"mode": "dynamic", "every": 2, "feedback_batch": 4}},
    "evaluate": {"robustness": {"enabled": True, "epsilons": [0.05], "attacks": ["fgsm", "pgd"], "pgd_steps": 1,
                                "n_samples": 6}},
})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Every stage once on a tiny slice (no pretrained weights, a 6-image robustness check), then the report."""
    root = tmp_path_factory.mktemp("report")
    p = parse_params(OVER)
    for stage in STAGES:
        run_stage(stage, p, root)
    return root, p


def _copy(project, tmp_path) -> Path:
    root, _ = project
    shutil.copytree(root / "data", tmp_path / "data")
    return tmp_path


def _section(page: str, sid: str) -> str:
    start = page.index(f'<section id="{sid}">')
    return page[start:page.index("</section>", start)]


def _statuses(page: str) -> dict[str, str]:
    return dict(re.findall(r'<g class="dag-node" data-stage="(\w+)" data-status="([^"]+)"', page))


def _index(page: str) -> dict:
    m = re.search(r"<script type='application/json' id='lineage-index'>(.*?)</script>", page, re.S)
    return json.loads(m.group(1))


EXTERNAL = re.compile(r"""(?:src|href|action|srcset|xlink:href)\s*=\s*["']?\s*(?:https?:)?//"""
                      r"""|url\(\s*["']?\s*(?:https?:)?//""", re.I)


def test_every_section_renders_from_a_real_run(project):
    root, p = project
    page = (root / "data" / "report" / "report.html").read_text(encoding="utf-8")
    assert page == report.render(p, root, timings=False), "the page is a function of the outputs"
    assert "class='timing'" not in page and 'class="timing"' not in page  # no per-run facts in a DVC out
    assert "data/validation/report-timed.html" in page
    timed = (root / "data" / "validation" / "report-timed.html").read_text(encoding="utf-8")
    assert not EXTERNAL.search(page), "no external resource at all"
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # DAG: one box per stage, one edge per UPSTREAM pair, every stage ran, with the time run_stage recorded
    assert _statuses(page) == {**{s: "ran" for s in STAGES[:-1]}, "generative": "off", "crossdomain": "off",
                              "dialogue": "off", "report": "this page"}
    edges = set(re.findall(r'class="dag-edge" data-from="(\w+)" data-to="(\w+)"', page))
    assert edges == {(u, s) for s in STAGES for u in UPSTREAM[s]}
    times = dict(re.findall(r'data-stage="(\w+)" data-status="[^"]+">.*?class="timing"[^>]*>([^<]*)<', timed))
    assert all(re.fullmatch(r"[\d.]+ (s|min)", times[s]) for s in STAGES[:-1]), times
    # the comparison and the search are separate commands, not stages of a run
    assert "missing:" not in page.replace("missing: run augdag compare", "").replace("missing: run augdag tune", "")
    assert "missing: run augdag tune" in _section(page, "search")
    assert "No run exists yet" not in page and "could not render" not in page
    # dataset: classes, split counts per class, one thumbnail per class
    ds = _section(page, "dataset")
    classes = json.loads((root / "data" / "ingest" / "classes.json").read_text())["classes"]
    assert len(classes) == 10 and all(f">{c}<" in ds for c in classes)
    assert ds.count('<img class="thumb" src="data:image/png;base64,') == 10
    assert ds.count("<td>2</td><td>1</td><td>3</td>") == 10  # train / val / test per class (SMALL)
    # gate: table, histograms, kept and rejected grids
    gate = _section(page, "gate")
    rejected = read_manifest(root / "data" / "quality", "rejected.parquet")
    assert "gate-table" in gate and 'aria-label="psnr"' in gate and "traditional: rejected" in gate
    assert len(rejected) and f'alt="{rejected.sample_id.iloc[0]}"' in gate
    # training: curve, source weights trajectory (dynamic: one update) and the feedback table
    tr = _section(page, "training")
    assert 'aria-label="training curve"' in tr and 'aria-label="sampling weights"' in tr
    assert "feedback-table" in tr and "sampling <b>dynamic</b>" in tr
    # evaluation: headline, per-class accuracy, shaded confusion matrix summing to n_test, robustness per eps
    ev = _section(page, "evaluation")
    metrics = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    assert f"{metrics['accuracy']:.4f}" in ev and ev.count("<tr><th class='left'>") == 10 + 10
    cells = re.findall(r"<td class='cm' style='background:rgba[^']*'>(\d+)</td>", ev)
    assert len(cells) == 100 and sum(map(int, cells)) == metrics["n_test"] == 30
    rob = ev[ev.index("id='robustness'"):]
    assert "<th>FGSM</th>" in rob and "<th>PGD</th>" in rob and "ε 0.05" in rob
    assert f"{metrics['robustness']['fgsm']['0.05']:.3f}" in rob
    assert "missing: run augdag compare" in _section(page, "comparison")
    # the crossdomain branch is off: its section says so, the samples section has no part for it
    xd = _section(page, "crossdomain")
    assert "id='crossdomain-off'" in xd and "crossdomain-triples" not in xd
    assert "crossdomain" not in _section(page, "samples") and "id='domain-accuracy'" not in ev


def test_weights_series_match_the_sources(project):
    root, _ = project
    page = (root / "data" / "report" / "report.html").read_text(encoding="utf-8")
    rows = [ln.split(",") for ln in (root / "data" / "finetune" / "weights.csv").read_text().splitlines()]
    assert rows[0] == ["step", "source", "weight", "feedback"]
    weights = list(dict.fromkeys(f"w_{r[1]}" for r in rows[1:]))
    svg = re.search(r'<svg[^>]*aria-label="sampling weights".*?</svg>', page, re.S).group(0)
    assert svg.count("<polyline") == len(weights) >= 2
    assert all(f">{k}</text>" in svg for k in weights)


def test_lineage_index_holds_merged_samples_and_their_ancestors(project):
    root, _ = project
    page = (root / "data" / "report" / "report.html").read_text(encoding="utf-8")
    idx = _index(page)
    samples = idx["samples"]
    merged = read_manifest(root / "data" / "merge")
    rejected = read_manifest(root / "data" / "quality", "rejected.parquet")
    assert len(merged) < report.LINEAGE_SAMPLES and len(rejected) < report.LINEAGE_REJECTED
    assert set(merged.sample_id) | set(rejected.sample_id) <= set(samples)
    assert idx["merged_indexed"] == idx["merged_total"] == len(merged)
    assert f"{len(merged)} of {len(merged)}</b> merged samples" in page
    assert all(pid in samples for s in samples.values() for pid in s["parents"]), "ancestors are indexed"
    for sid in (merged[merged.branch == b].sample_id.iloc[0] for b in ("traditional", "mix")):
        chain = tasks.chain(root, sid)  # what `augdag lineage` prints
        shown, frontier = [], [sid]
        while frontier:
            x = frontier.pop(0)
            if x not in shown:
                shown.append(x)
                frontier.extend(samples[x]["parents"])
        assert shown == [r["sample_id"] for r in chain]
        for r in chain:
            e = samples[r["sample_id"]]
            assert (e["stage"], e["branch"], e["label"]) == (r["stage"], r["branch"], r["label"])
            assert e["params"] == report.plain(r["op_params"])  # the exact applied params (big ints as strings)
            assert e["img"].startswith("data:image/png;base64,") and r["content_hash"].startswith(e["hash"])
            if r["seed"] is not None:
                assert e["seed"] == str(r["seed"]), "63-bit seeds travel as strings, JavaScript would round them"
    mix = samples[merged[merged.branch == "mix"].sample_id.iloc[0]]
    assert len(mix["parents"]) == 2 and abs(sum(mix["soft"]) - 1) < 1e-3 and "lam" in mix["params"]
    assert mix["gate"] == "kept" and "label_prob" in mix["scores"] and mix["weight"] > 0
    rej = samples[rejected.sample_id.iloc[0]]
    assert rej["gate"] == "rejected" and rej["reason"] == rejected.gate_reason.iloc[0] and "weight" not in rej
    assert samples[mix["parents"][0]]["gate"] == "raw, not gated"
    assert "</script" not in page[page.index("id='lineage-index'"):].split("</script>")[0]


def test_lineage_index_is_capped_and_says_so(project, monkeypatch):
    root, _ = project
    monkeypatch.setattr(report.lineage, "LINEAGE_SAMPLES", 5)
    monkeypatch.setattr(report.lineage, "LINEAGE_REJECTED", 1)
    idx = report.lineage_index(root)
    merged = read_manifest(root / "data" / "merge")
    assert idx["merged_indexed"] == 5 and idx["merged_total"] == len(merged) and idx["rejected_indexed"] == 1
    assert {idx["samples"][s]["branch"] for s in idx["examples"].values()} >= {"raw", "traditional", "mix"}, \
        "round robin over sources: every branch is searchable"
    page = report.section("lineage", "Lineage", report.lineage.section, idx, None)["body"]
    assert f"<b id='lineage-count'>5 of {len(merged)}</b>" in page and "1 of " in page
    assert "(caps 5 and 1, round robin over sources)" in page


def test_missing_stages_are_marked_missing(project, tmp_path):
    root = _copy(project, tmp_path)
    _, p = project
    for stage in ("finetune", "evaluate"):
        shutil.rmtree(root / "data" / stage)
    page = report.render(p, root)
    assert _statuses(page)["finetune"] == "missing" and _statuses(page)["evaluate"] == "missing"
    assert "Not run yet</b>: finetune, evaluate" in page
    assert "missing: run the finetune stage" in _section(page, "training")
    assert "missing: run the evaluate stage" in _section(page, "evaluation")
    assert "lineage-index" in page and "No run exists yet" not in page  # the rest is intact


def test_failed_or_incomplete_stages_are_marked(project, tmp_path):
    root = _copy(project, tmp_path)
    _, p = project
    (root / "data" / "merge" / "summary.json").unlink()  # a folder without summary.json
    (root / "data" / ".quality.tmp-4242").mkdir()  # what an interrupted atomic write leaves
    shutil.rmtree(root / "data" / "traditional" / "shards")  # an output whose images are gone
    (root / "data" / "finetune" / "summary.json").write_text('{"steps": 4, "sampl')  # a truncated summary
    page = report.render(p, root)
    st = _statuses(page)
    assert st["merge"] == st["quality"] == st["finetune"] == "failed or incomplete" and st["ingest"] == "ran"
    row = page[page.index("<tr data-stage='quality'>"):]
    assert ".quality.tmp-4242" in row[:row.index("</tr>")]
    assert "Failed or incomplete stages</b>: quality, merge, finetune" in page
    gate = _section(page, "gate")
    assert "could not render this part: DataError" in gate and "shard named in the manifest is missing" in gate
    assert "could not build the lineage index" in _section(page, "lineage")
    assert "could not render this part: JSONDecodeError" in _section(page, "training")
    assert "id='confusion'" in page and "id='dataset-table'" in page, "the other parts still render"


def test_recorded_timings_and_failures_are_shown(project, tmp_path):
    root = _copy(project, tmp_path)
    _, p = project
    s = json.loads((root / "data" / "strategy" / "summary.json").read_text())
    (root / "data" / "strategy" / "summary.json").write_text(json.dumps({**s, "timings": {"total": 12.5}}))
    rec = root / "data" / "validation" / "timings"
    rec.mkdir(parents=True, exist_ok=True)
    (rec / "ingest.json").unlink(missing_ok=True)  # recorded by the real run; without it ingest shows "–"
    (rec / "finetune.json").write_text(json.dumps({"seconds": 75.0, "ok": True, "error": None}))
    (rec / "merge.json").write_text(json.dumps({"seconds": 1.0, "ok": False,
                                                "error": "ExpectationFailed: class_balance"}))
    shutil.rmtree(root / "data" / "evaluate")  # dvc repro removes a stage's outputs before running it
    (rec / "evaluate.json").write_text(json.dumps({"seconds": 2.0, "ok": False, "error": "ModelError: cannot load"}))
    page = report.render(p, root)
    assert _statuses(page)["evaluate"] == "failed" and "ModelError: cannot load); no output" in page
    node = lambda s: re.search(rf'data-stage="{s}" data-status="[^"]+">.*?</g>', page).group(0)  # noqa: E731
    assert ">12.5 s</text>" in node("strategy") and ">1.2 min</text>" in node("finetune")
    assert 'class="timing"' not in node("ingest")  # no record: no time shown
    assert _statuses(page)["merge"] == "failed" and "ExpectationFailed: class_balance" in page
    assert "<span class='timing'>12.5 s</span>" in page


def test_report_before_any_run_says_so(tmp_path, capsys):
    from augdag.cli import main

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    assert main(["-C", str(tmp_path), "stage", "report"]) == 0
    page = (tmp_path / "data" / "report" / "report.html").read_text(encoding="utf-8")
    assert "No run exists yet" in page and "augdag run" in page
    assert _statuses(page) == {**{s: "missing" for s in STAGES[:-1]}, "report": "this page"}
    for sid, stage in (("dataset", "ingest"), ("gate", "quality"), ("training", "finetune"),
                       ("evaluation", "evaluate")):
        assert f"missing: run the {stage} stage" in _section(page, sid)
    assert "missing: run the pipeline" in _section(page, "lineage") and "<script>" not in page
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- crossdomain

def _target_folders(src: Path, tmp: Path) -> tuple[Path, Path]:
    """The source images inverted: flat and unlabelled (crossdomain.target), and in class folders
    (evaluate.target_test)."""
    from PIL import Image, ImageOps

    target, test = tmp / "target", tmp / "target_test"
    target.mkdir()
    for f in sorted(src.glob("*/*")):
        inv = ImageOps.invert(Image.open(f).convert("L"))
        inv.save(target / f"{f.parent.name}_{f.stem}.png")
        (test / f.parent.name).mkdir(parents=True, exist_ok=True)
        inv.save(test / f.parent.name / f"{f.stem}.png")
    return target, test


@pytest.fixture(scope="module")
def xd_project(tmp_path_factory):
    """A 3-class project with only the crossdomain branch (5 CycleGAN steps) and target-domain metrics."""
    tmp = tmp_path_factory.mktemp("report-xd")
    src = image_folder(tmp / "src")
    target, test = _target_folders(src, tmp)
    root = tmp / "project"
    p = parse_params(deep_merge(SMALL, {
        "ingest": {"source": str(src), "image_size": 16},
        "strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}, "crossdomain": {"enabled": True}},
        "crossdomain": {"target": str(target),
                        "model": {"steps": 5, "width": 4, "n_res": 1, "disc_width": 4, "batch_size": 4}},
        "finetune": {"pretrained": False, "steps": 2, "eval_every": 1, "image_size": 16,
                     "online_mix": {"enabled": False}},
        "evaluate": {"target_test": str(test), "robustness": {"enabled": False}}}))
    for stage in STAGES:
        run_stage(stage, p, root)
    return root, p, len(list(target.iterdir()))


def test_crossdomain_triples_and_source_and_target_metrics(xd_project, tmp_path):
    from augdag.layout import cycle_dir
    from augdag.storage import StageData
    from augdag.tasks.report.figures import png

    root, p, n_target = xd_project
    page = (root / "data" / "report" / "report.html").read_text(encoding="utf-8")
    assert page == report.render(p, root, timings=False), "the page is a function of the outputs"
    assert _statuses(page)["crossdomain"] == "ran" and "could not render" not in page
    # the branch's summary figures
    xd = _section(page, "crossdomain")
    summary = json.loads((root / "data" / "crossdomain" / "summary.json").read_text())
    assert summary["samples"] == 6 and summary["target_images"] == n_target == 18
    assert (f"<b>6</b> raw train images translated by a CycleGAN (generator <code>{summary['generator_hash'][:16]}"
            f"</code>) trained on <b>18</b> target images;") in xd
    assert f"PSNR <b>{summary['cycle_psnr']:.2f}</b> dB, SSIM <b>{summary['cycle_ssim']:.3f}</b>" in xd
    # the grid: grid_samples rows of source, translation, reconstruction, each with the gate's psnr/ssim
    data = StageData(root / "data" / "crossdomain")
    first = data.manifest.head(p.report.grid_samples)
    rows = re.findall(r'<tr data-sample="([^"]+)">(.*?)</tr>', xd)
    assert [sid for sid, _ in rows] == list(first.sample_id) and len(rows) == p.report.grid_samples == 4
    raw = StageData(root / "data" / "ingest")
    by_id = raw.manifest.set_index("sample_id", drop=False)
    recs = StageData(cycle_dir(root), manifest=False).images(first)
    gate = pd.concat([read_manifest(root / "data" / "quality", name)
                      for name in ("manifest.parquet", "rejected.parquet")]).set_index("sample_id")
    for (sid, row), (_, r), rec in zip(rows, first.iterrows(), recs):
        imgs = re.findall(r'<img class="thumb" src="([^"]+)" alt="([^"]*)">', row)
        parent = r.parent_ids[0]
        assert imgs == [(png(raw.image(by_id.loc[parent])), parent), (png(data.image(r)), f"G({parent})"),
                        (png(rec), f"F(G({parent}))")]
        assert len({src for src, _ in imgs}) == 3, "source, translation and reconstruction differ"
        scores = json.loads(gate.loc[sid, "scores"])
        assert f"psnr {scores['psnr']:.3f}, ssim {scores['ssim']:.3f}<br>{gate.loc[sid, 'gate']}" in row
    # the samples section shows the branch like the others; the gate names the translation
    samples = _section(page, "samples")
    assert "<h3>crossdomain branch</h3>" in samples and f'alt="{first.sample_id.iloc[0]}"' in samples
    assert samples.count("<br>translation G</figcaption>") == 4
    # evaluation: source (test split) and target domain side by side, and per class
    ev = _section(page, "evaluation")
    m = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    t = m["target"]
    assert t["n_test"] == 18 and m["n_test"] == 9
    table = ev[ev.index("id='domain-accuracy'"):ev.index("</table>", ev.index("id='domain-accuracy'"))]
    assert (f"<tr><th class='left'>source (test split)</th><td>{m['accuracy']:.4f}</td><td>{m['macro_f1']:.4f}</td>"
            f"<td>9</td></tr>") in table
    assert (f"<tr><th class='left'>target (evaluate.target_test)</th><td>{t['accuracy']:.4f}</td>"
            f"<td>{t['macro_f1']:.4f}</td><td>18</td></tr>") in table
    per = ev[ev.index("id='class-accuracy'"):]
    for c in ("circle", "square", "bar"):
        assert re.search(rf"<tr><th class='left'>{c}</th><td>{m['per_class_accuracy'][c]:.3f}</td><td[^>]*>.*?</td>"
                         rf"<td>{t['per_class_accuracy'][c]:.3f}</td>", per)
    # a 2-step model may score the same on both domains: target numbers of their own land in the target cells
    copy = _copy((root, p), tmp_path)
    t = {**t, "accuracy": 0.123456, "macro_f1": 0.654321, "per_class_accuracy": {"circle": 0.25, "square": 0.5,
                                                                                 "bar": 0.75}}
    (copy / "data" / "evaluate" / "metrics.json").write_text(json.dumps({**m, "target": t}))
    ev = _section(report.render(p, copy, timings=False), "evaluation")
    assert ("<tr><th class='left'>target (evaluate.target_test)</th><td>0.1235</td><td>0.6543</td><td>18</td></tr>"
            in ev)
    assert re.search(rf"<th class='left'>square</th><td>{m['per_class_accuracy']['square']:.3f}</td><td[^>]*>.*?"
                     r"</td><td>0.500</td><td style='width:160px'><div style='background:#ff7f0e;height:10px;"
                     r"width:80px'></div></td></tr>", ev)


def test_report_without_the_crossdomain_output_or_target_metrics(xd_project, tmp_path):
    root, p, _ = xd_project
    shutil.copytree(root / "data", tmp_path / "data")
    root = tmp_path
    shutil.rmtree(root / "data" / "crossdomain")  # a project from before the branch existed
    metrics = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    (root / "data" / "evaluate" / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items()
                                                                         if k != "target"}))
    page = report.render(p, root, timings=False)
    assert "could not render" not in page
    assert "missing: run the crossdomain stage" in _section(page, "crossdomain")
    assert "crossdomain" not in _section(page, "samples")
    ev = _section(page, "evaluation")
    assert "id='domain-accuracy'" not in ev and "target" not in ev
    assert "<table id='class-accuracy'><tr><th>class</th><th>accuracy</th><th></th></tr>" in ev
    assert f"<b>{metrics['accuracy']:.4f}</b>" in ev


# ------------------------------------------------------------------------------------------ templates

STATIC = REPO / "tasks" / "report" / "static"


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8").removesuffix("\n")


def test_the_page_inlines_its_stylesheet_and_script_from_the_static_files(project):
    root, _ = project
    page = (root / "data" / "report" / "report.html").read_text(encoding="utf-8")
    css, js = _static("report.css"), _static("lineage.js")
    assert "#lineage-out>ul" in css and "lineage-index" in js
    assert page.count(f"<style>{css}</style>") == 1 and page.count(f"<script>{js}</script>") == 1
    # nothing comes from elsewhere: no stylesheet link, no script or image by URL, no @import, no url() but #ids
    assert not EXTERNAL.search(page)
    assert not re.search(r"<link\b|<script[^>]*\bsrc\s*=|@import|url\(\s*[^#\s]", page, re.I)
    assert set(re.findall(r"""\bsrc=["']?([a-z]+):""", page)) == {"data"}
    assert page.count("<script") == 2  # the index (JSON) and the lineage script
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
           "form-action 'none'; base-uri 'none'")
    assert page.count(f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">") == 1
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) > 5 and not any("\n" in svg for svg in svgs), "figures.svg.j2 renders each figure as one line"


def test_values_with_html_special_characters_are_escaped(project, tmp_path):
    root = _copy(project, tmp_path)
    _, p = project
    evil, apostrophe = '<b>&"', "it's"
    classes = json.loads((root / "data" / "ingest" / "classes.json").read_text())["classes"]
    renamed = {classes[0]: evil, classes[1]: apostrophe}
    (root / "data" / "ingest" / "classes.json").write_text(json.dumps({"classes": [renamed.get(c, c)
                                                                                   for c in classes]}))
    conf = json.loads((root / "data" / "evaluate" / "confusion.json").read_text())
    conf["classes"] = [renamed.get(c, c) for c in conf["classes"]]
    (root / "data" / "evaluate" / "confusion.json").write_text(json.dumps(conf))
    metrics = json.loads((root / "data" / "evaluate" / "metrics.json").read_text())
    metrics["per_class_accuracy"] = {renamed.get(c, c): a for c, a in metrics["per_class_accuracy"].items()}
    (root / "data" / "evaluate" / "metrics.json").write_text(json.dumps(metrics))

    page = report.render(p, root)
    assert evil not in page and "<b>&" not in page
    esc = "&lt;b&gt;&amp;&quot;"  # html.escape's entities, as the page has always written them
    assert f"<tr><td>0</td><th class='left'>{esc}</th>" in _section(page, "dataset")
    ev = _section(page, "evaluation")
    assert f"<tr><th class='left'>{esc}</th><td>" in ev  # accuracy per class
    assert f"<th title='{esc}'>0</th>" in ev and f"<th class='left'>0 {esc}</th>" in ev  # the confusion matrix
    assert "<th class='left'>it&#x27;s</th>" in ev and "<th title='it&#x27;s'>1</th>" in ev
    assert _index(page)["classes"][:2] == [evil, apostrophe], "the lineage index holds the names as data"
    assert '"\\u003cb\\u003e\\u0026\\"' in page, "escaped for JSON inside <script>, not for HTML"


def test_the_templates_escape_as_html_escape_does():
    from augdag.tasks.report import templating

    env = templating.environment()
    value = """<a href='x'>"R&B"</a>"""
    out = env.from_string("{{ v }}|{{ v|e }}|{{ [v, 1]|join(', ') }}|{{ m }}").render(v=value,
                                                                                     m=templating.escape(value))
    assert out == "|".join([html.escape(value)] * 2 + [html.escape(value) + ", 1", html.escape(value)])
    assert templating.static("report.css") == _static("report.css")
    with pytest.raises(UndefinedError):
        env.from_string("{{ nothing }}").render()


def test_the_text_report_shares_the_frame_and_escapes_its_values():
    from augdag.tasks.report import templating

    sample = {"branch": "traditional", "sample_id": "t<1>", "how": "swap & delete", "gate": "kept", "reason": "",
              "source": "a <del>b</del>", "variant": "a <ins>c&amp;d</ins>", "scores": {"q": 0.5, "dup": False}}
    page = str(templating.render(
        "text.html.j2", css=templating.static("text.css"), seed=0, classes=["R&B", "pop"],
        ingest={"train": 6, "val": 4, "test": 12}, test={"accuracy": "0.5000", "macro_f1": "0.3333", "n": 12},
        confusion={"header": ["R&amp;B", "pop"], "rows": [("R&B", ["1", "0"]), ("pop", ["0", "1"])]},
        branches=[{"branch": "mix", "made": 6, "gate_in": 6, "kept": 5, "rejected": 1, "means": '{"q": 1}'}],
        merged=[{"source": "raw", "samples": 6, "mass": "0.2500"}],
        finetune={"model": "m<1>", "steps": 3, "samples": 19, "pairs": 6, "val_accuracy": 0.5}, samples=[sample],
        devices=[("finetune", "cuda:0"), ("evaluate", "cpu")], dialogue=None))
    assert page.startswith("<!doctype html><html><head><meta charset='utf-8'><title>augdag report (text)</title>"
                           f"<style>{_static('text.css')}</style></head><body><h1>augdag report (text)</h1>")
    assert page.endswith("</td></tr></table></body></html>\n")
    assert "seed 0. Devices: finetune cuda:0, evaluate cpu.</p>" in page
    assert "classes: R&amp;B, pop;" in page and "<td>R&amp;B</td>" in page and "<th>R&amp;amp;B</th>" in page
    assert "<td>{&quot;q&quot;: 1}</td>" in page and "m&lt;1&gt;: 3 steps" in page
    row = page[page.index("<code>"):]
    assert row.startswith("<code>t&lt;1&gt;</code></td><td>swap &amp; delete</td><td>a <del>b</del></td>"
                          "<td>a <ins>c&amp;d</ins></td><td>kept</td><td>q 0.5, dup False</td></tr>")
    assert "Simulated dialogues" not in page
    turn = {"turn": 0, "intent": "R&B", "p": 0.5, "text": "a <b>turn</b>", "predicted": "pop", "ok": False}
    with_dialogue = str(templating.render(
        "text.html.j2", css="", seed=0, classes=["R&B", "pop"], ingest={"train": 6, "val": 4, "test": 12},
        test={"accuracy": "0.5000", "macro_f1": "0.3333", "n": 12}, confusion={"header": [], "rows": []},
        branches=[], merged=[], finetune={"model": "m", "steps": 3, "samples": 19, "pairs": 0, "val_accuracy": 0.5},
        samples=[], devices=[], dialogue={"splits": {"test": {"dialogues": 1, "turns": 1}}, "context": 1,
                                          "evaluate": {"accuracy_first_turn": 0.0, "accuracy_later_turns": None},
                                          "dialogues": [{"id": "test00000", "turns": [turn]}]}))
    assert ("<tr><td>0</td><td>R&amp;B (0.5)</td><td>a &lt;b&gt;turn&lt;/b&gt;</td><td>pop ✗</td></tr>"
            in with_dialogue)


# --------------------------------------------------------------------------------------- Chromium

CHROMIUM = shutil.which("chromium")


def _need_chromium():
    if CHROMIUM:
        return
    if os.geteuid() == 0:  # CI runs as root: make setup installs it there, so its absence is a failure
        pytest.fail("chromium is not installed: run `make setup` (installs Debian's chromium package as root)")
    pytest.skip("Debian's chromium package is not installed and installing it needs root "
                "(sudo apt-get install chromium, or make setup as root)")


def _chromium(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[str, list[str]]:
    """Run headless Chromium offline; (stdout, console lines from its log). Kills its whole group on a timeout."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--enable-logging=stderr", "--v=0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    return out, [ln for ln in err.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


@pytest.mark.slow
def test_report_in_headless_chromium(project, tmp_path):
    _need_chromium()
    root, _ = project
    page = root / "data" / "report" / "report.html"
    merged = read_manifest(root / "data" / "merge")
    sid = merged[merged.branch == "mix"].sample_id.iloc[0]
    parents = list(merged[merged.sample_id == sid].parent_ids.iloc[0])
    url = f"{page.as_uri()}#sample={report.frag(sid)}"

    shot = tmp_path / "report.png"
    _, console = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", url)
    assert console == [], console
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (3000, 1200) and img.std() > 10, "the screenshot is not blank"
    assert (img < 128).mean() > 0.01, "there is dark content (text, thumbnails, plots) on the page"

    dom, console = _chromium(tmp_path, "--dump-dom", url)
    assert console == [], console
    assert 'data-lineage="ready"' in dom, "the lineage script ran"
    for key in ("dag-svg", "stage-table", "dataset-table", "gate-table", "class-accuracy", "confusion", "robustness",
                "lineage-q", "lineage-out"):
        assert f'id="{key}"' in dom, key
    out = dom[dom.index('id="lineage-out"'):]
    assert out.startswith('id="lineage-out" data-state="shown"')
    shown = re.findall(r'class="lin-node" data-id="([^"]+)"', out)
    assert shown[0] == sid and set(parents) <= set(shown), shown
    assert out.count('<img class="thumb" src="data:image/png;base64,') == 1 + len(parents)
    assert "lam=" in out and "gate: raw, not gated" in out

    dom, console = _chromium(tmp_path, "--dump-dom", f"{page.as_uri()}#sample=no-such-sample")
    assert console == [], console
    assert 'data-state="not-found"' in dom and "sample no-such-sample not found" in dom
