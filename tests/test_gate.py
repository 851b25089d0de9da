"""The quality gate: strategy-aware scores, the sliding-window filter, the vectorised row checks, per-check modes,
rejected manifest."""

import json

import numpy as np
import pandas as pd
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from augdag import checks, gx, ops, scoring
from augdag.errors import DataError, ExpectationFailed, ParamsError
from augdag.params import parse_params
from augdag.storage import read_manifest
from augdag.tasks import run_stage
from augdag.tasks.quality import scores as image_scores


def _shirt(seed=0, size=28):
    """A Fashion-MNIST-like object: a bright textured blob on a black background."""
    r = np.random.default_rng(seed)
    img = np.zeros((size, size, 1), np.uint8)
    img[5:23, 7:21] = 120 + r.integers(0, 100, (18, 14, 1))
    return img


def test_rotated_sample_is_judged_on_content_not_on_rotation():
    src = _shirt()
    applied = [{"op": "rotation", "angle": 12.0}]
    sample = ops.apply(src, applied)
    naive = peak_signal_noise_ratio(src, sample, data_range=255)
    s = image_scores.traditional_scores(src[None], sample[None], [applied])
    assert naive < 30, "a direct comparison would reject the rotated sample"
    assert s["psnr"][0] == 100.0 and s["ssim"][0] == pytest.approx(1.0)
    assert 0.7 < s["in_frame"][0] < 1.0  # the corners came from outside the frame


def test_photometric_damage_after_geometry_is_what_is_scored():
    src = _shirt(1)
    geo = [{"op": "hflip"}, {"op": "affine", "tx": 2, "ty": -1, "scale": 1.05}]
    noise = [{"op": "gaussian_noise", "std": 0.08, "noise_seed": 7}]
    sample = ops.apply(src, geo + noise)
    aligned, mask = image_scores.aligned_source(src, geo + noise)
    assert np.array_equal(aligned, ops.apply(src, geo))
    s = image_scores.traditional_scores(src[None], sample[None], [geo + noise])
    # equals the masked comparison of the noisy sample with the geometrically aligned source
    err = (sample.astype(float) - aligned.astype(float))[mask]
    assert s["psnr"][0] == pytest.approx(10 * np.log10(255 ** 2 / np.mean(err ** 2)), abs=1e-6)
    assert s["psnr"][0] < 30 and s["ssim"][0] < 0.85
    dark = ops.apply(src, geo + [{"op": "color_jitter", "brightness": 0.4, "contrast": 1.0, "saturation": 1.0}])
    d = image_scores.traditional_scores(src[None], dark[None], [geo + [{"op": "color_jitter", "brightness": 0.4,
                                                                 "contrast": 1.0, "saturation": 1.0}]])
    assert d["psnr"][0] < 20, "an over-dark sample must score low"
    full = structural_similarity(ops.apply(src, geo)[..., 0], dark[..., 0], data_range=255, full=True)[1]
    crop = (slice(3, -3), slice(3, -3))  # skimage averages the map without a 3-pixel border
    assert d["ssim"][0] == pytest.approx(full[crop][mask[crop]].mean(), abs=1e-3)


def test_aligned_sources_in_a_batch_equal_one_at_a_time():
    """The batched alignment (shared op kernels, the mask as an extra channel) gives aligned_source's bytes for
    every mix of geometric ops, grey and RGB, quarter turns and crops included, photometric ops ignored."""
    from augdag.params import OpsParams

    ops_cfg = OpsParams.model_validate({"hflip": {"p": 0.5}, "vflip": {"p": 0.3}, "rotation": {"p": 0.6},
                                        "resized_crop": {"p": 0.4}, "affine": {"p": 0.5},
                                        "gaussian_noise": {"p": 0.3}})
    for c in (1, 3):
        g = np.random.default_rng(c)
        src = g.integers(0, 256, (40, 20, 24, c), dtype=np.uint8)
        applied = [ops.make_params(ops_cfg, 1000 * c + i, 20, 24) for i in range(40)]
        applied[0] = [{"op": "rotation", "angle": 90.0}]
        applied[1] = []
        composed = [i % 2 == 0 for i in range(40)]  # records of both kinds (one warp, one per op) in a chunk
        got, mask = image_scores.aligned_sources(src, applied, composed)
        assert len({tuple(p["op"] for p in a) for a in applied}) > 5, "several op groups"
        for i in range(40):
            one, m = image_scores.aligned_source(src[i], applied[i], composed[i])
            np.testing.assert_array_equal(got[i], one)
            np.testing.assert_array_equal(mask[i], m)
        assert mask[1].all() and not mask.all()


