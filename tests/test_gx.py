"""Great Expectations suites and augdag.gx, and gates (augdag.checks: suite + row checks), run against real GE (1.x)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from augdag import checks
from augdag import gx as agx
from augdag.errors import DataError, ExpectationFailed, ParamsError

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "expectations"
RAW = SUITES / "raw.json"
COUNTS = SUITES / "raw_class_counts.json"
BRANCH = SUITES / "branch.json"
MERGED = SUITES / "merged.json"

LABELS = [0, 1, 2]
RAW_PARAMS = {"label_set": LABELS, "height": 32, "width": 32, "channels": 3}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest(n: int = 30, branch: str = "raw", split: str | None = None) -> pd.DataFrame:
    rows = []
    for i in range(n):
        sid = f"{branch}-{i:05d}"
        rows.append({
            "sample_id": sid,
            "split": split or ["train", "val", "test"][i % 3],
            "branch": branch,
            "label": LABELS[i % len(LABELS)],
            "soft_label": [0.5, 0.5, 0.0] if branch == "mix" else None,
            "parent_ids": [] if branch == "raw" else [f"raw-{i:05d}"],
            "source": f"data/class{i % 3}/img{i}.png",
            "op_params": json.dumps({"angle": i}),
            "seed": i,
            "content_hash": _hash(sid),
            "shard": "shard-00000",
            "index": i,
            "height": 32,
            "width": 32,
            "channels": 3,
        })
    return pd.DataFrame(rows)


def class_counts(counts: dict[tuple[str, int], int]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"split": s, "label": c, "count": n} for (s, c), n in counts.items()]
    )


# --- raw suite ------------------------------------------------------------------------------


def test_valid_manifest_passes():
    report = agx.validate_frame(manifest(), RAW, RAW_PARAMS)
    assert report.success, report.message()
    assert report.suite == "raw"
    assert report.failures == []
    agx.require(report)  # does not raise


def test_duplicate_sample_id_fails_and_names_it():
    df = manifest()
    df.loc[7, "sample_id"] = df.loc[3, "sample_id"]  # raw-00003 twice
    report = agx.validate_frame(df, RAW, RAW_PARAMS)
    assert not report.success
    [failure] = [f for f in report.failures if f.expectation == "expect_column_values_to_be_unique"]
    assert failure.column == "sample_id"
    assert failure.sample_ids == ["raw-00003"]
    message = report.message()
    assert "raw" in message.splitlines()[0]
    assert "expect_column_values_to_be_unique" in message
    assert "raw-00003" in message
    with pytest.raises(ExpectationFailed) as excinfo:
        agx.require(report)
    assert "raw-00003" in str(excinfo.value)


def test_label_outside_label_set_names_sample():
    df = manifest()
    df.loc[5, "label"] = 7
    report = agx.validate_frame(df, RAW, RAW_PARAMS)
    assert not report.success
    [failure] = report.failures
    assert failure.expectation == "expect_column_values_to_be_in_set"
    assert failure.column == "label"
    assert failure.sample_ids == ["raw-00005"]
    assert "7" in failure.detail
    assert "raw-00005" in report.message()


def test_label_set_comes_from_parameters():
    df = manifest()
    df.loc[5, "label"] = 7
    report = agx.validate_frame(df, RAW, {**RAW_PARAMS, "label_set": LABELS + [7]})
    assert report.success, report.message()


def test_wrong_height_fails():
    df = manifest()
    df.loc[[2, 4], "height"] = 31
    report = agx.validate_frame(df, RAW, RAW_PARAMS)
    assert not report.success
    [failure] = report.failures
    assert failure.expectation == "expect_column_values_to_be_between"
    assert failure.column == "height"
    assert failure.sample_ids == ["raw-00002", "raw-00004"]
    # The expected height comes from the parameters: with height=31 the other 28 rows fail.
    [failure] = agx.validate_frame(df, RAW, {**RAW_PARAMS, "height": 31}).failures
    assert failure.detail.startswith("28 of 30 rows unexpected")


def test_bad_content_hash_split_and_branch_fail():
    df = manifest()
    df.loc[1, "content_hash"] = "ABC"
    df.loc[2, "split"] = "holdout"
    df.loc[3, "branch"] = "mix"
    report = agx.validate_frame(df, RAW, RAW_PARAMS)
    by_column = {f.column: f for f in report.failures}
    assert by_column["content_hash"].sample_ids == ["raw-00001"]
    assert by_column["split"].sample_ids == ["raw-00002"]
    assert by_column["branch"].sample_ids == ["raw-00003"]


def test_missing_column_is_reported():
    report = agx.validate_frame(manifest().drop(columns=["width"]), RAW, RAW_PARAMS)
    assert not report.success
    assert any(
        f.expectation == "expect_column_to_exist" and f.column == "width" for f in report.failures
    )
    assert "width" in report.message()


def test_empty_manifest_fails():
    report = agx.validate_frame(manifest().iloc[0:0], RAW, RAW_PARAMS)
    assert not report.success
    assert any(f.expectation == "expect_table_row_count_to_be_between" for f in report.failures)


def test_sample_ids_are_capped():
    df = manifest(60)
    df["height"] = 64
    report = agx.validate_frame(df, RAW, RAW_PARAMS)
    [failure] = report.failures
    assert len(failure.sample_ids) == agx.MAX_SAMPLE_IDS
    assert "60 of 60" in failure.detail


def test_missing_parameter_is_a_data_error():
    with pytest.raises(DataError, match="height"):
        agx.validate_frame(manifest(), RAW, {"label_set": LABELS, "width": 32, "channels": 3})


def test_results_do_not_go_stale_between_frames():
    # Same shape, same GE batch id: the second frame's errors must still be found.
    good, bad = manifest(), manifest()
    bad.loc[9, "label"] = 99
    assert agx.validate_frame(good, RAW, RAW_PARAMS).success
    assert agx.validate_frame(bad, RAW, RAW_PARAMS).failures[0].sample_ids == ["raw-00009"]
    assert agx.validate_frame(good, RAW, RAW_PARAMS).success


def test_validation_is_thread_safe():
    frames = []
    for k in range(4):
        df = manifest(40)
        if k % 2:
            df.loc[k, "label"] = 50 + k
        frames.append(df)
    reports: dict[int, agx.ValidationReport] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            reports[k] = agx.validate_frame(frames[k], RAW, RAW_PARAMS)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(4):
        if k % 2:
            assert reports[k].failures[0].sample_ids == [f"raw-{k:05d}"]
        else:
            assert reports[k].success, reports[k].message()


# --- class counts -----------------------------------------------------------------------------


def test_class_counts_pass():
    counts = class_counts({(s, c): 10 for s in ("train", "val", "test") for c in LABELS})
    report = agx.validate_frame(
        counts, COUNTS, {"min_count": 5, "max_count": 100}, id_column=["split", "label"]
    )
    assert report.success, report.message()


def test_class_count_shortfall_names_the_class():
    counts = {(s, c): 10 for s in ("train", "val", "test") for c in LABELS}
    counts[("val", 2)] = 1
    report = agx.validate_frame(
        class_counts(counts), COUNTS, {"min_count": 5, "max_count": None}, id_column=["split", "label"]
    )
    assert not report.success
    [failure] = report.failures
    assert failure.column == "count"
    assert failure.sample_ids == ["split=val,label=2"]
    message = report.message()
    assert "raw_class_counts" in message
    assert "split=val,label=2" in message


def test_class_count_over_max_fails():
    counts = {(s, c): 10 for s in ("train", "val", "test") for c in LABELS}
    counts[("train", 0)] = 1000
    report = agx.validate_frame(
        class_counts(counts), COUNTS, {"min_count": 5, "max_count": 100}, id_column=["split", "label"]
    )
    assert [f.sample_ids for f in report.failures] == [["split=train,label=0"]]


# --- branch and merged ------------------------------------------------------------------------


BRANCH_PARAMS = {"label_set": LABELS, "psnr_min": 20.0, "ssim_min": 0.5, "in_frame_min": 0.5,
                 "label_prob_min": 0.2, "sigma": 3.0}


def branch_frame(n: int = 30) -> pd.DataFrame:
    """A branch manifest with the quality gate's score and derived columns."""
    return manifest(n, branch="mix", split="train").assign(
        psnr=30.0, ssim=0.9, in_frame=1.0, label_prob=0.9, outlier_z=0.0, soft_label_sum=1.0,
        parents_in_raw=True)


