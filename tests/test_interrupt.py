"""One Ctrl-C stops `augdag run`, `augdag stage` and `augdag compare` within seconds and leaves the project
consistent: no half-written output, no held lock, every output on disk what dvc.lock records.

Ctrl-C is sent as a terminal sends it: one SIGINT to the command's whole process group. Each command is
interrupted during a fine-tune of 100,000 steps (minutes of work), so a command that waited for the
running stage to end, as `augdag run` did, fails the STOP_S bound by far (augdag.cancel)."""

import hashlib
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from augdag import cancel
from augdag.params import dotted_to_nested, write_overrides
from helpers import BIN, assert_consistent, make_project, run

PARAMS = {
    "seed": 0,
    "ingest": {"image_size": 16, "n_per_class": 3, "n_val_per_class": 1, "n_test_per_class": 1},
    "strategy": {"traditional": {"enabled": True, "multiplier": 1}, "mix": {"enabled": True, "multiplier": 1},
                 "generative": {"enabled": False, "multiplier": 1}},
    "quality": {"reference_image_size": 16},
    "finetune": {"steps": 2, "batch_size": 4, "image_size": 16, "eval_every": 1, "pretrained": False},
    "evaluate": {"robustness": {"enabled": False}},
    "report": {"grid_samples": 2},
}
LONG = ["finetune.steps=100000", "finetune.eval_every=20"]  # ~10 min of fine-tune here
MARK = "finetune: step 20/100000"  # the fine-tune is under way
STOP_S = 60  # from the SIGINT to the command's exit; the interrupted work alone would take minutes


def ctrl_c(cmd: list[str], cwd: Path, marker: str = MARK) -> tuple[int, float, str]:
    """Start `cmd` in its own process group, SIGINT the group once `marker` is printed; (rc, seconds from the
    SIGINT to the exit, output)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines, seen = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not seen.wait(1):
            assert proc.poll() is None, f"{marker!r} never printed:\n{''.join(lines)[-3000:]}"
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            rc = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {STOP_S} s after Ctrl-C:\n{''.join(lines)[-3000:]}") from None
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    shown = " ".join([Path(cmd[0]).name, *cmd[1:]])
    print(f"{shown}: exit {rc} {seconds:.1f} s after Ctrl-C")
    return rc, seconds, "".join(lines)


def md5s(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = make_project(tmp_path_factory.mktemp("interrupt") / "proj", PARAMS)
    run([str(BIN / "augdag"), "run"], proj)
    return proj


@pytest.mark.slow
def test_one_ctrl_c_stops_augdag_run(project):
    model = md5s(project / "data" / "finetune")
    rc, seconds, out = ctrl_c([str(BIN / "augdag"), "run", "--force", *(f"--set={o}" for o in LONG)], project)
    assert rc == 130, out[-3000:]
    assert seconds < STOP_S, out[-3000:]
    assert "stopped by Ctrl-C" in out and "Traceback" not in out, out[-3000:]
    assert md5s(project / "data" / "finetune") == model  # the interrupted fine-tune published nothing
    assert_consistent(project)


@pytest.mark.slow
def test_one_ctrl_c_stops_augdag_stage_in_the_main_thread(project):
    write_overrides(project / "params.yaml", dotted_to_nested(LONG))
    model = md5s(project / "data" / "finetune")
    rc, seconds, out = ctrl_c([str(BIN / "augdag"), "stage", "finetune"], project)
    assert rc == 130 and seconds < STOP_S, out[-3000:]
    assert md5s(project / "data" / "finetune") == model
    assert_consistent(project)


def test_queued_chunks_do_not_run_after_a_stop_request():
    """A stage's thread pool (`augdag stage traditional --workers 2`) holds every chunk queued; after the stop
    request none more starts, and the stage's loop ends with Cancelled."""
    started, gate = [], threading.Event()

    def chunk(i):
        started.append(i)
        if i:
            assert gate.wait(30)
        return i

    cancel.reset()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = cancel.cancellable(pool.map)(chunk, range(1000))
            with pytest.raises(cancel.Cancelled):
                while True:
                    got = next(results)
                    if got == 0:
                        cancel.request()
                        gate.set()
        assert len(started) <= 3  # the two running when the stop came, and at most one just dequeued
    finally:
        cancel.reset()


def test_a_stop_request_ends_a_stage_loop_at_its_next_progress_step():
    from augdag.log import Progress

    cancel.reset()
    progress = Progress("test", 10)
    progress.update()
    cancel.request()
    try:
        with pytest.raises(cancel.Cancelled):
            progress.update()
        assert issubclass(cancel.Cancelled, KeyboardInterrupt)  # `except Exception` in stage code lets it by
    finally:
        cancel.reset()


@pytest.mark.slow
def test_one_ctrl_c_stops_augdag_compare(project):
    write_overrides(project / "params.yaml", dotted_to_nested(LONG))
    rc, seconds, out = ctrl_c([str(BIN / "augdag"), "compare", "--strategies", "none", "--seeds", "0",
                               "--out", "data/cmp"], project)
    assert rc == 130 and seconds < STOP_S, out[-3000:]
    assert not list((project / "data" / "cmp").rglob("*.json")), "an interrupted run left a record"
    assert not list((project / "data" / "cmp" / "work").glob("*")), "an interrupted run left its scratch folder"
    assert_consistent(project)
