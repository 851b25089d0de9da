"""augdag compare: strategies, statistics, outputs, the Prefect flow, the DVC stage in compare/dvc.yaml."""

import csv
import hashlib
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from augdag import compare
from augdag.params import deep_merge, parse_params
from helpers import REPO, make_project, run

# bench/seeds.py's overrides before it became a wrapper over augdag.compare, copied verbatim: every
# bench name must keep resolving (on params.yaml's defaults) to exactly these params.
OFF4 = {"psnr": "off", "ssim": "off", "label_consistency": "off", "outlier": "off"}
OLD_BENCH = {
    "none": {"strategy": {"traditional": {"enabled": False}}},
    "traditional": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}}},
    "traditional_x4": {"strategy": {"traditional": {"enabled": True, "multiplier": 4}}},
    "mixup_offline": {"strategy": {"traditional": {"enabled": False}, "mix": {"enabled": True, "multiplier": 1}},
                      "mix": {"mode": "mixup"}},
    "cutmix_offline": {"strategy": {"traditional": {"enabled": False}, "mix": {"enabled": True, "multiplier": 1}},
                       "mix": {"mode": "cutmix"}},
    "mixup_online": {"strategy": {"traditional": {"enabled": False}},
                     "finetune": {"online_mix": {"enabled": True, "mode": "mixup"}}},
    "cutmix_online": {"strategy": {"traditional": {"enabled": False}},
                      "finetune": {"online_mix": {"enabled": True, "mode": "cutmix"}}},
    "generative": {"strategy": {"traditional": {"enabled": False}, "generative": {"enabled": True, "multiplier": 1}}},
    "all": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}, "mix": {"enabled": True, "multiplier": 1},
                         "generative": {"enabled": True, "multiplier": 1}}},
    "traditional_nogate": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}}, "quality": {"modes": OFF4}},
    "traditional_gate": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}}, "quality": {"modes": {}}},
    "traditional_gate_psnr_ssim": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}},
                                   "quality": {"modes": {"label_consistency": "off", "outlier": "off"}}},
    "traditional_gate_label": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}},
                               "quality": {"modes": {"psnr": "off", "ssim": "off", "outlier": "off"}}},
    "traditional_gate_outlier": {"strategy": {"traditional": {"enabled": True, "multiplier": 1}},
                                 "quality": {"modes": {"psnr": "off", "ssim": "off", "label_consistency": "off"}}},
    "mixup_offline_nogate": {"strategy": {"traditional": {"enabled": False}, "mix": {"enabled": True, "multiplier": 1}},
                             "mix": {"mode": "mixup"}, "quality": {"modes": OFF4}},
    "cutmix_offline_nogate": {"strategy": {"traditional": {"enabled": False},
                                           "mix": {"enabled": True, "multiplier": 1}},
                              "mix": {"mode": "cutmix"}, "quality": {"modes": OFF4}},
    "generative_nogate": {"strategy": {"traditional": {"enabled": False},
                                       "generative": {"enabled": True, "multiplier": 1}},
                          "quality": {"modes": OFF4}},
    "all_nogate": {"strategy": {"traditional": {"enabled": True, "multiplier": 1},
                                "mix": {"enabled": True, "multiplier": 1},
                                "generative": {"enabled": True, "multiplier": 1}}, "quality": {"modes": OFF4}},
}


def rec(strategy, seed, test, val, **kw):
    return {"strategy": strategy, "seed": seed, "test_accuracy": test, "val_accuracy": val, "macro_f1": test - 0.01,
            "params_hash": hashlib.sha256(f"{strategy}{seed}".encode()).hexdigest(), "seconds": 1.0, **kw}


# none: 5 seeds; trad: best on test, worse on validation; mix: best on validation, 4 seeds; one: a single seed.
TEST = {"none": [0.70, 0.74, 0.72, 0.75, 0.71], "trad": [0.76, 0.77, 0.75, 0.79, 0.74], "mix": [0.72, 0.73, 0.74, 0.73]}
VAL = {"none": [0.60, 0.62, 0.61, 0.64, 0.60], "trad": [0.59, 0.61, 0.60, 0.62, 0.58], "mix": [0.66, 0.65, 0.67, 0.70]}
RECORDS = ([rec(s, i, t, v) for s in TEST for i, (t, v) in enumerate(zip(TEST[s], VAL[s]))]
           + [rec("one", 2, 0.80, 0.50)])