def test_branch_manifest():
    df = branch_frame()
    assert agx.validate_frame(df, BRANCH, BRANCH_PARAMS).success
    df.loc[4, "seed"] = -1
    df.loc[6, "split"] = "val"
    df.loc[8, "branch"] = "raw"
    report = agx.validate_frame(df, BRANCH, BRANCH_PARAMS)
    by_column = {f.column: f.sample_ids for f in report.failures}
    assert by_column == {"seed": ["mix-00004"], "split": ["mix-00006"], "branch": ["mix-00008"]}


def test_gate_on_the_branch_suite(tmp_path):
    df = branch_frame()
    df.loc[2, "psnr"] = 12.0
    df.loc[5, "outlier_z"] = 4.0
    df.loc[5, "label_prob"] = 0.1
    df.loc[7, "label_prob"] = None  # no score: not a failure
    out = tmp_path / "branch.json"
    result = checks.gate_frame(df, checks.BRANCH, BRANCH_PARAMS, results_path=out)
    assert result.rejected.sample_id.tolist() == ["mix-00002", "mix-00005"]
    assert result.rejected.gate_reason.tolist() == ["psnr", "label_consistency; outlier"]
    assert len(result.kept) == 28 and "mix-00007" in set(result.kept.sample_id)
    assert result.checks["psnr_range"]["mode"] == "fail" and result.checks["psnr_range"]["success"]
    # Great Expectations ran the suite's dataset-level checks for real, and wrote its own result.
    assert result.report.suite == "branch" and result.report.success
    data = json.loads(out.read_text())
    assert data["suite_name"] == "branch" and data["success"] is True
    assert {r["expectation_config"]["meta"]["name"] for r in data["results"]} >= {"psnr_range", "parents_exist"}
    # The suite's fail-mode range check stops the run; overridden to warn it does not.
    df.loc[9, "psnr"] = 150.0
    with pytest.raises(ExpectationFailed, match=r"psnr_range: .*\[column psnr\].*mix-00009"):
        checks.gate_frame(df, checks.BRANCH, BRANCH_PARAMS)
    result = checks.gate_frame(df, checks.BRANCH, BRANCH_PARAMS, modes={"psnr_range": "warn"})
    assert [w.check for w in result.warnings] == ["psnr_range"]


