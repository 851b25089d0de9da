"""augdag.tracking: DVCLive's files for the fine-tune curve and the test metrics."""

import json
import subprocess

from augdag import tracking

CURVE = [{"step": 2, "train_loss": 0.9}, {"step": 4, "train_loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.6},
         {"step": 5, "train_loss": 0.25, "val_loss": 0.65, "val_accuracy": 0.75}]


def test_the_curve_round_trips_and_repeats_byte_for_byte_in_a_repo_without_commits(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)  # DVCLive's own repo hooks fail here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # as under dvc repro
    runs = []
    for name in ("a", "b"):
        tracking.log_curve(tmp_path / name, CURVE)
        runs.append({p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
                     for p in sorted((tmp_path / name).rglob("*")) if p.is_file()})
    assert runs[0] == runs[1]  # no timestamps
    assert set(runs[0]) == {"metrics.json", "plots/metrics/train_loss.tsv", "plots/metrics/val_loss.tsv",
                            "plots/metrics/val_accuracy.tsv"}
    assert tracking.read_curve(tmp_path / "a") == CURVE
    assert json.loads(runs[0]["metrics.json"]) == {"step": 5, "train_loss": 0.25, "val_loss": 0.65,
                                                   "val_accuracy": 0.75}
    assert tracking.read_curve(tmp_path / "none") == []


def test_metrics_keep_keys_with_slashes_and_nesting(tmp_path):
    metrics = {"accuracy": 0.5, "n_test": 3, "per_class_accuracy": {"T-shirt/top": 0.25, "Bag": 1.0},
               "robustness": {"fgsm": {"0.03": 0.1}}}
    tracking.log_metrics(tmp_path, metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
