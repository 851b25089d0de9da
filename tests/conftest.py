"""Fixtures only; shared helpers live in tests/helpers.py (import them from there)."""

import pytest

from augdag.env import set_offline
from helpers import SMALL

set_offline()


@pytest.fixture
def small_overrides():
    return {k: dict(v) for k, v in SMALL.items()}
