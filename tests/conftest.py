"""Fixtures only; shared helpers live in tests/helpers.py (import them from there)."""

from augdag import numerics

numerics.pin()  # before torch or numpy loads: the flows the tests run in-process compute as `augdag` does

import pytest  # noqa: E402

from augdag.env import set_offline  # noqa: E402
from helpers import SMALL  # noqa: E402

set_offline()


@pytest.fixture
def small_overrides():
    return {k: dict(v) for k, v in SMALL.items()}