def test_merged_manifest():
    df = pd.concat([manifest(10, "raw", "train"), manifest(10, "traditional", "train")])
    df = df.reset_index(drop=True)
    df["weight"] = 1.0 / len(df)
    df["augmented"] = (df.branch != "raw").astype(int)
    df["soft_label_sum"] = 1.0
    params = {"label_set": LABELS, "augmented_min": 0.1, "augmented_max": 0.9,
              "source_set": ["raw", "traditional", "mix", "generative"]}
    assert agx.validate_frame(df, MERGED, params).success
    report = agx.validate_frame(df, MERGED, {**params, "source_set": ["raw"]})  # an undeclared source
    assert not report.success and {f.column for f in report.failures} == {"branch"}
    df.loc[13, "weight"] += df.loc[12, "weight"]  # the weights still sum to one
    df.loc[12, "weight"] = 0.0
    report = agx.validate_frame(df, MERGED, params)
    [failure] = report.failures
    assert failure.column == "weight"
    assert failure.sample_ids == ["traditional-00002"]


# --- results file and suite files -------------------------------------------------------------


def test_results_json_is_written(tmp_path):
    out = tmp_path / "reports" / "raw.validation.json"
    df = manifest()
    df.loc[0, "label"] = 9
    report = agx.validate_frame(df, RAW, RAW_PARAMS, results_path=out)
    data = json.loads(out.read_text())
    assert data["success"] is False and report.success is False
    assert data["suite_name"] == "raw"
    failed = [r for r in data["results"] if not r["success"]]
    assert failed[0]["expectation_config"]["type"] == "expect_column_values_to_be_in_set"
    assert failed[0]["result"]["unexpected_index_list"] == [{"label": 9, "sample_id": "raw-00000"}]
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind

    agx.validate_frame(manifest(), RAW, RAW_PARAMS, results_path=out)  # overwrite
    assert json.loads(out.read_text())["success"] is True


def test_every_suite_file_loads_as_expectation_suite():
    import great_expectations as gx

    files = sorted(SUITES.glob("*.json"))
    assert {f.stem for f in files} >= {"raw", "raw_class_counts", "branch", "merged"}
    for path in files:
        data = json.loads(path.read_text())
        suite = gx.ExpectationSuite(**data)
        assert suite.name == path.stem
        assert len(suite.expectations) == len(data["expectations"]) > 0
        assert len(agx.load_suite(path).expectations) == len(data["expectations"])
        # No suite check filters: Great Expectations validates sets; the per-sample checks are augdag.checks.
        assert all((e.get("meta") or {}).get("mode", "fail") in ("warn", "fail", "off") for e in data["expectations"])


def test_broken_suite_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "name": "bad",
        "expectations": [{"type": "expect_no_such_thing", "kwargs": {"column": "x"}, "meta": {}}],
    }))
    with pytest.raises(DataError, match="bad.json"):
        agx.load_suite(bad)
    with pytest.raises(DataError, match="does not exist"):
        agx.load_suite(tmp_path / "missing.json")


