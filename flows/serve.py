"""`augdag server`: a local Prefect server plus the pipeline and compare flows served as deployments,
so runs are launched from the UI with typed parameters.

The forms hold no schema of their own: each field is a params.yaml key, and its type, range and
description come from augdag.params. A launch turns the fields the user filled in into the same
`KEY=VALUE` overrides as `augdag run --set` and calls the same flows; an empty field keeps the value
in params.yaml. The compare form picks strategies from augdag.compare.STRATEGIES.

The server binds 127.0.0.1 unless `expose` is given: Prefect's open-source server has no
authentication, and a deployment runs code on this machine.
"""

# No `from __future__ import annotations`: Prefect and pydantic read these annotations as objects.
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model

from augdag import numerics
from augdag.env import set_offline

# A work pool's flow-run process starts by importing this module, in the project folder (prefect.yaml's pull
# step), not through the augdag command: the kernel caps are set here, before the stages load torch.
numerics.pin_from_params()

set_offline()

from prefect import flow  # noqa: E402

from augdag import compare  # noqa: E402
from augdag.errors import AugdagError, ParamsError  # noqa: E402
from augdag.params import BRANCHES, BranchThresholds, Params  # noqa: E402
from augdag.prefect_server import api_url, die_with_parent, port_free, startup_timeout, stop_server, wait_healthy  # noqa: E402

PIPELINE_DEPLOYMENT = "augdag-ui-pipeline/local"
COMPARE_DEPLOYMENT = "augdag-ui-compare/local"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


# ---------------------------------------------------------------------------------------------- forms

class _Key:
    """Marks a form field with the params.yaml key it sets."""

    def __init__(self, key: str):
        self.key = key

    def __repr__(self) -> str:
        return f"_Key({self.key!r})"


def _param(key: str, description: str | None = None) -> Any:
    """The type, range and description of params.yaml's `key` (from augdag.params), made optional."""
    model: type[BaseModel] = Params
    parts = key.split(".")
    for part in parts[:-1]:
        model = model.model_fields[part].annotation
    info = model.model_fields[parts[-1]]
    text = description or info.description
    desc = f"{key}{': ' + text if text else ''} (None: keep params.yaml's value; pick the type to set one)"
    return Annotated[Optional[info.annotation], Field(description=desc), *info.metadata, _Key(key)]


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Branches(_Form):
    traditional: _param("strategy.traditional.enabled", "traditional transforms on") = None
    traditional_multiplier: _param("strategy.traditional.multiplier") = None
    mix: _param("strategy.mix.enabled", "Mixup/CutMix on") = None
    mix_multiplier: _param("strategy.mix.multiplier") = None
    generative: _param("strategy.generative.enabled", "generative model on") = None
    generative_multiplier: _param("strategy.generative.multiplier") = None
    crossdomain: _param("strategy.crossdomain.enabled", "cross-domain translation (CycleGAN) into the target folder "
                                                        "below") = None
    crossdomain_target: _param("crossdomain.target") = None
    target_test: _param("evaluate.target_test") = None


PATH_KEYS = ("crossdomain.target", "evaluate.target_test")  # folders: relative ones mean the project folder


CHECKS = tuple(BranchThresholds.model_fields)
GateCheck = Literal[tuple(f"{b}.{c}" for b in BRANCHES for c in CHECKS)]

# One threshold field per branch and check (traditional_psnr, ..., generative_label_prob), typed and
# ranged as quality.thresholds.<branch>.<check> is in augdag.params.
Gate = create_model(
    "Gate", __base__=_Form, __module__=__name__,
    **{f"{b}_{c}": (_param(f"quality.thresholds.{b}.{c}"), None) for b in BRANCHES for c in CHECKS},
    outlier_sigma=(_param("quality.outlier.sigma"), None),
    outlier_window_size=(_param("quality.outlier.window_size"), None),
    off=(list[GateCheck], Field(default_factory=list, description=(
        "threshold checks to turn off (quality.thresholds.<branch>.<check> = null)"))),
)


class Finetune(_Form):
    model: _param("finetune.model") = None
    pretrained: _param("finetune.pretrained", "start from the packaged pretrained weights") = None
    steps: _param("finetune.steps") = None
    batch_size: _param("finetune.batch_size") = None
    lr: _param("finetune.lr", "learning rate") = None
    image_size: _param("finetune.image_size") = None
    sampling_mode: _param("finetune.sampling.mode", "how batches spread over the sources") = None
    online_mix: _param("finetune.online_mix.enabled", "Mixup/CutMix per batch") = None
    online_augment: _param("finetune.online_augment") = None
    adversarial: _param("finetune.adversarial.enabled", "FGSM adversarial fine-tuning") = None
    adversarial_epsilon: _param("finetune.adversarial.epsilon") = None


