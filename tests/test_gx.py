"""Great Expectations suites and augdag.gx, run against real GE (1.x)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from augdag import gx as agx
from augdag.errors import DataError, ExpectationFailed

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


def test_branch_manifest():
    df = manifest(branch="mix", split="train")
    assert agx.validate_frame(df, BRANCH, {"label_set": LABELS}).success
    df.loc[4, "seed"] = -1
    df.loc[6, "split"] = "val"
    df.loc[8, "branch"] = "raw"
    report = agx.validate_frame(df, BRANCH, {"label_set": LABELS})
    by_column = {f.column: f.sample_ids for f in report.failures}
    assert by_column == {"seed": ["mix-00004"], "split": ["mix-00006"], "branch": ["mix-00008"]}


def test_merged_manifest():
    df = pd.concat([manifest(10, "raw", "train"), manifest(10, "traditional", "train")])
    df = df.reset_index(drop=True)
    df["weight"] = 1.0
    assert agx.validate_frame(df, MERGED, {"label_set": LABELS}).success
    df.loc[12, "weight"] = 0.0
    report = agx.validate_frame(df, MERGED, {"label_set": LABELS})
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
