"""Runner params (the Dask runs themselves are in test_pipeline.py, beside the local flow run they match)."""

import pytest

from augdag.errors import ParamsError
from augdag.params import parse_params


def test_runner_params_are_checked():
    with pytest.raises(ParamsError, match=r"runner.kind = 'ray'"):
        parse_params({"runner": {"kind": "ray"}})
    with pytest.raises(ParamsError, match=r"runner.n_workers = 0"):
        parse_params({"runner": {"n_workers": 0}})
    assert parse_params({"runner": {"kind": "dask", "address": "tcp://h:8786"}}).runner.address == "tcp://h:8786"
    assert parse_params({}).runner.kind == "local"