def t_ci(x):
    x = np.asarray(x, dtype=float)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return x.mean(), x.std(ddof=1), (hi - lo) / 2


def test_aggregate_matches_scipy():
    agg = compare.aggregate(RECORDS)
    assert list(agg["strategies"]) == ["none", "trad", "mix", "one"]
    for s in TEST:
        e = agg["strategies"][s]
        for key, data in (("test", TEST[s]), ("val", VAL[s])):
            mean, sd, half = t_ci(data)
            assert e[key]["n"] == len(data)
            assert e[key]["mean"] == pytest.approx(mean, abs=1e-12)
            assert e[key]["std"] == pytest.approx(sd, abs=1e-12)
            assert e[key]["ci95"] == pytest.approx(half, abs=1e-12)
            assert e[key]["lo"] == pytest.approx(mean - half) and e[key]["hi"] == pytest.approx(mean + half)
    # paired against none on the shared seeds (mix has seeds 0-3 only)
    for s in ("trad", "mix"):
        d = np.array(TEST[s]) - np.array(TEST["none"][:len(TEST[s])])
        mean, sd, half = t_ci(d)
        diff = agg["strategies"][s]["diff"]
        assert diff["n"] == len(d) and diff["seeds"] == list(range(len(d)))
        assert diff["mean"] == pytest.approx(mean, abs=1e-12) and diff["ci95"] == pytest.approx(half, abs=1e-12)
        assert diff["better"] == int((d > 0).sum())
        lo, hi = stats.ttest_rel(TEST[s], TEST["none"][:len(TEST[s])]).confidence_interval(0.95)
        assert (diff["lo"], diff["hi"]) == (pytest.approx(lo), pytest.approx(hi))
    assert agg["strategies"]["trad"]["diff"]["better"] == 5
    assert agg["strategies"]["none"]["diff"] is None
    one = agg["strategies"]["one"]
    assert one["test"]["mean"] == 0.80 and one["test"]["ci95"] is None and one["test"]["std"] is None
    assert one["diff"]["n"] == 1 and one["diff"]["ci95"] is None
    # trad has the best test mean, one the best single test score: neither may choose; validation does
    assert max(agg["strategies"], key=lambda s: agg["strategies"][s]["test"]["mean"]) == "one"
    assert agg["best_on_validation"] == "mix"


def test_aggregate_other_baseline_and_missing_validation():
    recs = [rec("a", 0, 0.5, None), rec("a", 1, 0.6, None), rec("b", 0, 0.7, None), rec("b", 1, 0.4, None)]
    agg = compare.aggregate(recs, baseline="b")
    assert agg["best_on_validation"] is None
    assert agg["strategies"]["a"]["val"]["n"] == 0
    assert agg["strategies"]["a"]["diff"]["mean"] == pytest.approx(0.0)
    assert agg["strategies"]["a"]["diff"]["better"] == 1
    m = compare.metrics_dict(agg)
    assert "diff_vs_b" in m["strategies"]["a"] and "diff_vs_b" not in m["strategies"]["b"]
    assert "val_mean" not in m["strategies"]["a"]  # no null values in the DVC metrics file


# The defaults bench/seeds.py's overrides were written against (before issue 5 turned every branch on and
# the gate's filter checks to warn); "filter" is each check's own default in expectations/branch.json.
OLD_DEFAULTS = {"strategy": {"mix": {"enabled": False}, "generative": {"enabled": False}},
                "quality": {"modes": {c: "filter" for c in OFF4}}}


@pytest.mark.parametrize("name", sorted(OLD_BENCH))
def test_resolve_hashes_like_old_bench_resolution(name):
    """Records made before the defaults changed stay valid: same params, same hash."""
    for seed in (0, 3):
        old = parse_params(deep_merge(deep_merge(OLD_DEFAULTS, {"seed": seed}), OLD_BENCH[name]))
        assert compare.resolve({}, name, seed) == old
        assert compare.params_hash(compare.resolve({}, name, seed)) == compare.params_hash(old)
    extra = {"finetune": {"steps": 7}, "strategy": {"traditional": {"multiplier": 2}}}
    old = parse_params(deep_merge(deep_merge(deep_merge(OLD_DEFAULTS, {"seed": 1}), OLD_BENCH[name]), extra))
    assert compare.resolve({}, name, 1, extra) == old  # bench's --set still applies last