def _scalar(value: Any) -> str:
    """A value as a YAML scalar that dotted_to_nested reads back unchanged (1e-05 -> '1.0e-05')."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.strip()


def _fields(form: BaseModel) -> list[str]:
    out = []
    for name, info in type(form).model_fields.items():
        keys = [m.key for m in info.metadata if isinstance(m, _Key)]
        value = getattr(form, name)
        if keys and value is not None:
            out.append(f"{keys[0]}={_scalar(value)}")
    return out


def pipeline_overrides(root: str | Path = ".", dataset: str | None = None, seed: int | None = None,
                       branches: Branches | None = None, gate: Gate | None = None,  # type: ignore[valid-type]
                       finetune: Finetune | None = None, robustness: bool | None = None,
                       extra: list[str] | None = None) -> list[str]:
    """The `augdag run --set` overrides a launch from the form stands for (filled-in fields only)."""
    out = []
    if dataset:
        path = Path(dataset).expanduser()
        out.append(f"ingest.source={_scalar(str(path if path.is_absolute() else (Path(root) / path).resolve()))}")
    if seed is not None:
        out.append(f"seed={seed}")
    for form in (branches, finetune):
        if form is not None:
            out += _fields(form)
    for i, item in enumerate(out):
        key, _, value = item.partition("=")
        if key in PATH_KEYS:
            path = Path(yaml.safe_load(value)).expanduser()
            out[i] = f"{key}={_scalar(str(path if path.is_absolute() else (Path(root) / path).resolve()))}"
    if gate is not None:
        both = [c for c in gate.off if getattr(gate, c.replace(".", "_")) is not None]
        if both:
            raise ParamsError(f"gate: {', '.join(both)} both given a threshold and turned off; pick one")
        out += _fields(gate) + [f"quality.thresholds.{c}=null" for c in gate.off]
    if robustness is not None:
        out.append(f"evaluate.robustness.enabled={_scalar(robustness)}")
    return out + list(extra or [])


@flow(name="augdag-ui-pipeline", log_prints=True)
def pipeline_form(
    root: str = ".",
    dataset: Optional[str] = None,
    seed: _param("seed") = None,
    branches: Branches = Branches(),
    gate: Gate = Gate(),  # type: ignore[valid-type]
    finetune: Finetune = Finetune(),
    robustness: _param("evaluate.robustness.enabled") = None,
    extra: list[str] = [],  # noqa: B006 (a flow parameter's default, never mutated)
    workers: Annotated[int, Field(ge=1, le=64)] = 2,
    force: bool = False,
) -> dict:
    """Run the augdag pipeline on the project in `root`: the filled-in fields are written into its
    params.yaml (validated first, as `augdag run --set` does), then the augdag-pipeline flow runs.
    An empty field keeps params.yaml's value.

    Args:
        root: the project folder (dvc.yaml, params.yaml)
        dataset: ingest.source: a folder of images, one subfolder per class (relative to the project),
            or fashion-mnist
        seed: seed, the global seed
        branches: strategy.<branch>: which augmentation branches run, and how many variants per sample
        gate: quality.thresholds.<branch>.<check>: the quality gate's minimum scores, and the outlier filter
        finetune: finetune: the fine-tune's settings
        robustness: evaluate.robustness.enabled: FGSM/PGD accuracy on a test subset
        extra: more overrides as KEY=VALUE, as `augdag run --set` takes them, e.g.
            traditional.ops.rotation.degrees=20
        workers: threads per stage
        force: rerun stages even when DVC says they are up to date
    """
    from augdag.flows.pipeline import run_pipeline
    from augdag.log import logger

    overrides = pipeline_overrides(root, dataset, seed, branches, gate, finetune, robustness, extra)
    logger().info("overrides: %s", " ".join(overrides) or "(none, params.yaml as it is)")
    return run_pipeline(str(Path(root).resolve()), set_params=overrides or None, workers=workers, force=force)


Strategy = Literal[tuple(compare.STRATEGIES)]


@flow(name="augdag-ui-compare", log_prints=True)
def compare_form(
    root: str = ".",
    strategies: Annotated[list[Strategy], Field(min_length=1)] = list(compare.COMPARISON),  # noqa: B008
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = list(compare.SEEDS),  # noqa: B008
    baseline: Strategy = "none",
    out: str = "data/compare",
    force: bool = False,
) -> dict:
    """Compare augmentation strategies over seeds on top of the project's params.yaml (augdag compare).

    Args:
        root: the project folder (dvc.yaml, params.yaml)
        strategies: strategies to compare (augdag/compare.py describes each)
        seeds: seeds per strategy; each (strategy, seed) is one fine-tune of a few minutes
        baseline: the strategy the paired differences are taken against
        out: output folder, relative to the project
        force: rerun every run even when a record with its params hash exists
    """
    from augdag.flows.compare import run_compare

    return run_compare(str(Path(root).resolve()), strategies=list(strategies), seeds=list(seeds), out=out,
                       baseline=baseline, force=force)


def deployments(root: str | Path) -> list:
    """The two deployments, with the project folder as the default `root`."""
    from prefect.types.entrypoint import EntrypointType

    root = str(Path(root).resolve())
    # A module entrypoint: the served runs import augdag.flows.serve, whatever the current directory.
    return [pipeline_form.to_deployment("local", parameters={"root": root}, entrypoint_type=EntrypointType.MODULE_PATH,
                                        description=f"augdag pipeline on {root}"),
            compare_form.to_deployment("local", parameters={"root": root}, entrypoint_type=EntrypointType.MODULE_PATH,
                                       description=f"augdag strategy comparison on {root}")]


# --------------------------------------------------------------------------------------------- server

def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str:
    return (f"WARNING: the Prefect server listens on {host}:{port}, beyond this machine. Anyone who can reach "
            f"that port can start flow runs that execute code and read data on this machine, and read every "
            f"run, log and artifact: Prefect's open-source server has no authentication by default. Use it "
            f"only on a network you trust, or behind a proxy that authenticates. For browsers on other "
            f"machines, set PREFECT_UI_API_URL=http://<this machine's address>:{port}/api.")


def check_host(host: str, expose: bool) -> None:
    if not is_loopback(host) and not expose:
        raise AugdagError(
            f"--host {host} would make the Prefect server reachable from other machines; its API has no "
            f"authentication, so anyone who reaches the port could run code and read data here. Keep the "
            f"default 127.0.0.1, or add --expose if that is what you want.")


def start_server(host: str = "127.0.0.1", port: int = 4200, timeout: float | None = None,
                 stdout=None, stderr=None) -> subprocess.Popen:
    """`prefect server start` in its own session (Ctrl-C reaches augdag, which then stops it), returned
    once its health endpoint answers."""
    if not port_free(host, port):
        raise AugdagError(f"port {port} on {host} is in use (another Prefect server?); pick one with --port")
    url = api_url(host, port)
    env = {**os.environ, "PREFECT_API_URL": url}  # the UI's API address, unless PREFECT_UI_API_URL says otherwise
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), "--analytics-off"]
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=die_with_parent())
    try:
        wait_healthy(proc, url, timeout or startup_timeout(), "prefect server", poll_s=0.5)
    except BaseException:
        stop_server(proc)
        raise
    return proc


STOP_GRACE_S = 30.0  # after Ctrl-C, how long the runner may take to stop before augdag stops the server itself


def _serve(runner, deployments: list) -> None:
    """Serve `deployments` with `runner` until it is stopped (what prefect.serve() does, with the runner in hand
    so that Ctrl-C can stop it the way Prefect stops it on SIGTERM)."""
    import asyncio

    for d in deployments:
        runner.add_deployment(d)
    asyncio.run(runner.start())


def serve_all(root: str | Path = ".", host: str = "127.0.0.1", port: int = 4200, expose: bool = False,
              limit: int = 1) -> None:
    """Start a Prefect server on host:port and serve both deployments against it until Ctrl-C (or
    SIGTERM), then stop the server. `limit`: flow runs at a time (one: runs share params.yaml and
    data/, and a fine-tune takes both cores).

    Ctrl-C asks Prefect's runner to stop as its own SIGTERM handler does (cancel the flow runs in flight, end
    the polling loops, let start() return) instead of raising KeyboardInterrupt wherever the event loop is:
    an interrupt raised inside the loop leaves asyncio.run() cancelling Prefect's tasks and joining its worker
    threads, with no bound on how long that takes."""
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL, temporary_settings

    check_host(host, expose)
    if not is_loopback(host):
        print(exposure_warning(host, port), file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # until the runner starts: stop the server
    proc = None
    runner = Runner(pause_on_shutdown=False, limit=limit)

    def stop_anyway() -> None:
        # The last resort: whatever Prefect does, Ctrl-C stops augdag within STOP_GRACE_S.
        time.sleep(STOP_GRACE_S)
        print(f"augdag: Prefect's runner did not stop within {STOP_GRACE_S:.0f} s of Ctrl-C; "
              "stopping the Prefect server and exiting", flush=True)
        if proc is not None:
            stop_server(proc)
        os._exit(0)

    def on_sigint(signum, frame):
        if getattr(on_sigint, "armed", False):
            return  # already stopping; stop_anyway bounds the wait
        on_sigint.armed = True
        threading.Thread(target=stop_anyway, name="augdag-stop", daemon=True).start()
        print("augdag: Ctrl-C: stopping the deployments and the Prefect server", flush=True)
        if runner.started and not runner.stopping and runner._loop is not None:
            runner.stopping = True
            runner.execute_in_background(runner.astop)
        else:  # still starting: nothing of Prefect's is running yet
            raise KeyboardInterrupt

    previous_int = signal.signal(signal.SIGINT, on_sigint)
    try:
        print(f"augdag: starting the Prefect server on {host}:{port} ...", flush=True)
        proc = start_server(host, port)
        url = api_url(host, port)
        os.environ["PREFECT_API_URL"] = url  # the served flow runs' subprocesses report here too
        print(f"augdag: Prefect UI on {url[:-len('/api')]}; launch runs from Deployments "
              f"({PIPELINE_DEPLOYMENT}, {COMPARE_DEPLOYMENT}); Ctrl-C stops the server and the deployments",
              flush=True)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            _serve(runner, deployments(root))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if proc is not None:
            print("augdag: stopping the Prefect server", flush=True)
            stop_server(proc)
