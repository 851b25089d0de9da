"""The spine end to end on a small slice: real Prefect server, real DVC, real GE, a real fine-tune."""

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from augdag.params import deep_merge, load_params
from augdag.storage import read_manifest
from helpers import REPO, SMALL, crossdomain_overrides, make_project, run

pytestmark = pytest.mark.slow


def _content(p: Path) -> bytes:
    """A file's bytes; the report without its stage timings (class="timing"), which differ run to run."""
    if p.name != "report.html":
        return p.read_bytes()
    return re.sub(r'(class=["\']timing["\'][^>]*>)[^<]*', r"\1", p.read_text()).encode()


def out_hashes(root: Path) -> dict[str, str]:
    data = root / "data"
    return {p.relative_to(data).as_posix(): hashlib.sha256(_content(p)).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and "validation" not in p.parts
            and p.name != ".gitignore"}


def ran_stages(dvc_output: str) -> set[str]:
    return {line.split("'")[1] for line in dvc_output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory, prefect_server):
    from augdag.flows.pipeline import run_pipeline

    base = tmp_path_factory.mktemp("flow")
    proj = make_project(base / "proj", deep_merge(SMALL, crossdomain_overrides(base)))
    results = run_pipeline(str(proj), workers=2)
    assert not any(r.get("skipped") for r in results.values())
    return proj


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    base = tmp_path_factory.mktemp("dvc")
    proj = make_project(base / "proj", deep_merge(SMALL, crossdomain_overrides(base)))
    res = run(["dvc", "repro"], proj)
    assert ran_stages(res.stdout) == {"ingest", "strategy", "traditional", "mix", "generative", "crossdomain",
                                      "quality", "merge", "dialogue", "finetune", "evaluate", "report"}
    return proj


def test_flow_and_dvc_repro_write_identical_bytes(flow_project, dvc_project):
    a, b = out_hashes(flow_project), out_hashes(dvc_project)
    assert "finetune/model.safetensors" in a and "traditional/manifest.parquet" in a
    # the crossdomain branch ran in both: its checkpoint, samples and reconstructions are the same bytes
    assert {"crossdomain/cyclegan.safetensors", "crossdomain/cycle/manifest.parquet"} <= set(a)
    assert len(a) >= 25
    assert a == b


def test_dvc_sees_a_flow_run_as_up_to_date(flow_project):
    assert json.loads(run(["dvc", "status", "--json"], flow_project).stdout) == {}
    res = run(["dvc", "repro"], flow_project)
    assert ran_stages(res.stdout) == set(), res.stdout


def test_second_flow_run_skips_every_stage_and_reports_to_prefect(flow_project):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from augdag.flows.pipeline import run_pipeline

    results = run_pipeline(str(flow_project), workers=2)
    assert all(r == {"skipped": True} for r in results.values()), results

    async def artifacts():
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["augdag-finetune"])))
            runs = await client.read_flow_runs()
            return arts, runs

    arts, runs = asyncio.run(artifacts())
    assert any("ran" in a.data for a in arts) and any("skipped" in a.data for a in arts)
    assert len(runs) >= 2 and all(r.state.is_completed() for r in runs)


def test_second_repro_is_a_noop(dvc_project):
    res = run(["dvc", "repro"], dvc_project)
    assert ran_stages(res.stdout) == set()
    assert "up to date" in res.stdout


def test_output_does_not_depend_on_worker_count(dvc_project, tmp_path):
    from augdag.tasks import traditional

    p = load_params(dvc_project / "params.yaml")
    copies = []
    for workers, chunk in ((1, 1000), (3, 2)):
        root = tmp_path / f"w{workers}"
        shutil.copytree(dvc_project / "data", root / "data")
        with ThreadPoolExecutor(workers) as pool:
            traditional.run(p, root, mapper=pool.map, chunk_size=chunk)
        copies.append(root)
    a, b, orig = ({k: v for k, v in out_hashes(c).items() if k.startswith("traditional/")}
                  for c in (*copies, dvc_project))
    assert len(a) >= 3 and a == b == orig