def test_comparison_strategies_pin_what_they_mean():
    assert compare.COMPARISON == ["none", "traditional", "mix", "generative", "all", "all_nogate",
                                  "trivial_augment_wide"]
    assert set(OLD_BENCH) <= set(compare.STRATEGIES)
    # a params.yaml that turns everything on: each strategy still means what its name says
    base = {"strategy": {b: {"enabled": True, "multiplier": 3} for b in ("traditional", "mix", "generative")},
            "finetune": {"online_mix": {"enabled": True}, "online_augment": "trivial_augment_wide", "steps": 11},
            "quality": {"modes": {"psnr": "warn"}}}
    on = lambda p: {b: (getattr(p.strategy, b).enabled, getattr(p.strategy, b).multiplier)  # noqa: E731
                    for b in ("traditional", "mix", "generative")}
    expect = {"none": {}, "traditional": {"traditional"}, "mix": {"mix"}, "generative": {"generative"},
              "all": {"traditional", "mix", "generative"}, "all_nogate": {"traditional", "mix", "generative"},
              "trivial_augment_wide": {}, "randaugment": {}, "augmix": {}}
    for name, branches in expect.items():
        p = compare.resolve(base, name, 4)
        assert p.seed == 4 and p.finetune.steps == 11
        assert {b for b, (e, _) in on(p).items() if e} == set(branches), name
        assert all(m == 1 for e, m in on(p).values() if e), name
        assert not p.finetune.online_mix.enabled
        assert p.finetune.online_augment == (name if name in ("trivial_augment_wide", "randaugment", "augmix")
                                             else "none")
        gate = {c: p.quality.modes.get(c) for c in ("psnr", "ssim", "label_consistency", "outlier")}
        # the gate is pinned too: params.yaml's psnr=warn does not ungate a gated strategy
        assert set(gate.values()) == ({"off"} if name == "all_nogate" else {"filter"}), name
    with pytest.raises(Exception, match="unknown strategies"):
        compare.resolve({}, "nonesuch", 0)


def test_consistency_strategies_use_the_projects_unlabelled_pool():
    for name in ("fixmatch", "fixmatch_trivial"):
        p = compare.resolve({}, name, 0)
        assert p.finetune.consistency.enabled
        assert p.ingest.n_unlabelled_per_class == compare.UNLABELLED_PER_CLASS
        # a small folder sets as many as its classes have to spare, and the strategy keeps them
        assert compare.resolve({"ingest": {"n_unlabelled_per_class": 30}}, name, 0).ingest.n_unlabelled_per_class == 30
    # a strategy without consistency training leaves params.yaml's pool as it is
    assert compare.resolve({}, "none", 0).ingest.n_unlabelled_per_class == 0
    assert compare.resolve({"ingest": {"n_unlabelled_per_class": 30}}, "none", 0).ingest.n_unlabelled_per_class == 30


def test_params_hash_and_lenient_params_file(tmp_path):
    a, b = compare.resolve({}, "none", 0), compare.resolve({}, "none", 1)
    d = a.model_dump(mode="json", exclude={"runner"})
    assert set(d["quality"]["modes"].values()) == {"filter"}  # the suites' defaults: hashed as no entry
    d["quality"]["modes"] = {}
    canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert compare.params_hash(a) == hashlib.sha256(canon.encode()).hexdigest()
    # where the work runs is not part of a run's identity; a mode other than the default is
    assert compare.params_hash(compare.resolve({}, "none", 0, {"runner": {"kind": "dask"}})) == compare.params_hash(a)
    assert compare.params_hash(compare.resolve({}, "none", 0, {"quality": {"modes": {"psnr": "warn"}}})) \
        != compare.params_hash(a)
    assert compare.params_hash(a) == compare.params_hash(compare.resolve({}, "none", 0))
    assert compare.params_hash(a) != compare.params_hash(b)
    (tmp_path / "params.yaml").write_text("finetune: {steps: 5}\ncompare: {seeds: [0, 1]}\n")
    assert compare.load_base(tmp_path) == {"finetune": {"steps": 5}}


