"""`augdag server`: a real Prefect server on 127.0.0.1, the flows served as deployments, a pipeline run
launched through the API with typed parameters, its outputs, artifacts and logs read back; Ctrl-C stops it."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from augdag.errors import AugdagError, ParamsError
from augdag.flows import serve
from augdag.params import dotted_to_nested, load_params, write_overrides
from augdag.prefect_server import free_port
from augdag.tasks import STAGES
from helpers import BIN, REPO, SMALL, assert_consistent, make_project, run

STARTUP_S = 300  # a Prefect server, then the runner, on a busy 2-core machine
RUN_S = 900
STOP_S = 90  # one Ctrl-C to exit: the runner's grace for a flow run is 30 s, then augdag's own is 30 s

# What the form sets in the test run, and what each must become in params.yaml.
FORM = {
    "seed": 3,
    "branches": {"generative_multiplier": 1, "mix": True},
    "gate": {"traditional_psnr": 25.0, "off": ["mix.label_prob"]},
    "finetune": {"steps": 2, "pretrained": False, "lr": 1e-5, "sampling_mode": "uniform"},
    "robustness": False,
    "extra": ["report.grid_samples=2"],
}
EXPECTED = [("seed", 3), ("strategy.generative.multiplier", 1), ("strategy.mix.enabled", True),
            ("quality.thresholds.traditional.psnr", 25.0), ("quality.thresholds.mix.label_prob", None),
            ("finetune.steps", 2), ("finetune.pretrained", False), ("finetune.lr", 1e-5),
            ("finetune.sampling.mode", "uniform"), ("evaluate.robustness.enabled", False),
            ("report.grid_samples", 2)]


def get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


# ------------------------------------------------------------------------------------ no server needed

def test_form_fields_come_from_the_params_schema_and_map_to_set_overrides(tmp_path):
    info = serve.Finetune.model_fields["steps"]
    assert "finetune.steps" in info.description
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        serve.Finetune(steps=0)  # the range of FinetuneParams.steps
    with pytest.raises(ValidationError):
        serve.Finetune(sampling_mode="sometimes")  # the Literal of SamplingParams.mode
    with pytest.raises(ValidationError):
        serve.Gate(traditional_ssim=2.0)  # BranchThresholds.ssim <= 1

    overrides = serve.pipeline_overrides(
        tmp_path, dataset="imgs", seed=FORM["seed"], branches=serve.Branches(**FORM["branches"]),
        gate=serve.Gate(**FORM["gate"]), finetune=serve.Finetune(**FORM["finetune"]),
        robustness=FORM["robustness"], extra=FORM["extra"])
    assert overrides[0] == f"ingest.source={tmp_path.resolve() / 'imgs'}"
    assert "finetune.lr=1.0e-05" in overrides  # read back as a float, not the string '1e-05'
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    write_overrides(params_file, dotted_to_nested(overrides))
    written = load_params(params_file).model_dump()
    for key, value in EXPECTED:
        assert get(written, key) == value, key
    assert serve.pipeline_overrides(tmp_path) == []  # an untouched form keeps params.yaml as it is
    with pytest.raises(ParamsError, match="both given a threshold and turned off"):
        serve.pipeline_overrides(tmp_path, gate=serve.Gate(mix_label_prob=0.2, off=["mix.label_prob"]))


def test_the_form_turns_the_crossdomain_branch_on_with_its_folders_resolved_in_the_project(tmp_path):
    form = serve.Branches(crossdomain=True, crossdomain_target="domains/unlabelled", target_test="/abs/test")
    overrides = serve.pipeline_overrides(tmp_path, branches=form)
    assert overrides == ["strategy.crossdomain.enabled=true",
                         f"crossdomain.target={tmp_path.resolve() / 'domains' / 'unlabelled'}",
                         "evaluate.target_test=/abs/test"]
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    write_overrides(params_file, dotted_to_nested(overrides))
    p = load_params(params_file)
    assert p.strategy.crossdomain.enabled and p.crossdomain.target == str(tmp_path.resolve() / "domains/unlabelled")
    with pytest.raises(ParamsError, match="needs crossdomain.target"):  # on without a target: refused before a run
        write_overrides(params_file, dotted_to_nested(["crossdomain.target=null"]))
        load_params(params_file)


def test_only_loopback_hosts_without_expose():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        serve.check_host(host, expose=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(AugdagError, match="--expose"):
            serve.check_host(host, expose=False)
        serve.check_host(host, expose=True)
    warning = serve.exposure_warning("0.0.0.0", 4200)
    assert "no authentication" in warning and "execute code" in warning and "read data" in warning


def test_cli_refuses_a_public_host_without_expose(tmp_path):
    res = run(["augdag", "-C", str(REPO), "server", "--host", "0.0.0.0", "--port", str(free_port())], tmp_path,
              check=False, env={"PREFECT_HOME": str(tmp_path / "home")}, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--host 0.0.0.0" in res.stderr and "--expose" in res.stderr and "no authentication" in res.stderr
    assert "Traceback" not in res.stderr and "starting the Prefect server" not in res.stdout
    assert not list((tmp_path / "home").glob("*.db"))  # no server ever started


# ----------------------------------------------------------------------------------- a served project

def health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as res:
            return res.status == 200
    except OSError:
        return False


def listening(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on `port`, from /proc/net/tcp{,6}."""
    out = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                raw = bytes.fromhex(addr)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                out.append(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
    return out


def own_addresses() -> set[str]:
    """This machine's non-loopback IPv4 addresses that can be found without the network."""
    found = set()
    try:
        found |= {ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # UDP: picks the outgoing address, sends nothing
            found.add(s.getsockname()[0])
    except OSError:
        pass
    return {a for a in found if not a.startswith("127.") and a != "0.0.0.0"}


class Served:
    def __init__(self, proj: Path, port: int, proc: subprocess.Popen, log: Path):
        self.proj, self.port, self.proc, self.log = proj, port, proc, log

    def tail(self) -> str:
        return self.log.read_text()[-6000:]


async def _deployment_ready(name: str) -> bool:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        try:
            await client.read_deployment_by_name(name)
            return True
        except Exception:
            return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("serve")
    proj = make_project(tmp / "proj", SMALL)
    port = free_port()
    log = tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    env.update(PATH=f"{BIN}:{env['PATH']}", PREFECT_HOME=str(tmp / "prefect-home"))
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "augdag"), "-C", str(proj), "server", "--port", str(port)], cwd=tmp,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    s = Served(proj, port, proc, log)
    try:
        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            deadline = time.monotonic() + STARTUP_S
            while not (health(port) and all(asyncio.run(_deployment_ready(d))
                                            for d in (serve.PIPELINE_DEPLOYMENT, serve.COMPARE_DEPLOYMENT))):
                assert proc.poll() is None, f"augdag server exited ({proc.returncode}):\n{s.tail()}"
                assert time.monotonic() < deadline, f"not served within {STARTUP_S} s:\n{s.tail()}"
                time.sleep(2)
            yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()  # the server dies with it (PR_SET_PDEATHSIG) ...
                proc.wait(10)
        deadline = time.monotonic() + 30
        while listening(port) and time.monotonic() < deadline:  # ... give it time to go
            time.sleep(1)