# --- a gate: the suite's checks and row checks, each with a name and a mode ----------------------

PARAMS = {"psnr_min": 20.0, "ssim_min": 0.5}


def write_suite(folder: Path, expectations: list[dict], name: str = "scores") -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "expectations": expectations}))
    return path


def score_suite(folder: Path) -> Path:
    return write_suite(folder, [
        {"type": "expect_column_to_exist", "kwargs": {"column": "psnr"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "psnr", "min_value": 0, "max_value": 100},
         "meta": {"name": "psnr_range", "mode": "fail"}},
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "psnr", "min_value": 20},
         "meta": {"name": "mean_psnr", "mode": "warn"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    ])


ROWS = (checks.RowCheck("psnr", "psnr", "min", "psnr_min"), checks.RowCheck("ssim", "ssim", "min", "ssim_min"))


def score_gate(folder: Path) -> checks.Gate:
    return checks.Gate(score_suite(folder), ROWS)


def scores(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": [f"s-{i:05d}" for i in range(n)],
        "psnr": [30.0] * n,
        "ssim": [0.9] * n,
    })


def test_gate_modes_come_from_suite_meta_row_checks_and_overrides(tmp_path):
    gate = score_gate(tmp_path)
    result = checks.gate_frame(scores(), gate, PARAMS)
    assert {name: c["mode"] for name, c in result.checks.items()} == {
        "expect_column_to_exist:psnr": "fail",  # no meta: type:column, mode fail
        "psnr_range": "fail",
        "mean_psnr": "warn",
        "expect_table_row_count_to_be_between": "fail",  # no column: the type alone
        "psnr": "filter",  # a row check's own default
        "ssim": "filter",
    }
    assert all(c["success"] for c in result.checks.values())
    assert result.checks["psnr"]["unexpected_count"] == 0 and result.checks["psnr"]["element_count"] == 10
    assert result.checks["psnr_range"]["unexpected_count"] == 0 and result.checks["psnr_range"]["element_count"] == 10
    assert result.checks["mean_psnr"]["unexpected_count"] is None  # aggregate: no row counts
    json.dumps(result.checks)  # JSON-able
    assert len(result.kept) == 10 and result.rejected.empty and result.warnings == []
    assert "gate_reason" in result.rejected.columns

    df = scores()
    df.loc[[1, 2], "psnr"] = 5.0
    df.loc[3, "ssim"] = 0.1
    result = checks.gate_frame(df, gate, PARAMS, modes={"psnr": "warn", "ssim": "off", "mean_psnr": "fail"})
    assert result.checks["psnr"]["mode"] == "warn" and result.checks["psnr"]["success"] is False
    assert result.checks["ssim"] == {"mode": "off", "success": None, "unexpected_count": None, "element_count": None}
    assert result.checks["mean_psnr"]["mode"] == "fail" and result.checks["mean_psnr"]["success"] is True
    assert len(result.kept) == 10 and result.rejected.empty  # warn and off keep every row
    [warning] = result.warnings
    assert warning.check == "psnr" and warning.sample_ids == ["s-00001", "s-00002"]
    assert warning.line().startswith("psnr: psnr >= 20.0 [column psnr]: 2 of 10 rows unexpected (s-00001: 5.0;")


def test_filter_drops_exactly_the_offending_rows(tmp_path):
    gate = score_gate(tmp_path)
    n = 80
    df = scores(n)
    df.index = range(1000, 1000 - n, -1)  # any index: rows are told by position
    bad_psnr = set(range(0, n, 2))  # 40 rows, more than MAX_SAMPLE_IDS
    bad_ssim = set(range(0, n, 3))  # 27 rows
    assert len(bad_psnr) > agx.MAX_SAMPLE_IDS and len(bad_ssim) > agx.MAX_SAMPLE_IDS
    df.iloc[sorted(bad_psnr), df.columns.get_loc("psnr")] = 10.0
    df.iloc[sorted(bad_ssim), df.columns.get_loc("ssim")] = 0.2
    result = checks.gate_frame(df, gate, PARAMS)

    bad = bad_psnr | bad_ssim
    ids = df.sample_id.tolist()
    assert result.rejected.sample_id.tolist() == [ids[i] for i in sorted(bad)]  # original order
    assert result.kept.sample_id.tolist() == [ids[i] for i in range(n) if i not in bad]
    assert list(result.kept.index) == list(range(len(result.kept)))  # index reset
    assert list(result.rejected.index) == list(range(len(result.rejected)))
    assert list(result.kept.columns) == list(df.columns)
    reasons = dict(zip(result.rejected.sample_id, result.rejected.gate_reason))
    for i in bad:
        expected = [name for name, rows in (("psnr", bad_psnr), ("ssim", bad_ssim)) if i in rows]
        assert reasons[ids[i]] == "; ".join(expected)  # every failed filter check, gate order
    assert reasons[ids[0]] == "psnr; ssim"
    assert result.checks["psnr"]["unexpected_count"] == 40 and result.checks["psnr"]["success"] is False
    assert result.checks["ssim"]["unexpected_count"] == 27
    # Filtered rows are the row checks' business: no warning, and GE's suite (mean psnr 20.0) passed.
    assert result.warnings == []
    assert result.report.success is True and result.report.suite == "scores"