def test_a_sample_made_with_one_warp_is_judged_against_that_warp():
    """The stage's samples (composed geometry) align with their source through the same warp: an intact rotated
    and scaled sample scores as identical; the same record judged as one resampling per op would not."""
    src = _shirt(4)
    applied = [{"op": "hflip"}, {"op": "rotation", "angle": -11.0}, {"op": "affine", "tx": 1, "ty": 2, "scale": 1.08}]
    sample = ops.apply(src, applied, composed=True)
    s = image_scores.traditional_scores(src[None], sample[None], [applied], [True])
    assert s["psnr"][0] == 100.0 and s["ssim"][0] == pytest.approx(1.0)
    assert 0.6 < s["in_frame"][0] < 1.0
    old = image_scores.traditional_scores(src[None], sample[None], [applied], [False])
    assert old["psnr"][0] < 40


def test_reference_classifier_pickles_without_its_backbone():
    """A Dask worker gets the reference as the probe and its settings (a few KB), builds the backbone once, and
    scores exactly as the original does."""
    import pickle

    g = np.random.default_rng(0)
    imgs = np.stack([_shirt(i) for i in range(12)])
    imgs[6:] = imgs[6:, ::-1]  # two classes: upright and upside down
    ref = image_scores.ReferenceClassifier(imgs, np.repeat([0, 1], 6), 2, image_size=32, depth=5)
    blob = pickle.dumps(ref)
    assert len(blob) < 20_000, len(blob)
    again = pickle.loads(blob)
    test = g.permutation(imgs)
    np.testing.assert_array_equal(again.proba(test), ref.proba(test))
    assert ref.embed(imgs).shape == (12, 112)  # depth 5: 112 channels


def test_mix_scores_weight_parents_by_lambda():
    a, b = _shirt(2), _shirt(3)[::-1].copy()
    from augdag import mixing

    x = mixing.apply(a, b, {"op": "mixup", "lam": 0.8})
    s = image_scores.mix_scores(a[None], b[None], x[None], np.array([0.8]))
    pa = peak_signal_noise_ratio(a, x, data_range=255)
    pb = peak_signal_noise_ratio(b, x, data_range=255)
    assert s["psnr"][0] == pytest.approx(0.8 * pa + 0.2 * pb, abs=1e-3)


def test_label_prob_of_soft_and_hard_labels():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    targets = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    assert scoring.label_prob(probs, targets) == pytest.approx([0.7, 0.45])


def test_window_z_uses_only_the_previous_window():
    scores = [1.0, 2.0] * 10 + [10.0, np.nan, 1.5]
    z = scoring.window_z(scores, window_size=4, min_history=4)
    assert np.isnan(z[:4]).all()  # warm-up
    assert z[4] == pytest.approx(-1.0)  # window [1, 2, 1, 2]: mean 1.5, std 0.5
    assert z[20] == pytest.approx(17.0)  # 10 against [1, 2, 1, 2]
    assert np.isnan(z[21])  # NaN score: no z, and it does not enter the window
    # window [2, 1, 2, 10]: mean 3.75, std 3.49...
    w = np.array([2.0, 1.0, 2.0, 10.0])
    assert z[22] == pytest.approx((1.5 - w.mean()) / w.std())
    const = scoring.window_z([3.0] * 12 + [3.0, 4.0], window_size=100)
    assert const[12] == 0.0 and const[13] == scoring.Z_CAP


