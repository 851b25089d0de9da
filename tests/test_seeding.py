import numpy as np
import pytest

from augdag import ops
from augdag.params import OpsParams
from augdag.seeding import derive_seed, generators


def test_generators_are_numpys_pcg64_streams():
    edge = [0, 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1, 2**64 - 1]
    seeds = edge + [derive_seed(3, "t", i) for i in range(2000)]
    fast = generators(seeds)
    assert len(fast) == len(seeds)
    for s, g in zip(seeds, fast):
        ref = np.random.Generator(np.random.PCG64(s))
        assert g.bit_generator.state == ref.bit_generator.state, s
    g, ref = generators([12345])[0], np.random.Generator(np.random.PCG64(12345))
    np.testing.assert_array_equal(g.random(10), ref.random(10))
    assert generators([]) == []


@pytest.mark.parametrize("cfg", [OpsParams(), OpsParams(**{n: {"p": 0.5} for n in OpsParams.model_fields}),
                                 OpsParams(**{n: {"p": 0.0} for n in OpsParams.model_fields})])
def test_make_params_batch_equals_make_params(cfg):
    seeds = [derive_seed(0, "traditional", f"raw{i}", 0) for i in range(300)]
    assert ops.make_params_batch(cfg, seeds, 28, 32) == [ops.make_params(cfg, s, 28, 32) for s in seeds]