def test_lineage_and_replay_from_the_command_line(dvc_project):
    m = read_manifest(dvc_project / "data" / "traditional")
    sid = m.sample_id.iloc[0]
    res = run(["augdag", "lineage", sid, "--json"], dvc_project)
    chain = json.loads(res.stdout)
    assert [c["sample_id"] for c in chain] == [sid, m.parent_ids.iloc[0][0]]
    assert chain[-1]["source"].startswith("fashion-mnist:train-images-idx3-ubyte.gz#")
    assert chain[0]["op_params"]["ops"] == json.loads(m.op_params.iloc[0])["ops"]
    text = run(["augdag", "lineage", sid], dvc_project).stdout
    assert sid in text and "source: fashion-mnist" in text
    res = run(["augdag", "replay", sid, "--json"], dvc_project)
    out = json.loads(res.stdout)
    assert out["match"] and out["params_redrawn_match"] and out["replayed_hash"] == m.content_hash.iloc[0]
    xd = read_manifest(dvc_project / "data" / "crossdomain")  # a translation: regenerated from its checkpoint
    out = json.loads(run(["augdag", "replay", xd.sample_id.iloc[1], "--json"], dvc_project).stdout)
    assert out["match"] and out["reconstruction_match"] and out["stage"] == "crossdomain"
    chain = json.loads(run(["augdag", "lineage", xd.sample_id.iloc[1], "--json"], dvc_project).stdout)
    assert [c["sample_id"] for c in chain] == [xd.sample_id.iloc[1], xd.parent_ids.iloc[1][0]]
    missing = run(["augdag", "replay", "no-such-sample"], dvc_project, check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_the_model_stages_record_their_device_in_summary_lineage_and_report(dvc_project):
    data = dvc_project / "data"
    summaries = {s: json.loads((data / s / "summary.json").read_text())
                 for s in ("ingest", "traditional", "mix", "generative", "crossdomain", "quality", "merge", "finetune",
                           "evaluate")}
    assert {s for s, v in summaries.items() if "device" in v} == {"generative", "crossdomain", "quality", "finetune",
                                                                  "evaluate"}
    assert {v["device"] for v in summaries.values() if "device" in v} == {"cpu"}
    assert summaries["finetune"]["precision"] == summaries["evaluate"]["precision"] == "fp32"
    made = read_manifest(data / "generative").sample_id.iloc[0]
    assert json.loads(run(["augdag", "lineage", made, "--json"], dvc_project).stdout)[0]["device"] == "cpu"
    assert " device=cpu" in run(["augdag", "lineage", made], dvc_project).stdout
    warped = read_manifest(data / "traditional").sample_id.iloc[0]
    assert all("device" not in c for c in json.loads(run(["augdag", "lineage", warped, "--json"], dvc_project).stdout))
    page = (data / "report" / "report.html").read_text()
    rows = {s: page[page.index(f"<tr data-stage='{s}'>"):][:page[page.index(f"<tr data-stage='{s}'>"):].index("</tr>")]
            for s in ("finetune", "merge")}
    assert "</span></td><td>cpu</td>" in rows["finetune"] and "</span></td><td></td>" in rows["merge"]


def test_verify_recomputes_the_pipeline_and_finds_a_flipped_byte(dvc_project, tmp_path):
    res = run(["augdag", "verify"], dvc_project)
    assert res.stdout.strip().endswith("verify: OK")
    for stage in ("ingest", "traditional", "mix", "generative", "crossdomain", "merge"):
        assert f"{stage}: " in res.stdout and "all match their hashes" in res.stdout
    assert "evaluate: recomputed in a scratch copy, outputs equal dvc.lock" in res.stdout
    # one byte of one stored traditional image flipped: verify names the sample and its shard, replay says the
    # stored sample differs from its recorded hash, and dvc status's view (the folder's md5) disagrees too
    proj = tmp_path / "copy"
    shutil.copytree(dvc_project, proj, symlinks=True)
    m = read_manifest(proj / "data" / "traditional")
    row = m.iloc[1]
    shard = np.load(proj / "data" / "traditional" / "shards" / f"{row['shard']}", mmap_mode="r+")
    shard[int(row["index"]), 3, 3, 0] ^= 0xFF
    shard.flush()
    del shard
    bad = run(["augdag", "verify", "--samples-only", "--json"], proj, check=False)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["samples"]["traditional"]["mismatches"] == 1 and report["samples"]["mix"]["mismatches"] == 0
    first = report["samples"]["traditional"]["first"][0]
    assert first["sample_id"] == row["sample_id"] and first["where"] == f"shard {row['shard']} index {row['index']}"
    assert any("data/traditional" in line for line in report["workspace"]["traditional"])
    rep = run(["augdag", "replay", row["sample_id"]], proj, check=False)
    assert "MISMATCH" in rep.stdout and "the stored sample was changed after it was written" in rep.stdout
    assert "regenerated" not in rep.stdout  # the recipe still gives the recorded bytes


def test_a_stage_run_by_hand_leaves_git_as_dvc_would(dvc_project, tmp_path):
    """augdag stage NAME (as the README shows) removes no tracked file (DVC's .gitignore beside file outputs)
    and leaves no output untracked, for every stage."""
    from augdag.tasks import STAGES

    proj = tmp_path / "copy"
    shutil.copytree(dvc_project, proj, symlinks=True)
    shutil.copy2(REPO / ".gitignore", proj / ".gitignore")  # a clone's: per-run records are ignored
    run(["git", "add", "-A"], proj)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "after dvc repro"], proj)
    tracked = set(run(["git", "ls-files"], proj).stdout.split())
    assert {"data/strategy/.gitignore", "data/evaluate/.gitignore"} <= tracked
    for name in STAGES:
        run(["augdag", "stage", name], proj)
        status = run(["git", "status", "--porcelain", "--untracked-files=all"], proj).stdout
        assert status == "", f"after augdag stage {name}:\n{status}"