SMALL = {
    "ingest": {"n_per_class": 3, "n_val_per_class": 1, "n_test_per_class": 1},
    "strategy": {"traditional": {"enabled": True, "multiplier": 2}, "mix": {"enabled": True, "multiplier": 1},
                 "generative": {"enabled": False}},
    # the gate filtering, as the suites define it (params.yaml's default only warns)
    "quality": {"modes": {"psnr": "filter", "ssim": "filter", "label_consistency": "filter", "outlier": "filter"}},
    "finetune": {"steps": 2, "batch_size": 8, "image_size": 32},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """ingest + branches once: half of the traditional samples get strong noise."""
    root = tmp_path_factory.mktemp("gate")
    over = {**SMALL, "traditional": {"ops": {"gaussian_noise": {"p": 0.5, "std": [0.15, 0.2]}}}}
    p = parse_params(over)
    for stage in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain"):
        run_stage(stage, p, root)
    return root, over


def _with(over, **sections):
    from augdag.params import deep_merge

    return parse_params(deep_merge(over, sections))


def test_gate_filters_noisy_samples_and_records_why(project):
    root, over = project
    p = _with(over, quality={"outlier": {"score": {"traditional": None, "mix": None}}})
    summary = run_stage("quality", p, root)
    kept = read_manifest(root / "data" / "quality")
    rejected = read_manifest(root / "data" / "quality", "rejected.parquet")
    trad = read_manifest(root / "data" / "traditional")
    noisy = {sid for sid, q in zip(trad.sample_id, trad.op_params)
             if any(o["op"] == "gaussian_noise" for o in json.loads(q)["ops"])}
    rej_trad = set(rejected[rejected.branch == "traditional"].sample_id)
    assert noisy and rej_trad and rej_trad <= set(trad.sample_id)
    assert noisy <= rej_trad, "every strongly noised sample fails psnr > 30 dB"
    assert summary["traditional"]["rejected"] == len(rej_trad)
    assert set(kept.sample_id).isdisjoint(rejected.sample_id)
    assert len(kept) + len(rejected) == len(trad) + len(read_manifest(root / "data" / "mix"))
    for _, r in rejected[rejected.sample_id.isin(noisy)].iterrows():
        assert "psnr" in r.gate_reason.split("; ") and r.gate == "rejected"
        assert json.loads(r.scores)["psnr"] < 30
    assert (kept.gate == "kept").all() and all("label_prob" in json.loads(s) for s in kept.scores)
    full = json.loads((root / "data" / "quality" / "summary.json").read_text())
    by_psnr = sum("psnr" in r.split("; ") for r in rejected.gate_reason)
    assert full["traditional"]["rejected_by"]["psnr"] == by_psnr >= len(noisy)
    assert full["traditional"]["checks"]["outlier"]["mode"] == "off"
    metrics = json.loads((root / "data" / "quality" / "metrics.json").read_text())
    assert metrics["traditional"]["pass_rate"] == pytest.approx(len(trad.sample_id) and
                                                                1 - len(rej_trad) / len(trad), abs=1e-6)
    psnr = pd.concat([kept, rejected])
    psnr = np.array([json.loads(s)["psnr"] for b, s in zip(psnr.branch, psnr.scores) if b == "traditional"
                     and json.loads(s).get("psnr") is not None], np.float64)
    assert metrics["traditional"]["scores"]["psnr"] == pytest.approx(
        {"mean": psnr.mean(), "p10": np.quantile(psnr, 0.1)}, abs=1e-3)  # over kept and rejected rows
    assert set(metrics["mix"]["scores"]) == {"psnr", "ssim", "label_prob"}
    assert (root / "data" / "validation" / "quality" / "traditional.json").exists()
    index = root / "data" / "validation" / "quality-docs" / "index.html"
    assert index.exists() and "branch" in index.read_text()


def test_modes_warn_fail_off_and_unknown_names(project):
    root, over = project
    warn = run_stage("quality", _with(over, quality={"modes": {"psnr": "warn", "ssim": "warn", "outlier": "off",
                                                                  "label_consistency": "off"}}), root)
    assert warn["traditional"]["rejected"] == 0
    with pytest.raises(ExpectationFailed, match=r"psnr") as err:
        run_stage("quality", _with(over, quality={"modes": {"psnr": "fail"}}), root)
    assert "~trad" in str(err.value), "the message names offending samples"
    assert read_manifest(root / "data" / "quality", "rejected.parquet").empty, "the earlier output stays"
    with pytest.raises(ParamsError, match=r"quality.modes: unknown check name\(s\) \['psnrr'\]"):
        run_stage("quality", _with(over, quality={"modes": {"psnrr": "filter"}}), root)
    with pytest.raises(ParamsError, match=r"quality.modes.parents_exist = filter: .* picks no rows"):
        run_stage("quality", _with(over, quality={"modes": {"parents_exist": "filter"}}), root)
    with pytest.raises(ParamsError, match=r"quality.modes.psnr"):
        parse_params({"quality": {"modes": {"psnr": "drop"}}})


def test_label_consistency_threshold_rejects_what_the_reference_doubts(project):
    root, over = project
    s = run_stage("quality", _with(over, quality={"thresholds": {"mix": {"label_prob": 0.999}},
                                                  "outlier": {"score": {"mix": None}}}), root)
    rejected = read_manifest(root / "data" / "quality", "rejected.parquet")
    mix_rej = rejected[rejected.branch == "mix"]
    assert s["mix"]["rejected"] == len(mix_rej) > 0
    assert all("label_consistency" in r.split("; ") for r in mix_rej.gate_reason)
    assert all(json.loads(x)["label_prob"] < 0.999 for x in mix_rej.scores)


def test_merge_checks_class_balance_and_augmented_share(project):
    root, over = project
    run_stage("quality", parse_params(over), root)
    s = run_stage("merge", parse_params(over), root)
    assert 0 < s["checks"]["augmented_share"] < 1 and "class_balance" in s["checks"]["passed"]
    strict = _with(over, merge={"augmented_share": [0.99, 1.0]}, quality={"modes": {"augmented_share": "fail"}})
    with pytest.raises(ExpectationFailed, match="augmented_share"):
        run_stage("merge", strict, root)


def test_every_gate_check_name_is_unique_per_suite():
    from augdag.tasks.ingest import EXPECTATIONS

    for gate_ in checks.GATES:
        names = gate_.check_names()  # raises on a name used by the suite and a row check
        assert len(names) == len(set(names)), gate_.suite
    names = gx.check_names(EXPECTATIONS / "metrics.json")
    assert len(names) == len(set(names))
    assert [c.name for c in checks.BRANCH.rows] == ["psnr", "ssim", "in_frame", "label_consistency", "outlier"]
    defaults = checks.default_modes()
    assert {defaults[c.name] for g in checks.GATES for c in g.rows} == {"filter"}
    assert defaults["psnr_range"] == "fail" and defaults["augmented_share"] == "warn"


GATE_PARAMS = {"label_set": [0, 1, 2], "psnr_min": 30.0, "ssim_min": 0.85, "in_frame_min": 0.9, "label_prob_min": 0.1,
               "sigma": 2.0}


def _scored(n: int = 8):
    """Branch rows with the gate's score and derived columns, every row passing every check."""
    import pandas as pd

    return pd.DataFrame({
        "sample_id": [f"~trad/{i:03d}" for i in range(n)], "split": "train", "branch": "traditional", "label": 0,
        "soft_label": None, "parent_ids": [[f"raw/{i:03d}"] for i in range(n)], "source": None, "op_params": "{}",
        "seed": list(range(n)), "content_hash": "0" * 64, "shard": "shard-00000.npy", "index": list(range(n)),
        "height": 28, "width": 28, "channels": 1, "psnr": 40.0, "ssim": 0.95, "in_frame": 1.0, "label_prob": 0.9,
        "outlier_z": 0.5, "soft_label_sum": 1.0, "parents_in_raw": True})


def test_each_filter_check_drops_its_row_and_names_itself():
    """One row per filter check fails just that check, one fails several, one has only null scores."""
    df = _scored(8)
    df.loc[1, "psnr"] = 29.9
    df.loc[2, "ssim"] = 0.8
    df.loc[3, "in_frame"] = 0.5
    df.loc[4, "label_prob"] = 0.05
    df.loc[5, "outlier_z"] = -2.5
    df.loc[6, ["psnr", "label_prob", "outlier_z"]] = [10.0, 0.0, 3.0]
    df.loc[7, ["psnr", "ssim", "in_frame", "label_prob", "outlier_z"]] = float("nan")  # no score: not a failure
    df.loc[0, ["psnr", "outlier_z"]] = [30.0, 2.0]  # on the threshold: kept
    result = checks.gate_frame(df, checks.BRANCH, GATE_PARAMS)
    assert dict(zip(result.rejected.sample_id, result.rejected.gate_reason)) == {
        "~trad/001": "psnr", "~trad/002": "ssim", "~trad/003": "in_frame", "~trad/004": "label_consistency",
        "~trad/005": "outlier", "~trad/006": "psnr; label_consistency; outlier"}
    assert result.kept.sample_id.tolist() == ["~trad/000", "~trad/007"]
    assert result.rejected.drop(columns="gate_reason").columns.tolist() == df.columns.tolist()
    assert {n: (c["unexpected_count"], c["element_count"], c["success"]) for n, c in result.checks.items()
            if n in ("psnr", "outlier", "in_frame")} == {"psnr": (2, 8, False), "in_frame": (1, 8, False),
                                                         "outlier": (2, 8, False)}
    # a null threshold turns its check off: the row it alone rejected is kept
    off = checks.gate_frame(df, checks.BRANCH, {**GATE_PARAMS, "in_frame_min": None, "sigma": None})
    assert {"~trad/003", "~trad/005"} <= set(off.kept.sample_id)
    assert off.checks["in_frame"]["mode"] == off.checks["outlier"]["mode"] == "off"
    assert dict(zip(off.rejected.sample_id, off.rejected.gate_reason))["~trad/006"] == "psnr; label_consistency"


def test_row_checks_are_masks_with_nulls_passing():
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, -3.0, np.inf], "t": ["ab", "  ", None, "abcd", ""],
                          "dup": [False, True, None, False, True]})
    at_least = checks.RowCheck("x_min", "x", "min", "x_min")
    np.testing.assert_array_equal(at_least.unexpected(frame, 2.0), [True, False, False, True, False])
    within = checks.RowCheck("z", "x", "within", "sigma")
    np.testing.assert_array_equal(within.unexpected(frame, 2.0), [False, False, False, True, True])
    length = checks.RowCheck("len", "t", "length", "n")
    np.testing.assert_array_equal(length.unexpected(frame, (1, 3)), [False, False, False, True, True])
    np.testing.assert_array_equal(length.unexpected(frame, (2, None)), [False, False, False, False, True])
    nonempty = checks.RowCheck("nonempty", "t", "matches", value=r"\S")
    np.testing.assert_array_equal(nonempty.unexpected(frame, None), [False, True, False, False, True])
    dup = checks.RowCheck("duplicate", "dup", "equals", value=False)
    np.testing.assert_array_equal(dup.unexpected(frame, None), [False, True, False, False, True])
    assert [c.rule(t) for c, t in ((at_least, 2.0), (within, 2.0), (length, (1, 3)), (nonempty, None), (dup, None))] \
        == ["x >= 2.0", "|x| <= 2.0", "1 <= len(t) <= 3", "t matches '\\\\S'", "dup == False"]
    with pytest.raises(DataError, match="row check 'x_min': column t is not numeric"):
        checks.RowCheck("x_min", "t", "min", "x_min").unexpected(frame, 1.0)
    with pytest.raises(KeyError):
        at_least.unexpected(frame.drop(columns="x"), 1.0)
    with pytest.raises(ValueError, match="row check bad"):
        checks.RowCheck("bad", "x", "min")  # a threshold check without its parameter


