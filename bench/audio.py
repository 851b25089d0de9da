"""Audio (issue 32): the traditional branch's waveform ops, SpecAugment, both, and Mixup on spectrograms, against
no augmentation, over seeds, through the DAG.

Each run is `augdag compare`'s run of one strategy and seed on the repository's params.yaml with
configs/audio.yaml (`modality: audio`: the synthesised spoken digits, 8 train / 10 validation / 50 test clips per
class; log-Mel spectrograms; EfficientNet-Lite0 fine-tuned 190 steps as on images):

- none: the raw train clips;
- audio_waveform: one variant per clip by the waveform ops (shift, gain, speed, pitch, noise);
- specaugment: one variant per clip by SpecAugment alone (frequency and time masks, time warp half the time);
- traditional: one variant per clip by both (audio.traditional.ops' defaults);
- mixup_offline: one Mixup of two train spectrograms per clip.

Prints the compare table (test accuracy mean ± 95% CI, paired differences against none) and the seconds per run.
Records are cached in OUT/runs/ (--resume reuses them).

    .venv/bin/python bench/audio.py --seeds 0 1 2 3 4
    .venv/bin/python bench/audio.py --seeds 0 --strategies none specaugment --set '{"finetune": {"steps": 2}}'
"""

from __future__ import annotations

from augdag import numerics

numerics.pin()  # before torch and numpy load, as the augdag command does: the runs' bytes are a pinned run's

from augdag.env import set_offline  # noqa: E402

set_offline()

import yaml  # noqa: E402
from _util import REPO, run_strategies, strategy_args  # noqa: E402

from augdag.params import deep_merge  # noqa: E402

STRATEGIES = ["none", "audio_waveform", "specaugment", "traditional", "mixup_offline"]


def main() -> None:
    args = strategy_args(__doc__, STRATEGIES, "bench/out/audio").parse_args()
    base = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()),
                      yaml.safe_load((REPO / "configs" / "audio.yaml").read_text()))
    run_strategies(base, args, "audio", lambda r: f"test {r['test_accuracy']}; gate pass {r.get('gate_pass_rate')}")


if __name__ == "__main__":
    main()
