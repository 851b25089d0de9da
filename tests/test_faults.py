"""Faults, each really caused (issue 9): every stage's process SIGKILLed in the middle of writing its
output, then rerun; a disk that fills up during a write (a real size-limited tmpfs; needs root); the
Prefect server stopped and restarted during a run; two commands on one project at once.

The stage processes are real processes running the `augdag stage NAME` entry point (augdag.cli.main),
forked from a forkserver that has imported torch, Great Expectations and the stages once, so each
costs a fork instead of an interpreter start. Where in a stage the kill lands is chosen with
augdag.faults (the process sends itself a real SIGKILL at a named point); one test kills from
outside at an arbitrary moment instead.
"""

import hashlib
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from augdag import runlock
from augdag.errors import StorageError
from augdag.tasks import STAGES
from helpers import BIN, REPO, image_folder, make_project, run

# A tiny project: 3 classes x 6 images, 16 px, shards of 2 images (so a stage writes many files), the
# generative branch off (its cVAE training and Frechet metrics cost a minute per run on this machine; the
# stage still runs, writes and publishes its empty output), a 2-step fine-tune from random init.
PARAMS = {
    "seed": 0,
    "ingest": {"image_size": 16, "n_per_class": 3, "n_val_per_class": 1, "n_test_per_class": 1, "shard_size": 2},
    "strategy": {"traditional": {"enabled": True, "multiplier": 2}, "mix": {"enabled": True, "multiplier": 1},
                 "generative": {"enabled": False, "multiplier": 1}},
    "quality": {"reference_image_size": 16},
    "finetune": {"steps": 2, "batch_size": 4, "image_size": 16, "eval_every": 1, "num_threads": 1,
                 "pretrained": False},
    "evaluate": {"robustness": {"enabled": False}},
    "report": {"grid_samples": 2},
}
PRELOAD = ["torch", "torchvision", "timm", "great_expectations", "pyarrow.parquet", "prefect.context",
           "prefect.logging", "prefect.artifacts", "pytest", "augdag.cli", "augdag.gx",
           "augdag.features", *(f"augdag.tasks.{s}" for s in STAGES)]
KILLED = -signal.SIGKILL

_ctx = None


def _forkserver():
    """The forkserver context, started once with one torch thread (the same in every stage process, so
    reruns write the same bytes) and the heavy modules imported."""
    global _ctx
    if _ctx is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "AUGDAG_FAULT")}
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ.pop("AUGDAG_FAULT", None)
        try:
            p = ctx.Process(target=_noop)  # starts the forkserver with this environment
            p.start()
            p.join()
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        _ctx = ctx
    return _ctx


def _noop():
    pass