def test_row_check_warn_and_fail_name_the_check_and_ids():
    df = _scored(30)
    df.loc[[3, 4], "psnr"] = 12.5
    result = checks.gate_frame(df, checks.BRANCH, GATE_PARAMS, modes={"psnr": "warn"})
    assert len(result.kept) == 30
    [w] = result.warnings
    assert w.line() == ("psnr: psnr >= 30.0 [column psnr]: 2 of 30 rows unexpected (~trad/003: 12.5; ~trad/004: 12.5); "
                        "ids: ~trad/003, ~trad/004")
    with pytest.raises(ExpectationFailed) as err:
        checks.gate_frame(df, checks.BRANCH, GATE_PARAMS, modes={"psnr": "fail"})
    assert "quality gate 'branch'" in str(err.value) and "- psnr: psnr >= 30.0" in str(err.value)
    assert "ids: ~trad/003, ~trad/004" in str(err.value)


def test_report_shows_gate_results_and_marks_missing_parts(project):
    from augdag.tasks.report import render

    root, over = project
    p = parse_params(over)
    run_stage("quality", p, root)
    page = render(p, root)
    gate_part = page[page.index("<h2>Quality gate</h2>"):page.index("<h2>Samples</h2>")]
    assert "pass rate" in gate_part and "traditional: rejected" in gate_part
    assert gate_part.count('aria-label="psnr"') == 2  # traditional and mix histograms
    assert 'aria-label="label_prob"' in gate_part
    rejected = read_manifest(root / "data" / "quality", "rejected.parquet")
    first = rejected.sample_id.iloc[0]
    assert f'alt="{first}"' in gate_part and rejected.gate_reason.iloc[0].split("; ")[0] in gate_part
    assert "missing: run the evaluate stage" in page  # no fine-tune ran in this project