def test_a_refused_dataset_leaves_params_yaml_and_dvc_status_as_they_were(dvc_project, tmp_path):
    from helpers import image_folder

    proj = tmp_path / "copy"
    shutil.copytree(dvc_project, proj, symlinks=True)
    before = (proj / "params.yaml").read_bytes()
    bad = image_folder(tmp_path / "photos", per_class=6)
    (bad / "circle" / "cut.png").write_bytes((bad / "circle" / "img01.png").read_bytes()[:40])
    for dataset, says in ((bad, "1 problem(s) in the dataset folder"),
                          (tmp_path / "nowhere", "dataset folder not found")):
        res = run(["augdag", "run", "--dataset", str(dataset)], proj, check=False)
        assert res.returncode != 0 and says in res.stderr + res.stdout, res.stderr[-2000:]
        assert (proj / "params.yaml").read_bytes() == before
        assert "up to date" in run(["dvc", "status", "dvc.yaml"], proj).stdout


def test_changing_one_traditional_param_reruns_only_it_and_downstream(dvc_project):
    import yaml

    path = dvc_project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["traditional"]["ops"]["rotation"]["degrees"] = 30
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    res = run(["dvc", "repro"], dvc_project)
    ran = ran_stages(res.stdout)
    # evaluate/report rerun only if the 3-step fine-tune happened to draw a changed sample
    assert {"traditional", "quality", "merge", "dialogue", "finetune"} <= ran <= {
        "traditional", "quality", "merge", "dialogue", "finetune", "evaluate", "report"}, res.stdout


def test_dvc_metrics_plots_and_dag(dvc_project):
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], dvc_project).stdout)
    found = next(iter(metrics.values()))["data"]
    evaluate = json.loads((dvc_project / "data" / "evaluate" / "metrics.json").read_text())
    assert found["data/evaluate/metrics.json"]["data"]["accuracy"] == evaluate["accuracy"]
    # DVCLive's summary of the fine-tune is the curve's last point, as the stage's summary has it
    last = json.loads((dvc_project / "data" / "finetune" / "summary.json").read_text())
    live = found["data/finetune/dvclive/metrics.json"]["data"]
    assert live == {k: last[k] for k in ("step", "train_loss", "val_loss", "val_accuracy")}
    tsv = (dvc_project / "data" / "finetune" / "dvclive" / "plots" / "metrics" / "val_accuracy.tsv").read_text()
    assert tsv.splitlines()[0] == "step\tval_accuracy" and tsv.splitlines()[-1].split("\t")[0] == str(last["steps"])
    dag = run(["dvc", "dag"], dvc_project).stdout
    for stage in ("ingest", "traditional", "mix", "generative", "crossdomain", "quality", "finetune", "report"):
        assert stage in dag
    run(["dvc", "plots", "show", "-o", "plots"], dvc_project)
    page = (dvc_project / "plots" / "index.html").read_text()
    assert "Fine-tuning curve (DVCLive)" in page and "Confusion matrix" in page and "val_accuracy.tsv" in page


# --- the flow on Dask (prefect-dask, a real LocalCluster of worker processes) ----------------------