@pytest.mark.slow
def test_server_listens_on_loopback_only(served):
    addrs = listening(served.port)
    assert addrs and set(addrs) == {"127.0.0.1"}, addrs
    for ip in own_addresses():
        with pytest.raises(OSError):  # refused: nothing listens on that address
            socket.create_connection((ip, served.port), timeout=3).close()


@pytest.mark.slow
def test_both_deployments_are_served_with_typed_parameters(served):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return [await client.read_deployment_by_name(n)
                    for n in (serve.PIPELINE_DEPLOYMENT, serve.COMPARE_DEPLOYMENT)]

    pipe, comp = asyncio.run(read())
    assert pipe.parameters == {"root": str(served.proj.resolve())} == comp.parameters
    props = pipe.parameter_openapi_schema["properties"]
    assert {"dataset", "seed", "branches", "gate", "finetune", "robustness", "extra", "workers", "force"} <= set(props)
    defs = pipe.parameter_openapi_schema["definitions"]
    steps = defs["Finetune"]["properties"]["steps"]
    assert {"type": "integer", "minimum": 1} in steps["anyOf"] and "finetune.steps" in steps["description"]
    assert set(defs["Finetune"]["properties"]["sampling_mode"]["anyOf"][0]["enum"]) == {"static", "uniform", "dynamic"}
    strategies = comp.parameter_openapi_schema["properties"]["strategies"]
    assert "all_nogate" in strategies["items"]["enum"] and strategies["default"][0] == "none"