def test_reference_rows_cap_per_class_by_id_not_by_order():
    import pandas as pd

    from augdag.tasks.quality import reference_rows

    train = pd.DataFrame({"sample_id": [f"raw/{i:03d}" for i in range(60)], "label": [0] * 30 + [1] * 20 + [2] * 10})
    picked = reference_rows(train, 12, seed=0)
    assert picked.label.value_counts().to_dict() == {0: 12, 1: 12, 2: 10}
    assert list(picked.index) == sorted(picked.index), "manifest order kept"
    shuffled = reference_rows(train.sample(frac=1.0, random_state=3), 12, seed=0)
    assert set(shuffled.sample_id) == set(picked.sample_id), "the choice depends on the ids, not on their order"
    assert set(reference_rows(train, 12, seed=1).sample_id) != set(picked.sample_id)
    assert reference_rows(train, None, seed=0) is train and reference_rows(train, 30, seed=0) is train


def test_reference_classifier_learns_from_the_capped_subset(project, caplog):
    import logging

    root, over = project
    n_train = len(read_manifest(root / "data" / "ingest").query("split == 'train'"))
    probs = {}
    for cap in (None, 2):
        with caplog.at_level(logging.INFO, logger="augdag"):
            run_stage("quality", _with(over, quality={"reference_max_per_class": cap}), root)
        assert f"reference classifier on {n_train if cap is None else 2 * 10} raw train images" in caplog.text
        caplog.clear()
        rows = [read_manifest(root / "data" / "quality", f) for f in ("manifest.parquet", "rejected.parquet")]
        probs[cap] = {sid: json.loads(s)["label_prob"] for r in rows for sid, s in zip(r.sample_id, r.scores)}
    assert probs[None].keys() == probs[2].keys()
    assert not np.allclose([probs[None][k] for k in probs[None]], [probs[2][k] for k in probs[None]]), \
        "a probe on 2 images per class scores differently"


