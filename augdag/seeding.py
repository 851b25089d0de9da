"""Randomness comes only from seeds derived from (global seed, stage, sample id, ...).

Output therefore does not depend on worker count, shard size or execution order.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, stage: str, *keys: object) -> int:
    text = "\x1f".join([str(seed), stage, *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def rng(seed: int, stage: str, *keys: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(seed, stage, *keys)))
