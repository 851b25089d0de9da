"""The `augdag` command on bad input: one clear message, exit status 2, earlier outputs untouched."""

import pytest
import yaml

from helpers import make_project, run

TINY = {"ingest": {"n_per_class": 1, "n_val_per_class": 0, "n_test_per_class": 1}}


@pytest.mark.slow
def test_bad_params_and_missing_dataset_leave_outputs(tmp_path):
    proj = make_project(tmp_path / "p", TINY)
    run(["augdag", "stage", "ingest"], proj)
    manifest = proj / "data" / "ingest" / "manifest.parquet"
    before = manifest.read_bytes()
    good = (proj / "params.yaml").read_text()

    params = yaml.safe_load(good)
    params["ingest"]["n_per_clas"] = 3
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    res = run(["augdag", "stage", "ingest"], proj, check=False)
    assert res.returncode == 2
    assert "ingest.n_per_clas: unknown key" in res.stderr and "Traceback" not in res.stderr

    params = yaml.safe_load(good)
    params["traditional"]["ops"]["rotation"]["degrees"] = 400
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    res = run(["augdag", "stage", "ingest"], proj, check=False)
    assert res.returncode == 2 and "traditional.ops.rotation.degrees = 400" in res.stderr

    (proj / "params.yaml").write_text(good)
    res = run(["augdag", "stage", "ingest"], proj, check=False, env={"AUGDAG_FASHION_MNIST": str(tmp_path / "nowhere")})
    assert res.returncode == 2 and "Fashion-MNIST not found" in res.stderr and "nowhere" in res.stderr
    assert manifest.read_bytes() == before

    res = run(["augdag", "stage", "nosuchstage"], proj, check=False)
    assert res.returncode == 2 and "unknown stage 'nosuchstage'" in res.stderr
    res = run(["augdag", "lineage", "x"], tmp_path, check=False)
    assert res.returncode == 2 and "run the pipeline first" in res.stderr
