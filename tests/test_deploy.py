"""prefect.yaml: augdag's deployments for a Prefect work pool of type process, as a user runs them against a
server of their own: a real `prefect server start` on a free port, `prefect work-pool create`, `prefect deploy
--all` from the project folder, a real `prefect worker start` (started outside the project, so the pull step is
what finds it), and runs launched with `prefect deployment run`; their states, outputs and params read back."""

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from augdag import numerics
from augdag.env import _MALLOC_SETTINGS, OFFLINE
from augdag.flows import serve
from augdag.prefect_server import api_url, die_with_parent, free_port, stop_server, wait_healthy
from augdag.tasks import STAGES
from helpers import BIN, REPO, SMALL, make_project

POOL = "augdag-process"
PIPELINE, COMPARE = "augdag-ui-pipeline/process", "augdag-ui-compare/process"
STARTUP_S = 300  # a Prefect server on a busy 2-core machine
RUN_S = 600
RUN_PARAMS = {"seed": 3, "finetune": {"steps": 2}, "robustness": False}


def prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


# ------------------------------------------------------------------------------------ no server needed

def test_prefect_yaml_deploys_the_form_flows_to_the_process_pool():
    spec = prefect_yaml()
    by_entry = {d["entrypoint"]: d for d in spec["deployments"]}
    assert set(by_entry) == {"flows/serve.py:pipeline_form", "flows/serve.py:compare_form"}
    for entry, flow_name in (("pipeline_form", "augdag-ui-pipeline"), ("compare_form", "augdag-ui-compare")):
        path, func = by_entry[f"flows/serve.py:{entry}"]["entrypoint"].split(":")
        assert (REPO / path).is_file() and getattr(serve, func).name == flow_name
    for d in spec["deployments"]:
        assert d["name"] == "process" and d["work_pool"]["name"] == POOL
        assert d["parameters"] == {"root": "{{ project.stdout }}"}
    (step,) = spec["build"]
    assert step["prefect.deployments.steps.run_shell_script"]["id"] == "project"
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ project.stdout }}"}}]


def test_the_flow_runs_environment_matches_what_the_augdag_command_sets():
    """The kernel caps, the offline switches and the malloc settings are the code's, not a stale copy."""
    for d in prefect_yaml()["deployments"]:
        env = d["work_pool"]["job_variables"]["env"]
        want = {**{k: v for k, v in OFFLINE.items() if not k.startswith("PREFECT_")}, **numerics.PINS,
                **{name: str(value) for _, name, value in _MALLOC_SETTINGS}}
        assert env == want


# ----------------------------------------------------------------------------------- a deployed project

def _env(home: Path, url: str) -> dict:
    """A user's shell: the project's offline switches, a fresh PREFECT_HOME, the server's URL; without the kernel
    caps and malloc settings the test process has, so the flow runs get them from prefect.yaml alone."""
    drop = set(numerics.PINS) | {name for _, name, _ in _MALLOC_SETTINGS}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("PREFECT_API", "PREFECT_UI"))}
    env.update(OFFLINE)
    env.update(PATH=f"{BIN}:{env['PATH']}", PREFECT_HOME=str(home), PREFECT_API_URL=url)
    return env


class Deployed:
    def __init__(self, proj: Path, env: dict, worker_log: Path):
        self.proj, self.env, self.worker_log = proj, env, worker_log
        self.no_pool = self.deploy = None  # `prefect deploy --all` before and after the pool was created

    def prefect(self, *args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], cwd=cwd or self.proj, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def tail(self) -> str:
        return self.worker_log.read_text()[-6000:]

    def launch(self, name: str, params: dict) -> str:
        """`prefect deployment run NAME --params ... --watch`, from outside the project; the flow run's id."""
        t0 = time.monotonic()
        res = self.prefect("deployment", "run", name, "--params", json.dumps(params), "--watch",
                           "--watch-timeout", str(RUN_S), cwd=self.proj.parent, timeout=RUN_S + 60)
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}\nworker:\n{self.tail()}"
        print(f"{name}: {time.monotonic() - t0:.0f} s")
        return next(line.split()[-1] for line in res.stdout.splitlines() if "UUID:" in line)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    proj = make_project(tmp / "proj", SMALL)
    shutil.copy2(REPO / "prefect.yaml", proj / "prefect.yaml")
    port = free_port()
    url = api_url("127.0.0.1", port)
    env = _env(tmp / "prefect-home", url)
    server_log, worker_log = tmp / "server.log", tmp / "worker.log"
    server = worker = None
    try:
        with open(server_log, "w") as out:
            server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                       str(port), "--analytics-off"], cwd=tmp, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=die_with_parent())
        wait_healthy(server, url, STARTUP_S, "prefect server start", poll_s=0.5)
        d = Deployed(proj, env, worker_log)
        d.no_pool = d.prefect("--no-prompt", "deploy", "--all")  # before the pool exists
        res = d.prefect("work-pool", "create", POOL, "--type", "process")
        assert res.returncode == 0, res.stdout + res.stderr
        d.deploy = d.prefect("--no-prompt", "deploy", "--all")
        assert d.deploy.returncode == 0, d.deploy.stdout[-3000:] + d.deploy.stderr[-3000:]
        with open(worker_log, "w") as out:  # started in tmp, not in the project: the pull step must find it
            worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--limit", "1"],
                                      cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent())
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield d
    finally:
        if worker is not None:  # before the server: a worker that has lost its server is slow to stop
            stop_server(worker, timeout=30.0)
        if server is not None:
            stop_server(server)