def test_dask_runner_gives_the_local_runners_bytes(flow_project, tmp_path_factory):
    """Small chunks, so each branch becomes several shard tasks spread over two worker processes; the
    outputs equal the local runner's (flow_project) file for file. Then DVC remote push and pull."""
    import asyncio

    from prefect.client.orchestration import get_client

    from augdag.flows.pipeline import run_pipeline

    base = tmp_path_factory.mktemp("dask")  # flow_project's params, its crossdomain folders written here alike
    dask = make_project(base / "proj", deep_merge(deep_merge(SMALL, crossdomain_overrides(base)),
                                                  {"runner": {"kind": "dask", "n_workers": 2, "chunk_size": 4}}))
    results = run_pipeline(str(dask), workers=2)
    assert not any(r.get("skipped") for r in results.values())
    a, b = out_hashes(flow_project), out_hashes(dask)
    assert "traditional/manifest.parquet" in a and "mix/manifest.parquet" in a and "finetune/model.safetensors" in a
    assert a == b

    async def task_runs():
        async with get_client() as client:
            return await client.read_task_runs()

    runs = [r for r in asyncio.run(task_runs()) if "-shard-" in r.name]
    # 20 traditional and 20 mix samples in chunks of 4: five shard tasks each; the generator's sampling and the
    # gate's scoring ran as shard tasks too (one each at this size); all completed.
    assert {f"{br}-shard-{i:04d}" for br in ("traditional", "mix") for i in range(5)} <= {r.name for r in runs}
    assert {"generative-shard-0000", "quality-shard-0000"} <= {r.name for r in runs}
    assert all(r.state.is_completed() for r in runs)

    # The outputs go to a DVC remote and come back from it byte for byte (README's remote commands).
    remote = tmp_path_factory.mktemp("remote")
    run(["dvc", "remote", "add", "-d", "store", str(remote)], dask)
    run(["dvc", "push"], dask)
    shutil.rmtree(dask / "data")
    shutil.rmtree(dask / ".dvc" / "cache")
    run(["dvc", "pull"], dask)
    pulled = out_hashes(dask)
    assert {k: v for k, v in pulled.items() if k in a} == a and "report/report.html" in pulled


def test_unreachable_dask_scheduler_is_a_clear_error(prefect_server, tmp_path_factory):
    from augdag.errors import AugdagError
    from augdag.flows.pipeline import run_pipeline

    proj = make_project(tmp_path_factory.mktemp("unreachable"),
                        {**SMALL, "runner": {"kind": "dask", "address": "tcp://127.0.0.1:9"}})
    with pytest.raises(AugdagError, match=r"runner.kind=dask: cannot reach tcp://127.0.0.1:9"):
        run_pipeline(str(proj), workers=1)
    assert not (proj / "data" / "ingest").exists()


def test_dvc_parses_its_yaml_with_libyaml(flow_project):
    """ruamel.yaml 0.19 made libyaml optional; without ruamel.yaml.clib every status and commit the flow makes
    parses dvc.yaml and dvc.lock in pure Python (3x slower). The parser DVC builds for a safe load is the C one."""
    from dvc.utils.serialize import _yaml
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__module__.startswith("ruamel.yaml.clib"), YAML(typ="safe").Parser
    text = (flow_project / "dvc.lock").read_text()
    lock = _yaml.parse_yaml(text, "dvc.lock")
    assert set(lock["stages"]) >= {"ingest", "finetune", "report"}


def test_the_readmes_read_only_commands_work_as_shown_after_a_run(flow_project):
    """What the README tells a user to type after `make demo` answers here too (the small project's train ids
    are among the default run's, so its sample ids exist)."""
    from test_readme import readme_commands

    from helpers import BIN

    read_only = ("augdag lineage", "augdag replay", "dvc metrics show", "dvc dag", "dvc status")
    cmds = [c for c in readme_commands() if c.removeprefix(".venv/bin/").startswith(read_only)]
    assert {c.removeprefix(".venv/bin/").split()[1] for c in cmds} >= {"lineage", "replay", "status"}, cmds
    for c in cmds:
        res = run(c.replace(".venv/bin/", f"{BIN}/"), flow_project, shell=True, check=False)
        assert res.returncode == 0, f"{c}\n{res.stdout}\n{res.stderr}"
        if " replay " in c:
            assert "OK, content hash reproduced" in res.stdout, res.stdout
        if " lineage " in c:
            assert re.search(r"fmnist-train-\d+", res.stdout), res.stdout
        if " status " in c:
            assert "up to date" in res.stdout, res.stdout


# The default run (params.yaml as committed: Fashion-MNIST, 20 labelled images per class, all three branches)
# must fine-tune a model well above chance (0.10 for 10 classes). It gives 0.7725 on the machines of
# bench/RESULTS.md; 0.70 leaves room for another CPU's float rounding, and fails a broken fine-tune, a gate
# that lets noise through or a label mix-up, each of which lands near chance.
DEFAULT_RUN_ACCURACY_FLOOR = 0.70


def test_the_default_run_beats_the_accuracy_floor(tmp_path):
    proj = make_project(tmp_path / "default")
    res = run(["augdag", "run"], proj, timeout=1800)
    metrics = json.loads((proj / "data" / "evaluate" / "metrics.json").read_text())
    assert metrics["n_test"] >= 1000, metrics
    assert metrics["accuracy"] >= DEFAULT_RUN_ACCURACY_FLOOR, (metrics, res.stdout[-2000:])
    assert metrics["macro_f1"] >= DEFAULT_RUN_ACCURACY_FLOOR - 0.05, metrics
    print(f"default run: test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