@pytest.mark.slow
def test_the_server_refuses_parameters_outside_the_params_schema(served):
    from prefect.deployments import run_deployment

    with pytest.raises(Exception, match="Validation failed"):  # the server checks the deployment's schema
        run_deployment(serve.PIPELINE_DEPLOYMENT, parameters={"finetune": {"steps": 0}}, timeout=0, as_subflow=False)


@pytest.fixture(scope="module")
def pipeline_run(served):
    from prefect.deployments import run_deployment

    t0 = time.monotonic()
    fr = run_deployment(serve.PIPELINE_DEPLOYMENT, parameters=FORM, timeout=RUN_S, poll_interval=2, as_subflow=False)
    assert fr.state is not None and fr.state.is_completed(), f"{fr.state}\n{served.tail()}"
    print(f"deployment run: {time.monotonic() - t0:.0f} s")
    return fr


@pytest.mark.slow
def test_a_launched_run_writes_params_outputs_and_dvc_lock(served, pipeline_run):
    proj = served.proj
    written = load_params(proj / "params.yaml").model_dump()
    for key, value in EXPECTED:
        assert get(written, key) == value, key
    metrics = json.loads((proj / "data" / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "robustness" not in metrics
    assert set(yaml.safe_load((proj / "dvc.lock").read_text())["stages"]) == set(STAGES)
    assert json.loads(run(["dvc", "status", "--json"], proj).stdout) == {}


@pytest.mark.slow
def test_stage_tables_report_link_and_logs_reach_prefect(served, pipeline_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId

    from augdag.flows.pipeline import figures

    tables = ["quality", "merge", "finetune", "evaluate"]
    keys = [f"augdag-{n}-table" for n in tables] + ["augdag-report-link"]

    async def read():
        async with get_client() as client:
            arts = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
            runs = {a.flow_run_id for a in arts}
            parents = {}
            for rid in runs:  # each artifact's flow run: the augdag-pipeline subflow of the deployment run
                child = await client.read_flow_run(rid)
                parents[rid] = (await client.read_task_run(child.parent_task_run_id)).flow_run_id
            logs, flt = [], LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(runs)))
            while page := await client.read_logs(log_filter=flt, limit=200, offset=len(logs)):
                logs += page
            return arts, parents, logs

    arts, parents, logs = asyncio.run(read())
    by_key = {a.key: a for a in arts}
    assert set(by_key) == set(keys)
    assert set(parents.values()) == {pipeline_run.id}
    proj = served.proj
    for name in tables:
        a = by_key[f"augdag-{name}-table"]
        data = json.loads(a.data) if isinstance(a.data, str) else a.data
        assert a.type == "table" and data == figures(name, proj), name

    quality = json.loads(by_key["augdag-quality-table"].data)
    summary = json.loads((proj / "data" / "quality" / "summary.json").read_text())
    assert [r["branch"] for r in quality] == ["traditional", "mix", "generative", "crossdomain"]  # off: in 0
    for r in quality:
        s = summary[r["branch"]]
        assert ((r["in"], r["kept"], r["rejected"], r["pass_rate"])
                == (s["in"], s["kept"], s["rejected"], s["pass_rate"]))
        assert (r["in"] > 0) == (r["branch"] != "crossdomain") and r["kept"] + r["rejected"] == r["in"]
    merge = json.loads(by_key["augdag-merge-table"].data)
    assert merge[0]["source"] == "raw" and abs(sum(r["mass"] for r in merge) - 1.0) < 1e-5
    finetune = {r["figure"]: r["value"] for r in json.loads(by_key["augdag-finetune-table"].data)}
    assert finetune["steps"] == 2 and finetune["sampling mode"] == "uniform" and "final weight raw" in finetune
    metrics = json.loads((proj / "data" / "evaluate" / "metrics.json").read_text())
    evaluate = {r["figure"]: r["value"] for r in json.loads(by_key["augdag-evaluate-table"].data)}
    assert evaluate["accuracy"] == metrics["accuracy"] and evaluate["macro_f1"] == metrics["macro_f1"]

    link = by_key["augdag-report-link"]
    page = proj / "data" / "report" / "report.html"
    assert link.type == "markdown" and f"]({page.as_uri()})" in link.data and page.exists()
    assert f"{metrics['accuracy']:.4f}" in link.data

    text = "\n".join(lg.message for lg in logs)
    for line in ("finetune: step 2/2", "quality: {", "traditional: "):  # stage code's own log lines
        assert line in text, line

    async def progress():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["augdag-finetune-progress", "augdag-ingest-progress"])))

    done = {a.key: a for a in asyncio.run(progress()) if a.flow_run_id in parents}
    assert set(done) == {"augdag-finetune-progress", "augdag-ingest-progress"}  # long steps show a progress bar
    assert all(a.type == "progress" and float(a.data) == 100.0 for a in done.values())


