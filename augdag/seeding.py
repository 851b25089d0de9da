"""Randomness comes only from seeds derived from (global seed, stage, sample id, ...).

Output therefore does not depend on worker count, shard size or execution order.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, stage: str, *keys: object) -> int:
    text = "\x1f".join([str(seed), stage, *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def derive_seeds(seeds, stage: str, *keys: object) -> list[int]:
    """`[derive_seed(s, stage, *keys) for s in seeds]`: the shared tail of the hashed text encoded once."""
    tail = "".join("\x1f" + str(k) for k in (stage, *keys)).encode()
    sha256, from_bytes = hashlib.sha256, int.from_bytes
    return [from_bytes(sha256(str(s).encode() + tail).digest()[:8], "little") >> 1 for s in seeds]


def rng(seed: int, stage: str, *keys: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(seed, stage, *keys)))


# numpy's SeedSequence constants (numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715


class _State(np.random.bit_generator.ISeedSequence):
    """A seed sequence whose state is already generated: PCG64 takes its four words as they are."""

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words, dtype=np.uint32):
        return self.words


def generators(seeds) -> list[np.random.Generator]:
    """`[np.random.Generator(np.random.PCG64(s)) for s in seeds]`: the same streams, built faster.

    numpy builds a SeedSequence per seed in Python (a large share of a traditional sample's cost at 28x28); this runs
    SeedSequence's hashing once over all seeds as uint32 arrays (seeds in [0, 2**64), one or two 32-bit words of
    entropy, pool size 4), then hands each PCG64 its four state words. tests/test_seeding.py checks the states.
    """
    s = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    if len(s) == 0:
        return []
    u32 = np.uint32
    with np.errstate(over="ignore"):
        hc = np.full(len(s), _INIT_A, u32)

        def hashmix(v):
            nonlocal hc
            v = v ^ hc
            hc = hc * u32(_MULT_A)
            v = v * hc
            return v ^ (v >> u32(16))

        def mix(x, y):
            r = u32(_MIX_L) * x - u32(_MIX_R) * y
            return r ^ (r >> u32(16))

        zero = np.zeros(len(s), u32)
        pool = [hashmix((s & np.uint64(0xFFFFFFFF)).astype(u32)), hashmix((s >> np.uint64(32)).astype(u32)),
                hashmix(zero), hashmix(zero)]
        for i_src in range(4):
            for i_dst in range(4):
                if i_src != i_dst:
                    pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src]))
        words = np.empty((len(s), 8), u32)
        hb = np.full(len(s), _INIT_B, u32)
        for i in range(8):
            v = pool[i % 4] ^ hb
            hb = hb * u32(_MULT_B)
            v = v * hb
            words[:, i] = v ^ (v >> u32(16))
    state = words.view("<u8")
    return [np.random.Generator(np.random.PCG64(_State(w))) for w in state]