def _child(argv: list[str], fault: str | None, log: str) -> None:
    """A stage process: the `augdag` command line, with a fault spec, stdout and stderr into `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ.pop("AUGDAG_FAULT", None)
    if fault:
        os.environ["AUGDAG_FAULT"] = fault
    from augdag.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Proc:
    def __init__(self, proc, log: Path):
        self.proc, self.log = proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 300) -> int:
        self.proc.join(timeout)
        assert self.proc.exitcode is not None, f"stage process still running after {timeout} s:\n{self.output()}"
        return self.proc.exitcode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(root: Path, *argv: str, fault: str | None = None) -> Proc:
    log = root / f".log-{time.monotonic_ns()}"
    p = _forkserver().Process(target=_child, args=(["-C", str(root), *argv], fault, str(log)))
    p.start()
    return Proc(p, log)


def stage(root: Path, name: str, fault: str | None = None) -> Proc:
    p = start(root, "stage", name, fault=fault)
    p.wait()
    return p


def new_project(root: Path, dataset: Path) -> Path:
    """A folder with a params.yaml (the repo's, with PARAMS on top): all `augdag stage` needs."""
    from augdag.params import deep_merge

    root.mkdir(parents=True)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), PARAMS)
    params = deep_merge(params, {"ingest": {"source": str(dataset)}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _content(p: Path) -> bytes:
    """A file's bytes; the report without its stage timings (class="timing"), which differ run to run."""
    if p.name != "report.html":
        return p.read_bytes()
    return re.sub(r'(class=["\']timing["\'][^>]*>)[^<]*', r"\1", p.read_text()).encode()


def tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` that a reader sees: validation results and hidden names (the
    temporary folders of writes in progress, see `leftovers`; DVC's .gitignore files) excluded."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and "validation" not in rel.parts and not any(x.startswith(".") for x in rel.parts):
            out[rel.as_posix()] = hashlib.sha256(_content(p)).hexdigest()
    return out


def leftovers(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*"))


class Watcher:
    """Lists `folder` every millisecond or two while a stage runs; records every distinct set of names seen."""

    def __init__(self, folder: Path):
        self.folder, self.seen, self._stop = folder, set(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.seen.add(frozenset(os.listdir(self.folder)))
            except FileNotFoundError:
                self.seen.add(None)
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """An uninterrupted run of every stage, in order: the bytes every interrupted run must end with."""
    tmp = tmp_path_factory.mktemp("faults")
    dataset = image_folder(tmp / "dataset")
    proj = new_project(tmp / "base", dataset)
    for name in STAGES:
        p = stage(proj, name)
        assert p.proc.exitcode == 0, f"{name}:\n{p.output()}"
    want = tree(proj / "data")
    assert "finetune/model.safetensors" in want and "report/report.html" in want
    return proj, want


def copy_project(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(".log-*", ".augdag.lock"), symlinks=True)
    return dest


# ------------------------------------------------------------------------------------ (a) SIGKILL

@pytest.mark.parametrize("name", STAGES)
@pytest.mark.slow
def test_sigkill_mid_write_keeps_the_last_output_and_a_rerun_completes(name, baseline, tmp_path):
    base, want = baseline
    proj = copy_project(base, tmp_path / "proj")
    out = proj / "data" / name
    (out / "PREVIOUS").write_text("marks the last good output")
    before, names = tree(out), frozenset(os.listdir(out))

    p = stage(proj, name, fault=f"write:{name}#1=kill")  # SIGKILL once its first file is written
    assert p.proc.exitcode == KILLED, p.output()
    (partial,) = leftovers(out)
    assert partial.name.startswith(f".{name}.tmp-") and any(f.is_file() for f in partial.rglob("*")), \
        "killed after it had started writing"
    assert tree(out) == before, "the last good output is untouched"

    # The rerun takes the lock the killed process held (the kernel released it), removes the partial
    # folder and swaps the new output in: a reader sees the previous names or the new ones, nothing else.
    with Watcher(out) as w:
        p = stage(proj, name)
    assert p.proc.exitcode == 0, p.output()
    assert w.seen <= {names, names - {"PREVIOUS"}}, w.seen
    assert tree(proj / "data") == want, "the rerun wrote exactly an uninterrupted run's bytes"
    assert leftovers(out) == []


def _marked_copy(baseline, tmp_path):
    """A copy of the finished baseline project whose traditional output carries a PREVIOUS marker file:
    (project, that output folder, its tree now, the uninterrupted run's tree)."""
    base, want = baseline
    proj = copy_project(base, tmp_path / "proj")
    out = proj / "data" / "traditional"
    (out / "PREVIOUS").write_text("marks the last good output")
    return proj, out, tree(out), want


def test_sigkill_between_complete_and_published(baseline, tmp_path):
    proj, out, before, want = _marked_copy(baseline, tmp_path)
    p = stage(proj, "traditional", fault="publish:traditional=kill")
    assert p.proc.exitcode == KILLED
    (complete,) = leftovers(out)
    assert tree(complete) == {k[len("traditional/"):]: v for k, v in want.items() if k.startswith("traditional/")}
    assert tree(out) == before, "not published: the last good output is what readers see"
    assert stage(proj, "traditional").proc.exitcode == 0
    assert tree(proj / "data") == want and leftovers(out) == []


def test_sigkill_inside_the_fallback_two_step_publish_is_repaired(baseline, tmp_path):
    """Without an atomic exchange (other OSes, some filesystems) the last output is moved aside first; a
    kill between the two renames leaves it aside, and the next write puts it back before anything else."""
    proj, out, before, want = _marked_copy(baseline, tmp_path)
    p = stage(proj, "traditional", fault="no-exchange,swap:traditional=kill")
    assert p.proc.exitcode == KILLED
    # The last output moved aside and the complete new one not yet renamed into place:
    assert not out.exists()
    assert [q.name.split("-")[0] for q in leftovers(out)] == [".traditional.old", ".traditional.tmp"]
    # A reader now gets a clear "not found", never a partial folder:
    from augdag.errors import DataError
    from augdag.storage import StageData

    with pytest.raises(DataError, match="manifest not found"):
        StageData(out)
    # The next write puts the last output back first: killed again before publishing, it is what stays.
    assert stage(proj, "traditional", fault="publish:traditional=kill").proc.exitcode == KILLED
    assert tree(out) == before
    assert stage(proj, "traditional").proc.exitcode == 0
    assert tree(proj / "data") == want and leftovers(out) == []


def test_sigkill_from_outside_at_an_arbitrary_moment_of_the_fine_tune(baseline, tmp_path):
    base, want = baseline
    proj = copy_project(base, tmp_path / "proj")
    out = proj / "data" / "finetune"
    (out / "PREVIOUS").write_text("marks the last good output")
    before = tree(out)
    p = start(proj, "stage", "finetune")
    deadline = time.monotonic() + 120
    while "finetune: efficientnet_lite0 on" not in p.output() and p.proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    try:  # training has begun: killed in it, or while writing, or just after it finished
        os.kill(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    code = p.wait()
    assert code in (KILLED, 0), p.output()
    now = tree(out)
    assert now == before or now == {k[len("finetune/"):]: v for k, v in want.items() if k.startswith("finetune/")}
    assert stage(proj, "finetune").proc.exitcode == 0
    assert tree(proj / "data") == want and leftovers(out) == []


# ---------------------------------------------------------------------------------- (b) full disk

@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs: writes past it fail with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (the full-disk cases run in CI, which runs as root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:  # as root the mount must work: a skip here would hide the full-disk cases from CI
        pytest.fail(f"cannot mount a tmpfs as root: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_stage_write_names_the_output_and_keeps_the_last_one(baseline, small_disk, tmp_path):
    base, _ = baseline
    dataset = Path(yaml.safe_load((base / "params.yaml").read_text())["ingest"]["source"])
    proj = new_project(small_disk / "proj", dataset)
    assert stage(proj, "ingest").proc.exitcode == 0
    out = proj / "data" / "ingest"
    before = tree(out)
    free = shutil.disk_usage(small_disk).free
    # 15 images of 256 x 256 x 3 (2.9 MB) do not fit in what is left of 1 MiB.
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["ingest"].update(image_size=256, channels=3)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = stage(proj, "ingest")
    err = p.output()
    assert p.proc.exitcode == 2, err
    assert f"augdag: error: {out}: cannot write this output" in err and "the previous output" in err, err
    assert "space" in err or "disk is full" in err, err
    assert "Traceback" not in err, err
    assert tree(out) == before, "the last good output is intact"
    assert leftovers(out) == [], "the partial folder is removed, its space given back"
    assert shutil.disk_usage(small_disk).free >= free - 64 * 1024


def test_disk_full_while_writing_params_or_a_file_leaves_the_old_file(small_disk):
    from augdag.params import write_overrides
    from augdag.storage import write_text

    params = small_disk / "params.yaml"
    params.write_text("seed: 0\n")
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last block
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(StorageError, match=re.escape(str(small_disk / "notes.txt"))):
        write_text(small_disk / "notes.txt", "x" * 100_000)
    with pytest.raises(StorageError, match=re.escape(str(params))):
        write_overrides(params, {"finetune": {"steps": 3, "lr": 0.5}, "ingest": {"source": "x" * 100_000}})
    assert params.read_text() == "seed: 0\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "params.yaml"], "no temporary file left"


# ------------------------------------------------------------------------------ (d) two at once

def _stopped(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in "Tt":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not stop")


def test_a_second_command_on_the_same_project_is_refused_and_changes_nothing(baseline, tmp_path):
    base, want = baseline
    proj = copy_project(base, tmp_path / "proj")
    params_before = (proj / "params.yaml").read_bytes()
    out = proj / "data" / "traditional"
    (out / "PREVIOUS").write_text("marks the last good output")
    data_before = tree(proj / "data")
    first = start(proj, "stage", "traditional", fault="publish:traditional=stop")  # paused mid-stage
    try:
        _stopped(first.pid)
        for name in ("traditional", "ingest"):
            second = stage(proj, name)
            assert second.proc.exitcode == 2, second.output()
            msg = second.output()
            assert "another augdag command is running on this project" in msg and f"pid {first.pid}" in msg, msg
            assert "augdag stage traditional" in msg and "Traceback" not in msg
        # `augdag run --set` is refused before it starts Prefect or rewrites params.yaml.
        third = start(proj, "run", "--set", "finetune.steps=3")
        assert third.wait() == 2 and "another augdag command is running" in third.output(), third.output()
        assert "Traceback" not in third.output() and "Prefect" not in third.output()
        assert (proj / "params.yaml").read_bytes() == params_before
        assert tree(proj / "data") == data_before, "the refused commands wrote nothing"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait() == 0, first.output()
    assert tree(proj / "data") == want, "the first command finished undisturbed"
    assert stage(proj, "ingest").proc.exitcode == 0, "the lock is free again"


def test_run_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    with runlock.hold(tmp_path, "first"):
        with runlock.hold(tmp_path, "nested"):  # the CLI takes it, then the flow it runs
            pass
        res = run([sys.executable, "-c", "from augdag import runlock; import sys\n"
                   "try:\n with runlock.hold(sys.argv[1]): pass\nexcept Exception as e: print(e); sys.exit(3)",
                   str(tmp_path)], tmp_path, check=False)
        assert res.returncode == 3 and f"pid {os.getpid()}, `first`" in res.stdout, res.stdout + res.stderr
    res = run([sys.executable, "-c", "from augdag import runlock; import sys\n"
               "with runlock.hold(sys.argv[1]): print('held')", str(tmp_path)], tmp_path)
    assert res.stdout.strip() == "held"


# ------------------------------------------------------------------------ (c) Prefect server outage

def _listening(port: int) -> list[str]:
    from test_serve import listening

    return listening(port)


@pytest.mark.slow
def test_flow_killed_then_prefect_server_stopped_and_restarted_during_the_rerun(baseline, tmp_path, monkeypatch):
    """The Prefect route, against a real Prefect server started as `augdag server` starts it.

    1. `augdag run` is SIGKILLed in the middle of writing the quality stage's output.
    2. `augdag run` again: the stages DVC recorded before the kill are skipped. It pauses itself once
       merge's output is complete; the server is stopped; the run goes on for 5 s with no server; the
       server is started again on the same port and database. Prefect's client retries its calls
       (exponential back-off, about a minute in all), so this run finishes.
    Then: an uninterrupted run's bytes, `dvc status` clean, nothing left half-written."""
    from augdag.flows.serve import start_server, stop_server

    base, want = baseline
    proj = make_project(tmp_path / "proj")
    shutil.copy(base / "params.yaml", proj / "params.yaml")
    from augdag.prefect_server import free_port

    port = free_port()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))  # the server's database, kept across restarts
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PATH=f"{BIN}:{env['PATH']}", OMP_NUM_THREADS="1", PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    server_log = open(tmp_path / "server.log", "a")
    server = start_server("127.0.0.1", port, timeout=300, stdout=server_log, stderr=subprocess.STDOUT)

    def augdag_run(fault: str | None, log: Path) -> subprocess.Popen:
        with open(log, "w") as out:
            return subprocess.Popen([str(BIN / "augdag"), "-C", str(proj), "run"], cwd=proj, stdout=out,
                                    stderr=subprocess.STDOUT, env={**env, "AUGDAG_FAULT": fault or ""})

    try:
        assert set(_listening(port)) == {"127.0.0.1"}, "the server augdag starts listens on loopback only"
        killed = augdag_run("write:quality#1=kill", tmp_path / "run1.log")
        assert killed.wait(600) == KILLED, (tmp_path / "run1.log").read_text()[-4000:]
        assert not (proj / "data" / "quality").exists() and leftovers(proj / "data" / "quality")

        flow = augdag_run("publish:merge=stop", tmp_path / "run2.log")
        _stopped(flow.pid, timeout=600)
        stop_server(server)
        assert not _listening(port), "the server is down"
        os.kill(flow.pid, signal.SIGCONT)
        time.sleep(5)
        server = start_server("127.0.0.1", port, timeout=300, stdout=server_log, stderr=subprocess.STDOUT)
        code = flow.wait(600)
        second = (tmp_path / "run2.log").read_text()
        for name in ("ingest", "strategy", "traditional", "mix", "generative", "crossdomain"):
            assert f"{name}: up to date in dvc.lock, skipped" in second, second[-4000:]
        # Prefect's client retries its calls with back-off (about a minute in all): a 5 s outage is carried through.
        assert code == 0, second[-4000:]
        assert "Task run 'merge' - Finished in state Completed()" in second, second[-4000:]
        assert tree(proj / "data") == want, "an uninterrupted run's bytes"
        assert not list((proj / "data").glob(".*.tmp-*")) and not list((proj / "data").glob(".*.old-*"))
        status = run(["dvc", "status", "dvc.yaml"], proj)
        assert "up to date" in status.stdout, status.stdout
    finally:
        stop_server(server)
        server_log.close()