def test_filter_with_duplicate_and_null_ids(tmp_path):
    gate = score_gate(tmp_path)
    df = pd.DataFrame({
        "sample_id": ["a", "b", "b", "c", None, None],
        "psnr": [30.0, 30.0, 5.0, 30.0, 6.0, 30.0],
        "ssim": [0.9] * 6,
    })
    result = checks.gate_frame(df, gate, PARAMS)
    # Only the second "b" and the first null-id row are bad; their twins stay.
    assert result.rejected.psnr.tolist() == [5.0, 6.0]
    assert result.rejected.sample_id.tolist()[0] == "b"
    assert result.rejected.sample_id.isna().tolist() == [False, True]
    assert result.kept.psnr.tolist() == [30.0] * 4
    assert result.kept.sample_id.tolist()[:3] == ["a", "b", "c"]
    assert result.kept.sample_id.isna().tolist() == [False, False, False, True]


def test_null_scores_are_not_failures(tmp_path):
    gate = score_gate(tmp_path)
    df = scores(6)
    df.loc[2, "psnr"] = None
    df.loc[4, "ssim"] = float("nan")
    df.loc[5, "psnr"] = 1.0
    result = checks.gate_frame(df, gate, PARAMS)
    assert result.rejected.sample_id.tolist() == ["s-00005"]
    assert "s-00002" in result.kept.sample_id.tolist() and "s-00004" in result.kept.sample_id.tolist()
    assert result.checks["ssim"]["success"] is True
    assert result.checks["psnr"]["unexpected_count"] == 1 and result.checks["psnr"]["element_count"] == 6
    # A suite check about nulls does count them (Great Expectations), warns with their ids, and cannot filter.
    nulls = write_suite(tmp_path, [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "psnr"},
                                    "meta": {"mode": "warn"}}], name="nulls")
    result = checks.gate_frame(df, checks.Gate(nulls, ROWS), PARAMS)
    assert result.checks["expect_column_values_to_not_be_null:psnr"]["unexpected_count"] == 1
    assert [w.sample_ids for w in result.warnings] == [["s-00002"]]
    assert result.rejected.sample_id.tolist() == ["s-00005"]
    with pytest.raises(ParamsError, match="cannot be in mode 'filter'"):
        checks.gate_frame(df, checks.Gate(nulls, ROWS), PARAMS,
                          modes={"expect_column_values_to_not_be_null:psnr": "filter"})


def test_warn_keeps_rows_and_returns_warnings(tmp_path):
    gate = score_gate(tmp_path)
    df = scores(30)
    df["psnr"] = 21.0
    df.loc[0, "psnr"] = 0.0  # mean 20.3: fine; one row below psnr_min: filtered
    result = checks.gate_frame(df, gate, PARAMS)
    assert result.warnings == [] and len(result.rejected) == 1
    df.loc[1, "psnr"] = 0.0  # mean 19.6 < 20
    result = checks.gate_frame(df, gate, PARAMS, modes={"psnr": "warn"})
    assert len(result.kept) == 30 and result.rejected.empty
    by_check = {w.check: w for w in result.warnings}
    assert set(by_check) == {"mean_psnr", "psnr"}
    assert by_check["mean_psnr"].expectation == "expect_column_mean_to_be_between"
    assert "observed 19.6" in by_check["mean_psnr"].detail
    assert by_check["psnr"].sample_ids == ["s-00000", "s-00001"]
    assert result.checks["mean_psnr"] == {"mode": "warn", "success": False, "unexpected_count": None,
                                          "element_count": None}