def test_window_z_in_parts_equals_the_whole():
    scores = np.random.default_rng(0).normal(size=300)
    scores[[5, 50, 51]] = np.nan
    whole = scoring.window_z(scores, window_size=40)
    w = scoring.WindowZ(40)
    parts = np.concatenate([w(scores[a:b]) for a, b in ((0, 7), (7, 8), (8, 120), (120, 300))])
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.slow
def test_quality_in_chunks_keeps_the_same_rows_scores_and_summary(project, monkeypatch):
    import pandas as pd

    from augdag.tasks import quality

    root, over = project
    out, results = root / "data" / "quality", root / "data" / "validation" / "quality"
    # Scoring batches of 4 rows and chunks of 8 (chunk_rows must be a multiple of the batch: the reference
    # classifier's float results depend on its batch's size, so both runs embed the same batches).
    monkeypatch.setattr(quality, "CHUNK", 4)
    got = {}
    for chunk_rows in (51_200, 8):
        p = parse_params(over)
        p = p.model_copy(update={"quality": p.quality.model_copy(update={"chunk_rows": chunk_rows})})
        run_stage("quality", p, root)
        got[chunk_rows] = (read_manifest(out), read_manifest(out, "rejected.parquet"),
                           json.loads((out / "summary.json").read_text()),
                           sorted(p.name for p in results.glob("*.json")))
    (k1, r1, s1, files1), (k8, r8, s8, files8) = got[51_200], got[8]
    assert len(r1) and len(k1), "the project's gate filters some rows and keeps others"
    pd.testing.assert_frame_equal(k1, k8)
    pd.testing.assert_frame_equal(r1, r8)
    for branch in ("traditional", "mix"):
        a, b = s1[branch], s8[branch]
        for key in ("in", "kept", "rejected", "pass_rate", "rejected_by", "checks", "score_summary"):
            assert a[key] == b[key], (branch, key)
        assert a["mean_scores"] == pytest.approx(b["mean_scores"], abs=1e-4)
    n_trad = s1["traditional"]["in"]
    assert "traditional.part001.json" in files8 and "traditional.part001.json" not in files1
    assert sum(f.startswith("traditional") for f in files8) == -(-n_trad // 8)
    run_stage("quality", parse_params(over), root)
    assert sorted(p.name for p in results.glob("*.json")) == files1, "a later run in one chunk removes the parts"
    with pytest.raises(ParamsError, match="quality.chunk_rows"):
        parse_params({"quality": {"chunk_rows": 1000}})
    bad = p.model_copy(update={"quality": p.quality.model_copy(update={"chunk_rows": 6})})
    with pytest.raises(ParamsError, match=r"quality.chunk_rows = 6: must be a multiple of 4"):
        run_stage("quality", bad, root)


def test_quality_scoring_jobs_on_workers_give_the_same_bytes(project, monkeypatch):
    """With a mapper that spreads work (as the Dask runner's), the gate scores in jobs of JOB_ROWS rows on the
    workers, in any order; the outputs equal the in-process run's byte for byte. The local thread pool's mapper
    is not used for scoring (torch spreads a job over the cores already)."""
    from concurrent.futures import ThreadPoolExecutor

    from augdag.tasks import quality

    root, over = project
    out = root / "data" / "quality"
    monkeypatch.setattr(quality, "CHUNK", 4)
    monkeypatch.setattr(quality, "JOB_ROWS", 8)
    run_stage("quality", parse_params(over), root)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    jobs = []

    def spread(fn, chunks):
        chunks = list(chunks)
        jobs.extend(len(c[2]) for c in chunks)
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(fn, c) for c in reversed(chunks)][::-1]  # started last to first
            return [f.result() for f in futures]

    spread.distributed = True
    run_stage("quality", parse_params(over), root, mapper=spread)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    n = sum(json.loads((out / "summary.json").read_text())[b]["in"] for b in ("traditional", "mix", "generative"))
    assert sum(jobs) == n and max(jobs) == 8 and len(jobs) >= n // 8

    local = []
    run_stage("quality", parse_params(over), root, mapper=lambda fn, xs: local.append(1) or map(fn, xs))
    assert not local, "the local mapper is left to the branches"


