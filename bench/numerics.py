"""What the kernel caps cost (augdag/numerics.py): each stage that computes with floats, timed with
`numerics.pin_kernels` true (AVX2 everywhere, the default) and false (the CPU's fastest kernels), in one run.

One scratch project with the default params (or `--set` overrides); the upstream stages run once, then each
float stage runs through `augdag stage NAME` (a fresh process, as dvc repro runs it, so the caps apply from
the start) `--repeats` times per setting, alternating the settings. The table gives the median seconds of each
and the ratio pinned / unpinned (above 1: the pin is slower), with the CPU named.

    .venv/bin/python bench/numerics.py
    .venv/bin/python bench/numerics.py --repeats 3 --stages generative finetune
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import machine_line, make_project, median, sh  # noqa: E402

FLOAT_STAGES = ["traditional", "mix", "generative", "quality", "finetune", "evaluate"]


def set_pin(root: Path, pin: bool) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params.setdefault("numerics", {})["pin_kernels"] = pin
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", nargs="+", default=FLOAT_STAGES, choices=FLOAT_STAGES)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    print(machine_line())
    times: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="augdag-numerics-") as tmp:
        root = make_project(Path(tmp) / "p", args.extra)
        for name in ("ingest", "strategy", "traditional", "mix", "generative", "quality", "merge", "finetune"):
            sh(["augdag", "stage", name], root)  # every input of the timed stages, once
        for r in range(args.repeats):
            for pin in ((True, False) if r % 2 == 0 else (False, True)):
                set_pin(root, pin)
                for name in args.stages:
                    t0 = time.perf_counter()
                    sh(["augdag", "stage", name], root)
                    times.setdefault((name, pin), []).append(time.perf_counter() - t0)
                    print(f"  {name} pinned={pin}: {times[name, pin][-1]:.1f} s", file=sys.stderr, flush=True)
    print(f"repeats: {args.repeats}; seconds are the median of `augdag stage NAME` (process start included)")
    print("| stage | pinned (AVX2) s | unpinned s | pinned / unpinned |")
    print("|---|---|---|---|")
    tot = {True: 0.0, False: 0.0}
    for name in args.stages:
        a, b = median(times[name, True]), median(times[name, False])
        tot[True] += a
        tot[False] += b
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    print(f"| total | {tot[True]:.1f} | {tot[False]:.1f} | {tot[True] / tot[False]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
