"""The whole DAG on each device this machine has: time per stage, with a params set (default
configs/gpu-224.yaml: the full Fashion-MNIST train split, fine-tuned at 224 px, mixed precision on a GPU).

For every device found (the CPU, each CUDA GPU, MPS) a scratch project gets the params set with
`device.default` set to that device, then every stage runs in order in this process (`augdag.tasks.run_stage`,
as `augdag stage` does; no Prefect or DVC overhead) and its seconds are taken. The table has one column per
device and a ratio column per GPU (CPU seconds / GPU seconds, the same run). At the default size the CPU column
takes many hours on a few cores: give `--devices cuda` for the GPU alone, or shrink the run with `--set`
(e.g. `--set ingest.n_per_class=20 --set finetune.steps=50`) to compare devices on a small DAG.

    .venv/bin/python bench/devices.py                                  # every device, configs/gpu-224.yaml
    .venv/bin/python bench/devices.py --devices cuda                   # the GPU only
    .venv/bin/python bench/devices.py --devices cpu --set ingest.n_per_class=2 --set finetune.steps=2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import REPO, machine_line, make_project  # noqa: E402


def found() -> list[str]:
    out = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    return out


def run_dag(root: Path) -> dict[str, float]:
    from augdag.params import load_params
    from augdag.tasks import STAGES, run_stage

    params = load_params(root / "params.yaml")
    seconds = {}
    for name in STAGES:
        t0 = time.perf_counter()
        run_stage(name, params, root)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - t0
        print(f"  {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    from augdag.params import set_file_overrides

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params-set", default=str(REPO / "configs" / "gpu-224.yaml"), metavar="FILE")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="more overrides after the params set (as augdag run --set)")
    ap.add_argument("--devices", nargs="+", default=None, metavar="DEV",
                    help="cpu, cuda, cuda:N, mps (default: every device found)")
    ap.add_argument("--json", metavar="FILE", help="also write the seconds as JSON")
    args = ap.parse_args(argv)
    devices = args.devices or found()
    overrides = set_file_overrides(args.params_set) + list(args.extra)
    print(machine_line())
    for i in range(torch.cuda.device_count()):
        print(f"GPU {i}: {torch.cuda.get_device_name(i)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"params set: {args.params_set}; overrides: {' '.join(args.extra) or 'none'}")
    results: dict[str, dict[str, float]] = {}
    summaries: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="augdag-devices-") as tmp:
        for dev in devices:
            print(f"{dev}:", file=sys.stderr, flush=True)
            root = make_project(Path(tmp) / dev.replace(":", "_"), overrides + [f"device.default={dev}"])
            results[dev] = run_dag(root)
            summaries[dev] = {s: json.loads((root / "data" / s / "summary.json").read_text())
                              for s in ("finetune", "evaluate")}
    stages = list(next(iter(results.values())))
    gpus = [d for d in devices if d != "cpu" and "cpu" in results]
    head = ["stage"] + [f"{d} s" for d in devices] + [f"cpu/{d}" for d in gpus]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in stages + ["total"]:
        secs = {d: (sum(r.values()) if s == "total" else r[s]) for d, r in results.items()}
        cells = [s] + [f"{secs[d]:.1f}" for d in devices] + [f"{secs['cpu'] / secs[d]:.1f}x" for d in gpus]
        print("| " + " | ".join(cells) + " |")
    for d in devices:
        ft, ev = summaries[d]["finetune"], summaries[d]["evaluate"]
        print(f"{d}: finetune on {ft.get('device')} ({ft.get('precision')}), test accuracy {ev.get('accuracy')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": results, "summaries": summaries}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