def test_run_cached_reuses_by_params_hash(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(params, strategy, seed, workdir, base_dir=None):
        calls.append((strategy, seed, params.finetune.steps))
        return rec(strategy, seed, 0.5, 0.4, params_hash=compare.params_hash(params))

    monkeypatch.setattr(compare, "run_one", fake_run_one)
    p = compare.resolve({}, "none", 0)
    r1, ran1 = compare.run_cached(p, "none", 0, tmp_path)
    path = compare.record_path(tmp_path, "none", 0, compare.params_hash(p))
    assert ran1 and path.exists() and json.loads(path.read_text()) == r1
    r2, ran2 = compare.run_cached(compare.resolve({}, "none", 0), "none", 0, tmp_path)
    assert not ran2 and r2 == r1 and len(calls) == 1
    q = compare.resolve({"finetune": {"steps": 9}}, "none", 0)
    _, ran3 = compare.run_cached(q, "none", 0, tmp_path)
    assert ran3 and calls[-1] == ("none", 0, 9) and len(list((tmp_path / "runs").glob("*.json"))) == 2
    _, ran4 = compare.run_cached(p, "none", 0, tmp_path, force=True)
    assert ran4 and len(calls) == 3
    # a record whose content does not carry the hash its name says is not trusted
    path.write_text(json.dumps({**r1, "params_hash": "0" * 64}))
    assert compare.cached(tmp_path, "none", 0, p) is None
    assert not list(tmp_path.rglob(".*tmp*"))


def test_outputs_are_consistent_and_self_contained(tmp_path):
    agg = compare.write_outputs(tmp_path, RECORDS)
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"comparison.json", "comparison.csv", "comparison.md", "comparison.svg", "comparison.html"}
    m = json.loads((tmp_path / "comparison.json").read_text())
    assert m["best_on_validation"] == "mix" and m["baseline"] == "none"
    assert m["strategies"]["trad"]["test_mean"] == round(agg["strategies"]["trad"]["test"]["mean"], 6)
    assert m["strategies"]["trad"]["diff_vs_none_ci95"] == round(agg["strategies"]["trad"]["diff"]["ci95"], 6)
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert len(rows) == len(RECORDS) and list(rows[0]) == ["strategy", "seed", "test_accuracy", "val_accuracy",
                                                "target_accuracy"]
    assert {(r["strategy"], int(r["seed"])) for r in rows} == {(r["strategy"], r["seed"]) for r in RECORDS}
    md = (tmp_path / "comparison.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in table[1:]] == ["none", "trad", "mix", "one"]
    mean, _, half = t_ci(TEST["trad"])
    assert f"| {100 * mean:.1f} ± {100 * half:.1f} |" in table[2] and "| 5/5 |" in table[2]
    assert "Best on validation: **mix**" in md
    svg = (tmp_path / "comparison.svg").read_text()
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) >= len(RECORDS) * 2
    page = (tmp_path / "comparison.html").read_text()
    for text in (svg, page):
        low = text.lower()
        assert "<script" not in low and "href=" not in low and "src=" not in low and "@import" not in low
    assert svg.strip() in page and "<td>trad</td>" in page


def test_report_has_a_strategy_comparison_section(tmp_path):
    from augdag.tasks.report import render

    def comparison_section(page: str) -> str:
        return page.split('<section id="comparison">')[1].split("</section>")[0]

    p = parse_params({})
    before = comparison_section(render(p, tmp_path))
    assert "<h2>Strategy comparison</h2>" in before and '<p class="missing">missing: run augdag compare</p>' in before
    compare.write_outputs(tmp_path / "data" / "compare", RECORDS)
    page = render(p, tmp_path)
    assert "missing: run augdag compare" not in page
    section = comparison_section(page)
    assert "Best on validation: <b>mix</b>" in section and "<th>trad</th>" in section and "<svg" in section


