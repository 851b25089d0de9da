"""Prefect API server processes: the temporary one `augdag run` and `augdag compare` start, and the helpers
`augdag server` (flows/serve.py) shares.

Without PREFECT_API_URL, Prefect starts a temporary API server the first time a flow needs one: it imports
its server package in the flow's process, launches uvicorn, and waits for it (the server process imports
the same package, then checks the database). Only then does the flow's first task start, seconds after the
flow's own imports finished (figures: bench/RESULTS.md, "Performance benchmarks"). `temporary_server()`
launches the same server (same command, same environment as Prefect's `SubprocessASGIServer`: UI off,
ephemeral mode, the caller's settings) before the flow's modules are imported, so the server boots on one
core while the caller imports on the other, and points Prefect's settings at it for the block. Runs,
logs and artifacts go to the same database (PREFECT_HOME) as with Prefect's own temporary server.

This module imports nothing from Prefect at import time: the point is to start before Prefect is loaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from augdag.errors import AugdagError


def local_host(host: str) -> str:
    """Where this machine reaches a server bound to `host`."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def api_url(host: str, port: int) -> str:
    return f"http://{local_host(host)}:{port}/api"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent():
    """A preexec_fn asking Linux to SIGTERM the child when augdag dies, even by SIGKILL (PR_SET_PDEATHSIG).
    Resolved here, in the parent: the child only calls a C function (no imports, no locks)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl, sig = ctypes.CDLL(None, use_errno=True).prctl, int(signal.SIGTERM)
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, sig)


def startup_timeout() -> float:
    return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 120)


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, what: str, poll_s: float = 0.1) -> None:
    """Return once `url`/health answers 200; AugdagError when `proc` exits first or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            hint = (" (3: uvicorn could not start the app: port taken, database unreachable...)"
                    if proc.returncode == 3 else "")
            raise AugdagError(f"{what} exited with status {proc.returncode}{hint} while starting; its output is "
                              f"above (command: {' '.join(map(str, proc.args))})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as res:
                if res.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AugdagError(f"{what} did not answer on {url}/health within {timeout:.0f} s (a loaded machine? "
                              f"raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
        time.sleep(poll_s)


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT (what Ctrl-C would send) to the server's process group, then SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # the server's session: uvicorn and any process it started
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _uvicorn(port: int, settings) -> subprocess.Popen:
    """Prefect's `SubprocessASGIServer._run_uvicorn_command`, in a session of its own (stopped as a group)
    that ends with this process even on SIGKILL."""
    package = Path(importlib.util.find_spec("prefect").origin).parent
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **settings.to_environment_variables(exclude_unset=True),
    }
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(package.parent), "--factory",
           "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent())


class Server:
    """The API a block of `temporary_server()` talks to: `url` (None: Prefect's default behaviour), and `ready()`."""

    def __init__(self, url: str | None, proc: subprocess.Popen | None = None):
        self.url, self.proc = url, proc
        self._ready = proc is None

    def ready(self) -> str | None:
        """Wait (once) until the server answers; AugdagError if it exits or does not answer in time."""
        if not self._ready:
            wait_healthy(self.proc, self.url, startup_timeout(), "Prefect's temporary server")
            self._ready = True
        return self.url


@contextlib.contextmanager
def temporary_server(log=print):
    """Prefect's temporary API server for the block, launched on entry; `ready()` on the yielded Server waits
    for it. Start the block before importing the flows and call `ready()` after, so the imports overlap the
    server's start:

        with temporary_server() as server:
            from augdag.flows.pipeline import run_pipeline
            server.ready()
            run_pipeline(...)

    Inside the block Prefect's settings point at the server (PREFECT_API_URL); on exit the server stops
    (SIGINT, then harder). Where Prefect already has an API (PREFECT_API_URL in the environment or the
    profile) or may not start a temporary one (PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=false) nothing starts:
    the Server's url is that API's (or None) and Prefect behaves as it would without the block.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        yield Server(settings.api.url)
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    port = free_port()
    server = Server(api_url("127.0.0.1", port), _uvicorn(port, settings))
    log(f"augdag: starting Prefect's temporary server on 127.0.0.1:{port} (runs are kept in {settings.home})")
    updates = {PREFECT_API_URL: server.url}
    if settings.ui_url is None:  # as with Prefect's own temporary server: it serves no UI, so no "View at" link
        updates[PREFECT_UI_URL] = ""
    try:
        with temporary_settings(updates=updates):
            try:
                yield server
            finally:
                _drain_to(server)
    finally:
        stop_server(server.proc, timeout=10.0)


def _drain_to(server: Server) -> None:
    """Send the logs and events Prefect still holds while their server is up (its own temporary server lives
    until the process exits, so its workers drain at exit; this one stops with the block)."""
    if not server._ready or server.proc.poll() is not None:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10, at_exit=False)
        EventsWorker.drain_all(timeout=10, at_exit=False)
    except Exception as err:  # a failed flush must not hide the block's own outcome
        print(f"augdag: could not send Prefect's last logs/events: {err}", file=sys.stderr)