@pytest.mark.slow
def test_one_ctrl_c_stops_the_server_and_a_run_in_flight(served, pipeline_run):
    """A run launched from the UI is fine-tuning (100,000 steps: minutes) when the user presses Ctrl-C once in
    `augdag server`'s terminal: the runner cancels the run (SIGTERM to its process, whose running stage stops at
    its next step), the server stops, and the project is left consistent."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{served.port}/api"}):
        run_deployment(serve.PIPELINE_DEPLOYMENT, timeout=0, as_subflow=False,
                       parameters={"finetune": {"steps": 100000}, "extra": ["finetune.eval_every=20"]})
    deadline = time.monotonic() + RUN_S
    while "finetune: step 20/100000" not in served.tail():
        assert served.proc.poll() is None and time.monotonic() < deadline, served.tail()
        time.sleep(1)
    t0 = time.monotonic()
    served.proc.send_signal(signal.SIGINT)
    try:
        rc = served.proc.wait(STOP_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"augdag server still running {STOP_S} s after one Ctrl-C:\n{served.tail()}") from None
    print(f"augdag server stopped {time.monotonic() - t0:.1f} s after Ctrl-C")
    assert rc == 0, served.tail()
    assert "stopping the Prefect server" in served.tail()
    deadline = time.monotonic() + 30
    while (listening(served.port) or health(served.port)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not listening(served.port) and not health(served.port)
    assert_consistent(served.proj)


@pytest.mark.slow
def test_ctrl_c_stops_even_when_prefects_runner_does_not(tmp_path):
    """If Prefect's runner swallowed Ctrl-C or hung in its shutdown, augdag would still stop the server it started
    and exit, after STOP_GRACE_S."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "import prefect\n"
        "from augdag.flows import serve as s\n"
        "s.STOP_GRACE_S = 2.0\n"
        "server = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print('server pid', server.pid, flush=True)\n"
        "s.start_server = lambda host, port: server\n"
        "s.deployments = lambda root: []\n"
        "def stubborn(*a, **k):\n"
        "    ready = False\n"
        "    while True:\n"
        "        try:\n"
        "            if not ready:\n"
        "                ready = True\n"
        "                print('serving', flush=True)\n"
        "            time.sleep(0.2)\n"
        "        except KeyboardInterrupt:\n"
        "            pass\n"
        "s._serve = stubborn\n"
        "s.serve_all(sys.argv[1], port=1)\n")
    proc = subprocess.Popen([str(BIN / "python"), str(script), str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("serving"):
            break
    server_pid = int(next(x for x in lines if x.startswith("server pid")).split()[-1])
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        os.killpg(server_pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, "".join(lines) + out
    assert "did not stop within 2 s of Ctrl-C" in out
    with pytest.raises(ProcessLookupError):  # the server's process group is gone
        for _ in range(50):
            os.kill(server_pid, 0)
            time.sleep(0.2)