async def _read_deployments(names):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [await client.read_deployment_by_name(n) for n in names]


async def _read_run(run_id: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(run_id)


@pytest.mark.slow
def test_deploy_needs_the_work_pool_and_registers_both_deployments_on_it(deployed):
    assert deployed.no_pool.returncode != 0 and f"work pool '{POOL}' which does not exist" in " ".join(
        (deployed.no_pool.stdout + deployed.no_pool.stderr).split())
    proj = str(deployed.proj.resolve())
    pipe, comp = asyncio.run(_read_deployments([PIPELINE, COMPARE]))
    for dep, entry in ((pipe, "flows/serve.py:pipeline_form"), (comp, "flows/serve.py:compare_form")):
        assert dep.work_pool_name == POOL and dep.entrypoint == entry
        assert dep.parameters == {"root": proj} and proj in dep.description
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": proj}}]
        assert dep.job_variables["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    props = pipe.parameter_openapi_schema["properties"]  # the form's typed fields, as `augdag server` serves them
    assert {"dataset", "seed", "branches", "gate", "finetune", "robustness", "extra", "workers", "force"} <= set(props)
    assert "all_nogate" in comp.parameter_openapi_schema["properties"]["strategies"]["items"]["enum"]
    listed = deployed.prefect("deployment", "ls")
    assert listed.returncode == 0 and all(n in " ".join(listed.stdout.split()) for n in (PIPELINE, COMPARE))


@pytest.mark.slow
def test_a_pipeline_run_on_the_worker_writes_params_outputs_and_dvc_lock(deployed):
    from augdag.params import load_params

    run_id = deployed.launch(PIPELINE, RUN_PARAMS)
    fr = asyncio.run(_read_run(run_id))
    assert fr.state.type.value == "COMPLETED" and fr.work_pool_name == POOL, fr.state
    proj = deployed.proj
    written = load_params(proj / "params.yaml")
    assert written.seed == 3 and written.finetune.steps == 2 and written.evaluate.robustness.enabled is False
    metrics = json.loads((proj / "data" / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["macro_f1"] <= 1.0
    assert metrics["n_test"] == 10 * SMALL["ingest"]["n_test_per_class"] and "robustness" not in metrics
    assert (proj / "data" / "report" / "report.html").is_file()
    assert set(yaml.safe_load((proj / "dvc.lock").read_text())["stages"]) == set(STAGES)
    dvc = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=proj, env=deployed.env, capture_output=True,
                         text=True, timeout=300)
    assert json.loads(dvc.stdout) == {}, dvc.stdout + dvc.stderr
    if "avx2" in Path("/proc/cpuinfo").read_text():  # the kernel caps reached the flow run from prefect.yaml
        kernels = json.loads((proj / "data" / "traditional" / "summary.json").read_text())["numerics"]
        assert kernels["aten"] == "AVX2", kernels


@pytest.mark.slow
def test_a_compare_run_on_the_worker_writes_the_comparison(deployed):
    run_id = deployed.launch(COMPARE, {"strategies": ["none"], "seeds": [0]})
    fr = asyncio.run(_read_run(run_id))
    assert fr.state.type.value == "COMPLETED" and fr.work_pool_name == POOL, fr.state
    out = json.loads((deployed.proj / "data" / "compare" / "comparison.json").read_text())
    assert list(out["strategies"]) == ["none"] and out["strategies"]["none"]["n"] == 1, out
    assert 0.0 <= out["strategies"]["none"]["test_mean"] <= 1.0
    assert (deployed.proj / "data" / "compare" / "comparison.html").is_file()