def test_fail_raises_with_names_and_ids_and_writes_results(tmp_path):
    gate = score_gate(tmp_path)
    out = tmp_path / "results" / "scores.json"
    df = scores(30)
    df.loc[:24, "ssim"] = 0.0  # 25 rows, more than MAX_SAMPLE_IDS
    with pytest.raises(ExpectationFailed) as excinfo:
        checks.gate_frame(df, gate, PARAMS, modes={"ssim": "fail"}, results_path=out)
    message = str(excinfo.value)
    first, *rest = message.splitlines()
    assert "'scores'" in first and str(gate.suite) in first and "1 check(s)" in first
    [line] = [ln for ln in rest if "ssim" in ln]
    assert line.strip().startswith("- ssim: ssim >= 0.5 [column ssim]: 25 of 30 rows unexpected (s-00000: 0.0;")
    listed = line.split("; ids: ")[1].split(", ")
    assert listed == [f"s-{i:05d}" for i in range(agx.MAX_SAMPLE_IDS)]
    assert "s-00024" not in message
    assert str(out) in message
    data = json.loads(out.read_text())  # GE's result of the suite, written before raising
    assert data["success"] is True and data["suite_name"] == "scores"

    # A suite check and a row check in fail mode: one error names both; GE's result records the suite check.
    df.loc[:, "psnr"] = 10.0
    with pytest.raises(ExpectationFailed) as excinfo:
        checks.gate_frame(df, gate, PARAMS, modes={"ssim": "fail", "psnr": "fail", "mean_psnr": "fail"},
                          results_path=out)
    lines = str(excinfo.value).splitlines()
    assert "3 check(s)" in lines[0]
    assert [ln.split(":")[0].strip("- ") for ln in lines[1:4]] == ["mean_psnr", "psnr", "ssim"]  # gate order
    data = json.loads(out.read_text())
    [failed] = [r for r in data["results"] if not r["success"]]
    assert failed["expectation_config"]["meta"] == {"name": "mean_psnr", "mode": "fail"}

    # Only fail-mode checks raise: the same frame in the gate's own modes is filtered.
    df.loc[:, "psnr"] = 30.0
    result = checks.gate_frame(df, gate, PARAMS, results_path=out)
    assert len(result.rejected) == 25
    assert json.loads(out.read_text())["results"][0]["expectation_config"]["meta"]["name"]


def test_filter_check_on_a_missing_column_fails(tmp_path):
    gate = score_gate(tmp_path)
    with pytest.raises(ExpectationFailed) as excinfo:
        checks.gate_frame(scores().drop(columns=["ssim"]), gate, PARAMS)
    message = str(excinfo.value)
    assert "ssim: ssim >= 0.5 [column ssim]: filter check whose rows cannot be identified: column is missing" in message
    result = checks.gate_frame(scores().drop(columns=["ssim"]), gate, PARAMS, modes={"ssim": "warn"})
    assert [w.detail for w in result.warnings] == ["column is missing"] and len(result.kept) == 10
    assert result.checks["ssim"] == {"mode": "warn", "success": False, "unexpected_count": None, "element_count": None}


def test_filter_on_a_suite_check_is_refused(tmp_path):
    gate = score_gate(tmp_path)
    with pytest.raises(ParamsError) as excinfo:
        checks.gate_frame(scores(), gate, PARAMS, modes={"mean_psnr": "filter"})
    message = str(excinfo.value)
    assert str(gate.suite) in message and "mean_psnr" in message and "picks no rows" in message
    for name in ("expect_table_row_count_to_be_between", "psnr_range"):  # aggregate or row-wise, GE filters nothing
        with pytest.raises(ParamsError, match="cannot be in mode 'filter'"):
            checks.gate_frame(scores(), gate, PARAMS, modes={name: "filter"})
    in_suite = write_suite(tmp_path, [{"type": "expect_column_max_to_be_between",
                                       "kwargs": {"column": "psnr", "max_value": 50},
                                       "meta": {"name": "max", "mode": "filter"}}], name="agg")
    with pytest.raises(DataError, match="'max'.*cannot be in mode 'filter' \\(set by its meta.mode\\)"):
        checks.gate_frame(scores(), checks.Gate(in_suite))