def test_merge_in_chunks_writes_the_same_bytes(project, monkeypatch):
    from augdag.tasks import merge

    root, over = project
    run_stage("quality", parse_params(over), root)
    out = {}
    for rows in (merge.CHUNK_ROWS, 4):
        monkeypatch.setattr(merge, "CHUNK_ROWS", rows)
        run_stage("merge", parse_params(over), root)
        folder = root / "data" / "merge"
        out[rows] = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    kept = read_manifest(root / "data" / "quality")
    assert len(kept) > 4 * 2, "the kept rows come in several chunks"
    assert out[4] == out[merge.CHUNK_ROWS] and "manifest.parquet" in out[4]
    merged = read_manifest(root / "data" / "merge")
    assert list(merged[merged.branch != "raw"].sample_id) == list(kept.sample_id)


def _merged_rows(n: int, n_classes: int = 2) -> list[dict]:
    """n merged-manifest rows, raw and augmented alternately, weights summing to 1."""
    from augdag.storage import row

    return [row(sample_id=f"s{i}", split="train", branch="raw" if i % 2 else "traditional", label=i % n_classes,
                soft_label=None, parent_ids=[], source=None, op_params="{}", seed=i, generator_hash=None,
                content_hash="0" * 64, shard="shard-00000.npy", index=i, height=1, width=1, channels=1,
                scores=None, gate="kept", gate_reason="", weight=1.0 / n) for i in range(n)]


