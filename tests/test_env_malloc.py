"""augdag.env.tune_malloc: the augdag command keeps freed memory for reuse (glibc), unless the user set malloc up.

Each case runs in a fresh process: mallopt must come before any thread exists, and it changes the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"), reason="glibc only")

# Buffers of 100 MB and 8 MB made and freed in a thread, as torch does for op outputs, 20 times: the page
# faults the last 10 took (each fresh page is a fault and a zeroing). The first rounds are left out: how many
# faults growing the heap takes depends on the process's memory layout (97,000 or 197,000 here, with nothing
# changed but the length of an environment variable); once grown, a kept heap faults no more.
CHURN = r"""
import json, os, resource, sys, threading
if sys.argv[1] == "cli":
    import augdag.cli  # what the `augdag` command imports first
import augdag.env as env
import torch

def churn():
    for i in range(20):
        if i == 10:
            r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = torch.ones(25_000_000)
        b = torch.ones(2_000_000)
        del a, b
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

out = {"tuned": env._malloc_tuned}
t = threading.Thread(target=churn)
t.start()
t.join()
print(json.dumps(out))
"""


def _churn(mode: str, **env) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "AUGDAG_MALLOC", "GLIBC_TUNABLES"))}
    e.update(env)
    res = subprocess.run([sys.executable, "-c", CHURN, mode], env=e, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@glibc
@pytest.mark.slow
def test_the_augdag_command_reuses_freed_buffers_instead_of_faulting_them_in_again():
    plain = _churn("plain")
    cli = _churn("cli")
    assert plain["tuned"] is None and cli["tuned"] is True
    # 10 x 108 MB through fresh mmaps is ~270,000 faults (244,000 measured); the kept heap none
    assert plain["faults"] > 100_000, plain
    assert cli["faults"] < 2_000, (cli, plain)


@glibc
@pytest.mark.parametrize("env", [{"AUGDAG_MALLOC": "default"}, {"MALLOC_ARENA_MAX": "4"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_left_alone_where_the_user_set_malloc_up(env):
    out = _churn("cli", **env)
    assert out["tuned"] is False
    assert out["faults"] > 100_000, out


@glibc
def test_augdag_server_passes_the_settings_to_the_flow_runs_it_starts():
    code = ("import augdag.cli, augdag.env as env, os, subprocess, sys\n"
            "env.export_malloc_settings()\n"
            "sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1], 'plain']).returncode)\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "AUGDAG_MALLOC", "GLIBC_TUNABLES"))}
    res = subprocess.run([sys.executable, "-c", code, CHURN], env=e, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    child = json.loads(res.stdout.strip().splitlines()[-1])
    assert child["tuned"] is None, "the child did not call tune_malloc itself"
    assert child["faults"] < 2_000, child  # glibc applied the exported settings at the child's start


@glibc
def test_a_stage_end_hands_the_free_heap_back():
    code = r"""
import json, augdag.cli, augdag.env as env, torch
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
keep = [torch.ones(1_000_000) for _ in range(5)]       # alive throughout
tmp = [torch.ones(50_000_000) for _ in range(4)]       # 800 MB, freed below
del tmp
before = rss()
env.release_free_memory()
print(json.dumps({"tuned": env._malloc_tuned, "before": before, "after": rss()}))
"""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "AUGDAG_MALLOC", "GLIBC_TUNABLES"))}
    res = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tuned"] is True
    assert out["before"] - out["after"] > 600e6, out  # the 800 MB freed were still resident, then given back