def test_unknown_check_names_and_modes_are_params_errors(tmp_path):
    gate = score_gate(tmp_path)
    with pytest.raises(ParamsError) as excinfo:
        checks.gate_frame(scores(), gate, PARAMS, modes={"psnrr": "warn"})
    message = str(excinfo.value)
    assert str(gate.suite) in message and "'psnrr'" in message
    assert "psnr_range, mean_psnr, expect_table_row_count_to_be_between, psnr, ssim" in message  # what it could be
    with pytest.raises(ParamsError) as excinfo:
        checks.gate_frame(scores(), gate, PARAMS, modes={"psnr": "drop"})
    message = str(excinfo.value)
    assert str(gate.suite) in message and "'psnr'" in message and "'drop'" in message
    assert "filter, warn, fail, off" in message
    with pytest.raises(ParamsError, match="'psnr_range' has mode 'loud'"):
        agx.run_suite(scores(), gate.suite, modes={"psnr_range": "loud"})
    bad_meta = write_suite(tmp_path, [{"type": "expect_column_to_exist", "kwargs": {"column": "psnr"},
                                       "meta": {"mode": "loud"}}], name="bad_meta")
    with pytest.raises(DataError, match="'loud'"):
        checks.gate_frame(scores(), checks.Gate(bad_meta, ROWS), PARAMS)
    twins = write_suite(tmp_path, [{"type": "expect_column_to_exist", "kwargs": {"column": "psnr"}}] * 2,
                        name="twins")
    with pytest.raises(DataError, match="both named 'expect_column_to_exist:psnr'"):
        checks.gate_frame(scores(), checks.Gate(twins))
    clash = write_suite(tmp_path, [{"type": "expect_column_to_exist", "kwargs": {"column": "psnr"},
                                    "meta": {"name": "psnr"}}], name="clash")
    with pytest.raises(DataError, match=r"check name\(s\) \['psnr'\] used twice"):
        checks.gate_frame(scores(), checks.Gate(clash, ROWS), PARAMS)


def test_off_checks_need_no_parameters_and_a_null_threshold_is_off(tmp_path):
    gate = score_gate(tmp_path)
    with pytest.raises(DataError, match="row check 'psnr' needs parameter psnr_min"):
        checks.gate_frame(scores(), gate, {"ssim_min": 0.5})
    df = scores()
    df.loc[0, "psnr"] = -1.0
    result = checks.gate_frame(df, gate, {"ssim_min": 0.5}, modes={"psnr": "off", "psnr_range": "off"})
    assert len(result.kept) == 10 and result.checks["psnr"]["success"] is None
    result = checks.gate_frame(df, gate, {"psnr_min": None, "ssim_min": 0.5},
                               modes={"psnr": "fail", "psnr_range": "off"})
    assert result.checks["psnr"] == {"mode": "off", "success": None, "unexpected_count": None, "element_count": None}
    param = write_suite(tmp_path, [{"type": "expect_column_values_to_be_between",
                                    "kwargs": {"column": "psnr", "min_value": {"$PARAMETER": "floor"}}}], name="param")
    with pytest.raises(DataError, match="needs parameter\\(s\\) floor"):
        agx.run_suite(scores(), param, {})
    assert agx.run_suite(scores(), param, {}, modes={"expect_column_values_to_be_between:psnr": "off"}).fails == []


def test_modes_for_keeps_the_suites_own_names(tmp_path):
    gate = score_gate(tmp_path)
    shared = {"psnr": "warn", "augmented_share": "fail", "expect_table_row_count_to_be_between": "warn"}
    assert agx.modes_for(gate.suite, shared) == {"expect_table_row_count_to_be_between": "warn"}
    assert gate.modes_for(shared) == {"psnr": "warn", "expect_table_row_count_to_be_between": "warn"}
    assert agx.modes_for(gate.suite, None) == {} and gate.modes_for(None) == {}
    assert agx.check_names(gate.suite)[:2] == ["expect_column_to_exist:psnr", "psnr_range"]
    assert gate.check_names()[-2:] == ["psnr", "ssim"]


def test_validate_frame_is_unchanged_by_suite_meta(tmp_path):
    df = scores()
    df.loc[4, "psnr"] = -1.0
    report = agx.validate_frame(df, score_suite(tmp_path), PARAMS)
    [failure] = report.failures
    assert failure.sample_ids == ["s-00004"] and failure.check is None
    assert failure.line().startswith("expect_column_values_to_be_between [column psnr]")


# --- Data Docs ------------------------------------------------------------------------------------


def _validation_pages(site: Path) -> list[Path]:
    return sorted((site / "validations").rglob("*.html"))


