"""augdag tune: the search space resolves to valid params, trials are scored on validation folds with their
own seeds, poor trials are pruned, the winner is the best completed trial and --apply writes it; the real
command runs through Prefect on a tiny project and resumes from its cache."""

import html
import json
import statistics

import optuna
import pytest
import yaml

from augdag import compare, tune
from augdag.errors import AugdagError
from augdag.params import deep_merge, load_params
from helpers import BIN, REPO, make_project, run


def test_every_point_of_the_space_resolves_to_valid_params():
    base = compare.load_base(REPO)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        knobs, over = tune.suggest(trial)
        p = tune._params(base, over, tune.FOLD_SEED)
        assert p.seed == tune.FOLD_SEED
        for b in ("traditional", "mix", "generative"):
            plan = getattr(p.strategy, b)
            assert plan.enabled == bool(knobs[b]) and (not plan.enabled or plan.multiplier == knobs[b])
        assert p.finetune.online_augment == knobs["online_augment"]
        assert p.finetune.online_mix.enabled == (knobs["online_mix"] != "off")
        if knobs["traditional"]:
            assert p.traditional.ops.hflip.p == knobs["hflip"]
        gate = set(p.quality.modes.values())
        assert gate == ({"off"} if knobs.get("gate") == "off" else {"filter"})
        assert "consistency" not in knobs and not p.finetune.consistency.enabled  # no unlabelled pool
        seen.add(knobs["online_augment"])
        study.tell(trial, 0.0)
    assert seen == {"none", "trivial_augment_wide", "randaugment", "augmix"}
    pooled = deep_merge(base, {"ingest": {"n_unlabelled_per_class": 5}})
    both = set()
    for _ in range(20):
        trial = study.ask()
        knobs, over = tune.suggest(trial, unlabelled=True)
        assert tune._params(pooled, over, 0).finetune.consistency.enabled == (knobs["consistency"] == "fixmatch")
        both.add(knobs["consistency"])
        study.tell(trial, 0.0)
    assert both == {"off", "fixmatch"}


