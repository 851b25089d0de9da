"""Offline defaults: nothing is downloaded at run time, and no telemetry is sent."""

import contextlib
import os

OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DVC_NO_ANALYTICS": "1",
}


def set_offline() -> None:
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to n inside the block (None or 0: left as they are), restored after."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