@pytest.mark.slow
def test_data_docs_from_result_files_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    gate = score_gate(tmp_path)
    results = tmp_path / "results"
    df = scores()
    df.loc[3, "psnr"] = -1.0
    checks.gate_frame(df, gate, PARAMS, modes={"psnr_range": "warn"}, results_path=results / "traditional.json")
    agx.validate_frame(scores(), gate.suite, PARAMS, results_path=results / "mix.json")
    (results / "summary.json").write_text(json.dumps({"kept": 9}))  # not a result: skipped
    site = tmp_path / "docs" / "site"

    # A fresh process that has only the JSON files.
    code = ("import sys; from augdag import gx; "
            "print(gx.build_data_docs(sys.argv[1], sys.argv[2]))")
    done = subprocess.run([sys.executable, "-c", code, str(results), str(site)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    index = site / "index.html"
    assert done.stdout.strip() == str(index)
    text = index.read_text()
    assert "scores" in text
    pages = _validation_pages(site)
    assert [p.stem for p in pages] == ["mix", "traditional"]
    for page in pages:
        href = page.relative_to(site).as_posix()
        assert f'href="{href}"' in text  # in the plain links, usable offline
    assert "traditional: failed" in text and "mix: passed" in text
    assert (site / "expectations" / "scores.html").is_file()
    failed = [p for p in pages if p.stem == "traditional"][0].read_text()
    assert "expect_column_values_to_be_between" in failed or "values must be greater than" in failed
    assert "s-00003" in failed  # GE renders the unexpected rows' ids
    # GE's pages load CSS/JS from CDNs (documented in build_data_docs); its own assets are local.
    assert "https://unpkg.com/" in text and (site / "static" / "styles" / "data_docs_default_styles.css").is_file()

    # A rebuild replaces the site: nothing of the old one survives, no temporary folder is left.
    (site / "stale.txt").write_text("old")
    index2 = agx.build_data_docs([("rerun", results / "mix.json")], site)
    assert index2 == index
    assert not (site / "stale.txt").exists()
    assert [p.stem for p in _validation_pages(site)] == ["rerun"]
    assert "traditional" not in index.read_text()
    assert sorted(p.name for p in site.parent.iterdir()) == ["site"]


def test_data_docs_reject_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kept": 1}))
    with pytest.raises(DataError, match="bad.json"):
        agx.build_data_docs([("bad", bad)], tmp_path / "site")
    with pytest.raises(DataError, match="no validation result"):
        agx.build_data_docs(tmp_path, tmp_path / "site")
    with pytest.raises(DataError, match="does not exist"):
        agx.build_data_docs([("gone", tmp_path / "gone.json")], tmp_path / "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # nothing built, nothing left


def test_data_docs_rendering_errors_are_raised(tmp_path):
    # GE only logs a page it cannot render; build_data_docs raises, and leaves no site behind.
    out = tmp_path / "r.json"
    df = scores()
    df.loc[0, "psnr"] = -1.0
    agx.run_suite(df, score_suite(tmp_path), modes={"psnr_range": "warn"}, results_path=out)
    data = json.loads(out.read_text())
    for r in data["results"]:
        if "unexpected_index_list" in r["result"]:
            r["result"]["unexpected_index_list"] = [1, 2]  # ints where GE expects id dicts
    out.write_text(json.dumps(data))
    with pytest.raises(DataError, match="could not render Data Docs: TypeError"):
        agx.build_data_docs([("r", out)], tmp_path / "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "scores.json"]


def test_list_columns_reach_ge_without_pickling_the_frame(tmp_path, monkeypatch):
    import pickle

    import numpy as np

    df = manifest(branch="mix")
    df["soft_label"] = [np.array([0.5, 0.5, 0.0])] * len(df)  # as a Parquet manifest reads: arrays
    df.loc[4, "soft_label"] = None
    out = tmp_path / "mix.json"
    dumps = []
    real = pickle.dumps
    monkeypatch.setattr(pickle, "dumps", lambda obj, *a, **k: dumps.append(type(obj)) or real(obj, *a, **k))
    suite = write_suite(tmp_path, [{"type": "expect_column_to_exist", "kwargs": {"column": "soft_label"}},
                                   {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "soft_label"},
                                    "meta": {"mode": "warn"}}], name="lists")
    result = agx.run_suite(df, suite, results_path=out)
    assert pd.DataFrame not in dumps, "GE's fingerprint pickles the whole frame when a column holds lists"
    assert json.loads(out.read_text())["meta"]["batch_markers"]["pandas_data_fingerprint"]  # GE hashed it itself
    assert [w.sample_ids for w in result.warnings] == [["mix-00004"]]  # nulls stay nulls
    assert isinstance(df.soft_label[0], np.ndarray), "the caller's frame is left alone"
    assert agx.validate_frame(manifest(branch="mix"), RAW, {**RAW_PARAMS, "label_set": LABELS}).failures[0].column \
        == "branch"  # list-valued parent_ids go through the raw suite as well