def test_text_projects_search_the_text_branches():
    base = deep_merge(compare.load_base(REPO), {"modality": "text"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    strengths = []
    for _ in range(40):
        trial = study.ask()
        knobs, over = tune.suggest_text(trial)
        assert set(knobs) <= {"traditional", "mix", "generative", "strength", "gate"}
        p = tune._params(base, over, 0)
        for b in ("traditional", "mix", "generative"):
            plan = getattr(p.strategy, b)
            assert plan.enabled == bool(knobs[b]) and (not plan.enabled or plan.multiplier == knobs[b])
        ops = p.text.traditional.ops
        if knobs["traditional"]:
            a = min(0.5, 0.1 * knobs["strength"])
            assert ops.synonym.alpha == ops.insert.alpha == ops.swap.alpha == ops.delete.rate == pytest.approx(a, 1e-3)
            strengths.append(knobs["strength"])
        assert "online_augment" not in over.get("finetune", {})  # image-only knobs stay out of a text trial
        study.tell(trial, 0.0)
    assert min(strengths) < 1 < max(strengths)


def _fake(scores_by_policy: dict, calls: list):
    """A fold runner whose validation accuracy depends on the online policy and a little on the seed."""
    def run(params):
        calls.append((params.finetune.online_augment, params.seed))
        acc = scores_by_policy[params.finetune.online_augment] + 0.001 * (params.seed - tune.FOLD_SEED)
        return {"val_accuracy": acc}
    return run


SCORES = {"none": 0.50, "trivial_augment_wide": 0.60, "randaugment": 0.58, "augmix": 0.20}


def test_search_scores_folds_prunes_poor_trials_and_keeps_the_best(tmp_path):
    proj = make_project(tmp_path / "p")
    calls = []
    res = tune.search(proj, trials=16, folds=3, seed=0, fold_runner=_fake(SCORES, calls), log=lambda *_: None)
    rows = res["rows"]
    assert len(rows) == 16 and res["completed"] + res["pruned"] == 16
    assert {s for _, s in calls} == {tune.FOLD_SEED, tune.FOLD_SEED + 1, tune.FOLD_SEED + 2}  # folds, own seeds
    for r in rows:
        assert r["val_accuracy_mean"] == pytest.approx(statistics.fmean(r["val_accuracy"]), abs=1e-6)
        assert len(r["val_accuracy"]) == (3 if r["state"] == "complete" else len(r["val_accuracy"]))
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert any(r["knobs"]["online_augment"] == "augmix" for r in pruned)  # the poorest policy is cut short
    assert all(r["knobs"]["online_augment"] != "trivial_augment_wide" for r in pruned)  # never the best
    assert all(len(r["val_accuracy"]) < 3 for r in pruned)  # pruned before its last fold
    complete = [r for r in rows if r["state"] == "complete"]
    best = res["best"]
    assert best["val_accuracy_mean"] == max(r["val_accuracy_mean"] for r in complete)
    assert best["knobs"]["online_augment"] == "trivial_augment_wide"
    out = proj / "data" / "tune"
    table = (out / "trials.csv").read_text().splitlines()
    assert len(table) == 17 and table[0].startswith("trial,state,val_accuracy_mean")
    assert json.loads((out / "metrics.json").read_text())["best_val_accuracy"] == best["val_accuracy_mean"]
    assert json.loads((out / "tune.json").read_text())["best"]["set"] == best["set"]
    again = tune.search(proj, trials=16, folds=3, seed=0, fold_runner=_fake(SCORES, []), log=lambda *_: None)
    assert again["rows"] == rows  # the seeded sampler proposes the same trials

    p = tune.apply(proj, res)
    assert p.finetune.online_augment == "trivial_augment_wide"
    assert load_params(proj / "params.yaml").finetune.online_augment == "trivial_augment_wide"
    resolved = compare.resolve(compare.load_base(proj), "params", 3)  # the `params` strategy: params.yaml as is
    assert resolved.finetune.online_augment == "trivial_augment_wide" and resolved.seed == 3


def test_a_text_search_picks_and_applies_text_knobs(tmp_path):
    proj = make_project(tmp_path / "t", {"modality": "text"})

    def fold(params):  # more EDA variants score higher; embedding Mixup costs
        assert params.modality == "text"
        t, m = params.strategy.traditional, params.strategy.mix
        return {"val_accuracy": 0.6 + 0.02 * (t.multiplier if t.enabled else 0) - 0.05 * m.enabled}

    res = tune.search(proj, trials=12, folds=2, seed=0, fold_runner=fold, log=lambda *_: None)
    best = res["best"]["knobs"]
    assert best["mix"] == 0 and best["traditional"] == max(r["knobs"]["traditional"] for r in res["rows"]
                                                           if r["state"] == "complete" and not r["knobs"]["mix"])
    p = tune.apply(proj, res)
    assert p.strategy.traditional.multiplier == best["traditional"] and not p.strategy.mix.enabled
    assert load_params(proj / "params.yaml").text.traditional.ops.swap.alpha == pytest.approx(
        min(0.5, 0.1 * best["strength"]), abs=1e-4)


def test_the_report_shows_the_search(tmp_path):
    from augdag.params import parse_params
    from augdag.tasks.report import render

    def part(page: str) -> str:
        return page.split('<section id="search">')[1].split("</section>")[0]

    proj = make_project(tmp_path / "p")
    p = parse_params({})
    assert "missing: run augdag tune" in part(render(p, proj))
    res = tune.search(proj, trials=8, folds=2, seed=0, fold_runner=_fake(SCORES, []), log=lambda *_: None)
    section = part(render(p, proj))
    assert "missing" not in section
    assert section.count("<tr><th>") == 1 + 8  # the header and one row per trial
    assert f"Winner: trial <b>{res['best']['trial']}</b>" in section
    assert f"{100 * res['best']['val_accuracy_mean']:.1f} %" in section
    assert all(f"--set {html.escape(line)}" in section for line in res["best"]["set"]) and res["best"]["set"]
    assert section.count("<td>pruned</td>") == res["pruned"]


def test_search_refuses_an_empty_budget(tmp_path):
    proj = make_project(tmp_path / "p")
    with pytest.raises(AugdagError, match="--trials"):
        tune.search(proj, trials=0, fold_runner=lambda p: {"val_accuracy": 0.0})


TINY = {
    "ingest": {"image_size": 16, "n_per_class": 2, "n_val_per_class": 1, "n_test_per_class": 1},
    "generative": {"model": {"steps": 5, "batch_size": 8, "width": 8, "latent_dim": 4}},
    "quality": {"reference_image_size": 16},
    "finetune": {"steps": 2, "batch_size": 4, "image_size": 16, "eval_every": 1, "pretrained": False},
}


@pytest.mark.slow
def test_augdag_tune_runs_through_prefect_applies_the_winner_and_resumes(tmp_path):
    proj = make_project(tmp_path / "p", TINY)
    cmd = [str(BIN / "augdag"), "tune", "--trials", "2", "--folds", "2"]
    first = run(cmd, proj)
    assert "tune: 2 trials" in first.stdout and "add --apply" in first.stdout, first.stdout
    out = proj / "data" / "tune"
    result = json.loads((out / "tune.json").read_text())
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == sum(len(r["val_accuracy"]) for r in result["rows"])
    assert all("test" not in k for r in runs for k in json.loads(r.read_text()))  # validation only
    assert not (out / "work").exists()
    again = run([*cmd, "--apply"], proj)
    assert json.loads((out / "tune.json").read_text())["rows"] == result["rows"]  # from the cache: same trials
    assert sorted((out / "runs").glob("*.json")) == runs
    assert "written into params.yaml" in again.stdout
    written = yaml.safe_load((proj / "params.yaml").read_text())
    for key, value in result["best"]["overrides"]["strategy"].items():
        assert written["strategy"][key] == value
