"""Target-domain accuracy of the cross-domain branch on a real domain pair, paired over seeds.

The pair (examples/domain_pair.py): 20 labelled MNIST digits per class are the source; scikit-learn's 8x8 UCI
digits are the target domain (half of them unlabelled for the CycleGAN, the other half, 901 labelled images,
the target test set). configs/crossdomain.yaml's params on params.yaml's defaults, then per strategy and seed
the stages run in a scratch folder through augdag.compare (the same code as `augdag compare`). Prints, per
strategy, the target-domain and source-domain (MNIST test split) accuracy with 95% CIs, the paired difference
against `none`, the gate's pass rate on the translations, the CycleGAN's training time and cycle scores.

    .venv/bin/python bench/crossdomain.py --seeds 0 1 2 3 4          # ~60 min on 2 cores
    .venv/bin/python bench/crossdomain.py --seeds 0 --resume         # reuse cached runs in OUT/runs/
"""

from __future__ import annotations

import sys
from pathlib import Path

from augdag.env import set_offline

set_offline()

import yaml  # noqa: E402
from _util import REPO, run_strategies, strategy_args  # noqa: E402

from augdag.params import deep_merge  # noqa: E402

STRATEGIES = ["none", "traditional", "crossdomain", "crossdomain_traditional", "crossdomain_nogate"]


def base_params(pair: Path) -> dict:
    """params.yaml's defaults + configs/crossdomain.yaml, its folders pointed at `pair`."""
    over = yaml.safe_load((REPO / "configs" / "crossdomain.yaml").read_text())
    over["ingest"]["source"] = str(pair / "mnist")
    over["crossdomain"]["target"] = str(pair / "digits-unlabelled")
    over["evaluate"]["target_test"] = str(pair / "digits-test")
    return deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), over)


def line(rec: dict) -> str:
    xd = rec.get("crossdomain") or {}
    secs = xd.get("seconds", xd.get("train_seconds"))
    return (f"target {rec.get('target_accuracy')} source {rec['test_accuracy']}"
            + (f"; crossdomain stage {secs} s, cycle PSNR {xd['cycle_psnr']} SSIM {xd['cycle_ssim']}, "
               f"gate pass {rec['gate_pass_rate'].get('crossdomain')}" if xd else ""))


def main() -> None:
    ap = strategy_args(__doc__, STRATEGIES, "bench/out/crossdomain")
    ap.add_argument("--pair", default="bench/out/domains", help="where the domain pair is written (once)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "examples"))
    from domain_pair import write_pair

    pair = Path(args.pair).resolve()
    write_pair(pair)  # unchanged when it is already there
    records = run_strategies(base_params(pair), args, "crossdomain", line)
    xd = [r for r in records if r.get("crossdomain")]
    if xd:
        def mean(key):  # records made before "seconds" existed have the training's own "train_seconds"
            return sum(r["crossdomain"].get(key, r["crossdomain"].get("train_seconds")) for r in xd) / len(xd)

        gated = [r for r in xd if not r["strategy"].endswith("_nogate")]  # with its checks off every row passes
        rates = [r["gate_pass_rate"]["crossdomain"] for r in gated if r["gate_pass_rate"].get("crossdomain")]
        print(f"CycleGAN: {len(xd)} trainings, the stage {mean('seconds'):.0f} s on average; cycle PSNR "
              f"{mean('cycle_psnr'):.2f} dB, SSIM {mean('cycle_ssim'):.3f}; the gate's pass rate on the "
              f"translations {sum(rates) / max(len(rates), 1):.3f} over the {len(gated)} gated runs (its checks "
              "filter, as in augdag compare's strategies without _nogate)")


if __name__ == "__main__":
    main()