@pytest.mark.slow
def test_compare_command_refuses_bad_input_before_running(tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    shutil.copy2(REPO / "params.yaml", proj / "params.yaml")
    res = run(["augdag", "-C", str(proj), "compare", "--strategies", "none", "nonesuch"], tmp_path, check=False)
    assert res.returncode == 2 and "unknown strategies ['nonesuch']" in res.stderr and "Traceback" not in res.stderr
    (proj / "params.yaml").write_text("finetune: {steps: 0}\n")
    res = run(["augdag", "-C", str(proj), "compare", "--seeds", "3"], tmp_path, check=False)
    assert res.returncode == 2 and "finetune.steps = 0" in res.stderr
    assert not (proj / "data").exists()


def _copy_compare_files(proj: Path) -> None:
    shutil.copytree(REPO / "compare", proj / "compare", ignore=shutil.ignore_patterns("dvc.lock"))
    (proj / ".dvc" / "plots").mkdir(exist_ok=True)
    shutil.copy2(REPO / ".dvc" / "plots" / "augdag_strategies.json", proj / ".dvc" / "plots")


def test_plain_dvc_repro_leaves_the_comparison_alone(tmp_path):
    """compare/dvc.yaml is a pipeline of its own: `dvc repro` without targets runs the root dvc.yaml only."""
    proj = tmp_path / "p"
    proj.mkdir()
    shutil.copy2(REPO / "params.yaml", proj / "params.yaml")
    for name in ("augdag", "tasks", "flows", "expectations"):  # the comparison stage's deps
        shutil.copytree(REPO / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    (proj / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: mkdir -p data && echo hi > data/hello\n"
                                   "    outs: [data/hello]\n")
    run(["git", "init", "-q"], proj)
    run(["dvc", "init", "-q"], proj)
    _copy_compare_files(proj)
    res = run(["dvc", "repro"], proj)
    assert "Running stage 'hello'" in res.stdout and "compare" not in res.stdout
    res = run(["dvc", "repro", "--dry", "compare/dvc.yaml"], proj)
    assert "Running stage 'compare/dvc.yaml:compare'" in res.stdout
    assert "augdag -C .. compare --strategies " + " ".join(compare.COMPARISON) in " ".join(res.stdout.split())


TINY = {
    "ingest": {"n_per_class": 2, "n_val_per_class": 1, "n_test_per_class": 3},
    "quality": {"reference_image_size": 16},
    "finetune": {"steps": 2, "batch_size": 7, "image_size": 32, "eval_every": 1, "pretrained": False, "num_threads": 1},
    "evaluate": {"robustness": {"enabled": False}},
}


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*.json"))}


@pytest.mark.slow
def test_compare_flow_end_to_end(tmp_path, prefect_server, capsys):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from augdag.cli import main
    from augdag.flows.compare import run_compare
    from augdag.params import write_overrides

    proj = make_project(tmp_path / "proj", TINY)
    _copy_compare_files(proj)
    # two strategies without a branch: a branch adds the gate's reference classifier and GE (~25 s a run here)
    res = run_compare(str(proj), strategies=["none", "mixup_online"], seeds=[0, 1])
    assert (res["runs"], res["ran"], res["cached"]) == (4, 4, 0)
    out = proj / "data" / "compare"
    assert {"comparison.json", "comparison.csv", "comparison.md", "comparison.svg", "comparison.html", "runs"} \
        <= {p.name for p in out.iterdir()}
    assert not (out / "work").exists()  # scratch data deleted
    runs = out / "runs"
    recs = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    assert len(recs) == 4 and {(r["strategy"], r["seed"]) for r in recs} == {(s, i) for s in ("none", "mixup_online")
                                                                            for i in (0, 1)}
    for r in recs:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["val_accuracy"] <= 1.0 and r["val_loss"] > 0
        assert set(r["stage_seconds"]) == set(compare.STAGES)
        assert compare.record_path(out, r["strategy"], r["seed"], r["params_hash"]).exists()
        assert r["gate_pass_rate"] == {} and r["robustness"] is None
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert sorted((r["strategy"], int(r["seed"]), float(r["test_accuracy"])) for r in rows) == \
        sorted((r["strategy"], r["seed"], r["test_accuracy"]) for r in recs)
    md = (out / "comparison.md").read_text()
    assert "| none | 2 |" in md and "| mixup_online | 2 |" in md
    metrics = json.loads((out / "comparison.json").read_text())
    assert metrics["strategies"]["none"]["test_mean"] == pytest.approx(
        np.mean([r["test_accuracy"] for r in recs if r["strategy"] == "none"]), abs=1e-6)

    # the same again through the command line: every record reused, none rewritten
    before = _snapshot(runs)
    assert main(["-C", str(proj), "compare", "--strategies", "none", "mixup_online", "--seeds", "0", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| mixup_online | 2 |" in printed and "(0 runs ran, 4 cached)" in printed
    assert _snapshot(runs) == before

    # a changed param reruns (one run here), under a new hash, beside the old records
    write_overrides(proj / "params.yaml", {"finetune": {"lr": 0.002}})
    res = run_compare(str(proj), strategies=["none"], seeds=[0])
    assert (res["ran"], res["cached"]) == (1, 0)
    after = _snapshot(runs)
    assert len(after) == 5 and all(after[k] == v for k, v in before.items())

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["augdag-compare", "augdag-compare-table", "augdag-compare-progress"])))

    arts = asyncio.run(artifacts())
    kinds = {a.key: a.type for a in arts}
    assert kinds == {"augdag-compare": "markdown", "augdag-compare-table": "table",
                     "augdag-compare-progress": "progress"}
    assert all(a.data == 100.0 for a in arts if a.type == "progress")
    assert any("comparison.html" in a.data and "| none |" in a.data for a in arts if a.type == "markdown")

    # DVC lists the comparison with the project's metrics and plots
    # (raw_decode: DVC may print a warning about the main pipeline's missing files after the JSON)
    shown = json.JSONDecoder().raw_decode(run(["dvc", "metrics", "show", "--json"], proj).stdout)[0]
    (rev,) = shown.values()  # the workspace (named "" before the first commit)
    files = rev["data"]
    got = files["data/compare/comparison.json"]["data"]
    assert got["strategies"]["none"]["n"] == 1 and "test_mean" in got["strategies"]["none"]
    plots = json.JSONDecoder().raw_decode(run(["dvc", "plots", "show", "--json"], proj).stdout)[0]
    ids = [k for k in plots["data"] if "by strategy" in k]
    assert len(ids) == 2, plots.get("errors")
    assert not [e for e in plots.get("errors", []) if "by strategy" in e.get("name", "")]
    values = plots["data"][ids[0]][0]["content"]["data"]["values"]
    assert len(values) == 1 and values[0]["strategy"] == "none"


def test_relative_paths_mean_the_project_folder_for_text_too(tmp_path):
    """A scratch run sees params.yaml's relative paths (image and text) as paths in the project folder."""
    from augdag.compare import _absolute_paths
    from augdag.params import parse_params

    p = parse_params({"modality": "text", "ingest": {"source": "imgs"},
                      "text": {"ingest": {"source": "data/reviews.csv"},
                               "generative": {"marian": {"eng-spa": "m/en-es", "spa-eng": "/abs/es-en"},
                                              "paraphrase": {"model_path": "lm"}},
                               "finetune": {"encoder_path": "enc"}}})
    q = _absolute_paths(p, tmp_path)
    assert q.ingest.source == str(tmp_path / "imgs")
    assert q.text.ingest.source == str(tmp_path / "data" / "reviews.csv")
    assert q.text.generative.marian == {"eng-spa": str(tmp_path / "m" / "en-es"), "spa-eng": "/abs/es-en"}
    assert q.text.generative.paraphrase.model_path == str(tmp_path / "lm")
    assert q.text.finetune.encoder_path == str(tmp_path / "enc")
    assert _absolute_paths(parse_params({"modality": "text"}), tmp_path).text.ingest.source == "rotten-tomatoes"


def test_target_domain_accuracy_is_aggregated_and_paired_when_the_records_have_it():
    recs = [{"strategy": s, "seed": k, "test_accuracy": 0.7, "val_accuracy": 0.6, "target_accuracy": t + 0.01 * k}
            for s, t in (("none", 0.40), ("crossdomain", 0.55)) for k in range(3)]
    agg = compare.aggregate(recs)
    xd = agg["strategies"]["crossdomain"]
    assert xd["target"]["mean"] == pytest.approx(0.56) and xd["target_diff"]["mean"] == pytest.approx(0.15)
    assert xd["target_diff"]["better"] == 3 and agg["strategies"]["none"]["target_diff"] is None
    md = compare.markdown(agg)
    assert "target-domain accuracy" in md and "+15.0" in md
    assert compare.metrics_dict(agg)["strategies"]["crossdomain"]["target_diff_vs_none"] == pytest.approx(0.15)
    # records without it (no evaluate.target_test) keep the table as it was
    plain = compare.aggregate([{k: v for k, v in r.items() if k != "target_accuracy"} for r in recs])
    assert "target-domain" not in compare.markdown(plain)