def test_split_checks_puts_aggregates_and_uniqueness_on_the_whole_set():
    from augdag.tasks.ingest import EXPECTATIONS

    split = gx.split_checks(EXPECTATIONS / "merged.json")
    assert set(split.set_wide) == {"expect_column_values_to_be_unique:sample_id", "augmented_share",
                                   "weights_sum_to_one"}
    assert split.set_columns == ["sample_id", "augmented", "weight"]
    assert "merged_soft_label_sum" in split.row_wise and "expect_column_to_exist:shard" in split.row_wise
    assert len(split.row_wise) + len(split.set_wide) == len(gx.check_names(EXPECTATIONS / "merged.json"))


def test_merged_checks_in_chunks_see_the_whole_set(tmp_path):
    from augdag.storage import write_manifest
    from augdag.tasks.merge import check_merged

    p = parse_params({})
    rows = _merged_rows(20)
    write_manifest(tmp_path / "m.parquet", rows)
    results = tmp_path / "results"
    (results).mkdir()
    (results / "merged.part009.json").write_text("{}")  # from an earlier, longer run
    whole = check_merged(p, tmp_path / "m.parquet", 2, results, chunk_rows=1000)
    assert not (results / "merged.part009.json").exists()
    chunked = check_merged(p, tmp_path / "m.parquet", 2, results, chunk_rows=3)
    assert chunked == whole and whole["augmented_share"] == 0.5 and not whole["warned"]
    assert {"weights_sum_to_one", "expect_column_values_to_be_unique:sample_id",
            "class_balance"} <= set(whole["passed"])
    names = sorted(f.name for f in results.glob("merged*.json"))
    assert names == ["merged.json"] + [f"merged.part{i:03d}.json" for i in range(1, 7)] + [
        "merged.set.json", "merged_classes.json"]
    # a duplicate id two chunks apart: no chunk sees it, the set-wide check does
    dup = _merged_rows(20)
    dup[15]["sample_id"] = "s1"
    write_manifest(tmp_path / "dup.parquet", dup)
    with pytest.raises(ExpectationFailed, match="expect_column_values_to_be_unique"):
        check_merged(p, tmp_path / "dup.parquet", 2, results, chunk_rows=3)
    # a row-wise failure in a late chunk counts for the check (warn mode: reported, not raised)
    bad = _merged_rows(20)
    bad[17]["split"] = "val"
    write_manifest(tmp_path / "bad.parquet", bad)
    warned = parse_params({"quality": {"modes": {"expect_column_values_to_be_in_set:split": "warn"}}})
    s = check_merged(warned, tmp_path / "bad.parquet", 2, results, chunk_rows=3)
    assert s["warned"] == ["expect_column_values_to_be_in_set:split"]


def test_merge_names_a_missing_or_unreadable_gate_manifest(tmp_path):
    from augdag.errors import DataError
    from augdag.storage import write_manifest
    from augdag.tasks.merge import _kept_counts

    with pytest.raises(DataError, match=r"none.parquet: manifest not found \(run the upstream stage first\)"):
        _kept_counts(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet manifest"):
        _kept_counts(tmp_path / "junk.parquet")
    rows = _merged_rows(6)
    for r, (branch, gate_) in zip(rows, [("mix", "kept"), ("traditional", "kept"), ("mix", "rejected"),
                                        ("traditional", "kept"), ("generative", "rejected"), ("mix", "kept")]):
        r["branch"], r["gate"] = branch, gate_
    write_manifest(tmp_path / "gate.parquet", rows)
    assert list(_kept_counts(tmp_path / "gate.parquet").items()) == [("mix", 2), ("traditional", 2)]
