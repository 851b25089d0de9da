"""The repository as DVC sees it: nothing git tracks may lie inside a stage's output folder."""

import subprocess

import yaml

from helpers import REPO


def test_no_git_tracked_file_inside_a_dvc_output_folder():
    """DVC refuses to track an output folder holding a file git tracks (OutputAlreadyTrackedError), and the
    test projects, copied without data/, would not notice: `make demo` on a fresh clone would."""
    outs = [o for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
            for o in stage.get("outs", [])]
    assert "data/finetune" in outs
    tracked = subprocess.run(["git", "ls-files", "data"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    inside = [f for f in tracked for o in outs if f.startswith(o.rstrip("/") + "/")]
    assert inside == [], f"git tracks files inside DVC output folders: {inside}"
