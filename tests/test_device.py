"""The device setting: resolution and its errors, per-stage overrides, mixed precision off the GPU, replay's
device. Where the stages record it (summaries, lineage, report) is checked on a pipeline run in
tests/test_pipeline.py; what a GPU gives is measured by bench/devices.py."""

import contextlib

import pytest
import torch

from augdag import device
from augdag.errors import ParamsError
from augdag.params import parse_params

GPU = torch.cuda.is_available()


def test_cpu_and_auto_resolve_to_what_this_machine_has():
    assert device.resolve("cpu") == torch.device("cpu")
    want = "cuda" if GPU else "mps" if device._mps_available() else "cpu"
    assert device.resolve("auto").type == want


def test_a_gpu_this_machine_lacks_is_refused_naming_the_key():
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: none here, or an index out of range
    with pytest.raises(ParamsError, match=rf"device.finetune = '{missing}'"):
        device.resolve(missing, "device.finetune")


def test_a_bad_device_name_is_refused_by_the_schema_naming_the_key():
    with pytest.raises(ParamsError, match=r"device.default = 'tpu'"):
        parse_params({"device": {"default": "tpu"}})
    with pytest.raises(ParamsError, match=r"device.quality = 'cuda:x'"):
        parse_params({"device": {"quality": "cuda:x"}})
    with pytest.raises(ParamsError, match=r"device.report: unknown key"):
        parse_params({"device": {"report": "cpu"}})


def test_a_stage_key_overrides_the_default_and_only_for_its_stage():
    p = parse_params({"device": {"default": "cpu", "finetune": f"cuda:{torch.cuda.device_count()}"}})
    with pytest.raises(ParamsError, match="device.finetune"):
        device.for_stage(p, "finetune")
    assert device.for_stage(p, "evaluate") == torch.device("cpu")
    p = parse_params({"device": {"default": f"cuda:{torch.cuda.device_count()}", "quality": "cpu"}})
    assert device.for_stage(p, "quality") == torch.device("cpu")
    with pytest.raises(ParamsError, match="device.default"):
        device.for_stage(p, "generative")
    with pytest.raises(ValueError, match="not a model stage"):
        device.for_stage(p, "merge")


def test_the_default_is_the_cpu_so_a_plain_run_gives_the_committed_bytes():
    p = parse_params({})
    assert p.device.default == "cpu" and not p.device.mixed_precision
    assert all(device.for_stage(p, s) == torch.device("cpu") for s in device.STAGES)
    described = device.describe(torch.device("cpu"))
    assert described["device"] == "cpu" and set(described) == {"device", "numerics"}  # no GPU name on the CPU


def _train(prec: device.Precision) -> torch.Tensor:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(3):
        with prec.autocast():
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        prec.step(loss, opt)
    return net.weight.detach().clone()


def test_mixed_precision_changes_nothing_on_the_cpu():
    cpu = torch.device("cpu")
    on, off = device.Precision(cpu, True), device.Precision(cpu, False)
    assert on.name == off.name == "fp32" and on.scaler is None
    assert isinstance(on.autocast(), contextlib.nullcontext)
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(_train(on), net.weight.detach()) and torch.equal(_train(off), net.weight.detach())


@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU (bench/devices.py runs the DAG on one)")
def test_mixed_precision_on_a_gpu_autocasts():
    prec = device.Precision(torch.device("cuda"), True)
    assert prec.name in ("bf16", "fp16")
    with prec.autocast():
        out = torch.nn.Linear(4, 4).cuda()(torch.randn(2, 4, device="cuda"))
    assert out.dtype == prec.dtype


def test_replay_uses_the_recorded_device_or_the_cpu_with_a_warning():
    import io
    import logging

    from augdag.log import logger

    assert device.for_replay(None, "generative") == torch.device("cpu")
    assert device.for_replay("cpu", "generative") == torch.device("cpu")
    lacking = f"cuda:{torch.cuda.device_count()}"
    seen = logging.StreamHandler(io.StringIO())
    logger().addHandler(seen)
    try:
        assert device.for_replay(lacking, "generative") == torch.device("cpu")
    finally:
        logger().removeHandler(seen)
    assert f"generative made its samples on {lacking}, which this machine lacks" in seen.stream.getvalue()


def test_a_generator_moved_to_the_cpu_draws_the_same_bytes():
    import numpy as np

    from augdag import generative as gen
    from augdag.params import GeneratorConfig

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(12) % 3
    cfg = GeneratorConfig(steps=3, batch_size=4, width=4, latent_dim=4)
    state, meta = gen.train_generator(images, labels, 3, cfg, seed=1)
    state2, _ = gen.train_generator(images, labels, 3, cfg, seed=1, device="cpu")
    assert all(torch.equal(state[k], state2[k]) for k in state)
    model = gen.CVAE(1, 16, 3, 4, 4)
    model.load_state_dict(state)
    a = gen.Generator(model).sample_batch([0, 1, 2], [5, 6, 7])
    b = gen.Generator(model).to("cpu").sample_batch([0, 1, 2], [5, 6, 7])
    assert a.dtype == np.uint8 and np.array_equal(a, b)


@pytest.mark.slow
def test_bench_devices_runs_the_params_set_on_each_device_asked(tmp_path):
    """bench/devices.py end to end on the CPU (the GPU columns need a GPU): every stage timed, the params set
    applied with the device, the summaries saying where the model stages ran."""
    import json
    import subprocess
    import sys

    from helpers import REPO, SMALL

    small = ["ingest.n_per_class=2", "ingest.n_val_per_class=1", "ingest.n_test_per_class=3",
             "quality.reference_image_size=32", "finetune.image_size=32", "finetune.steps=3", "finetune.batch_size=7",
             "evaluate.robustness.n_samples=6", "evaluate.robustness.pgd_steps=1"]
    small += [f"generative.model.{k}={v}" for k, v in SMALL["generative"]["model"].items()]
    out = tmp_path / "devices.json"
    res = subprocess.run([sys.executable, "bench/devices.py", "--devices", "cpu", "--json", str(out)]
                         + [a for kv in small for a in ("--set", kv)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    from augdag.tasks import STAGES

    assert list(got["seconds"]["cpu"]) == list(STAGES) and all(s > 0 for s in got["seconds"]["cpu"].values())
    ft = got["summaries"]["cpu"]["finetune"]
    assert ft["device"] == "cpu" and ft["precision"] == "fp32" and ft["steps"] == 3  # mixed_precision: CPU stays fp32
    table = [line for line in res.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| stage | cpu s |" and [r.split(" | ")[0][2:] for r in table[1:]] == [*STAGES, "total"]
