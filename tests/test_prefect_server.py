"""augdag.prefect_server.temporary_server: the Prefect API server `augdag run` starts before importing its flows.

The real server runs (uvicorn + Prefect's app on a SQLite database in a fresh PREFECT_HOME), in a child
process with PREFECT_API_URL unset, as a user's `augdag run` without a Prefect server of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from augdag.errors import AugdagError
from augdag.prefect_server import temporary_server

# A flow in the block; its last log line is written just before it returns, so it is still queued in
# Prefect's log worker when the block ends. Then a second block on the same database reads the run back.
SCRIPT = r"""
import json, sys, urllib.request
from augdag.env import set_offline
set_offline()
from augdag.prefect_server import temporary_server

out = {}
with temporary_server() as server:
    out["launched_before_flows"] = server.proc is not None and server.proc.poll() is None \
        and "prefect.flows" not in sys.modules
    from prefect import flow, get_run_logger
    from prefect.settings import get_current_settings

    url = server.ready()
    out["url"], out["settings_url"] = url, get_current_settings().api.url
    with urllib.request.urlopen(url + "/health") as r:
        out["health"] = r.status

    @flow(name="tmp-server-check")
    def check():
        from prefect.runtime import flow_run
        get_run_logger().info("LAST-LINE-MARKER")
        return flow_run.id

    out["run_id"] = str(check())
    proc = server.proc
out["stopped"] = proc.poll() is not None
out["settings_after"] = get_current_settings().api.url
out["server_package_imported"] = "prefect.server.api.server" in sys.modules

import asyncio
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

async def read(run_id):
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        return run.state.type.value, [l.message for l in logs]

with temporary_server() as again:
    again.ready()
    out["second_url"] = again.url
    out["state"], out["logs"] = asyncio.run(read(out["run_id"]))
print("RESULT " + json.dumps(out))
"""


def _env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_UI"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), **extra)
    return env


@pytest.mark.slow
def test_temporary_server_serves_a_flow_keeps_its_last_logs_and_stops(tmp_path):
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(res.stdout.split("RESULT ", 1)[1])
    assert out["launched_before_flows"], "the server starts on entry, before the flows are imported"
    assert out["health"] == 200 and out["settings_url"] == out["url"]
    assert out["url"].startswith("http://127.0.0.1:") and out["url"].endswith("/api")
    assert out["stopped"] and out["settings_after"] is None, "stopped, and Prefect's settings restored"
    assert not out["server_package_imported"], "the flow's process need not import Prefect's server package"
    assert out["state"] == "COMPLETED"
    assert "LAST-LINE-MARKER" in out["logs"], f"the run's last log line reached the database: {out['logs']}"
    both = res.stdout + res.stderr
    assert "Error logging to API" not in both and "View at" not in both, both[-3000:]
    assert f"starting Prefect's temporary server on 127.0.0.1:{out['url'].split(':')[2].split('/')[0]}" in both
    assert (tmp_path / "prefect-home" / "prefect.db").exists(), "runs are kept in PREFECT_HOME, as Prefect's own"


@pytest.mark.slow
def test_a_server_that_cannot_start_is_a_clear_error_not_a_wait(tmp_path):
    env = _env(tmp_path, PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:////nonexistent/dir/prefect.db",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="3600")
    code = ("from augdag.env import set_offline; set_offline()\n"
            "from augdag.prefect_server import temporary_server\n"
            "with temporary_server() as s:\n    s.ready()\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)  # a wait for the 3600 s startup timeout would end here
    assert res.returncode == 1
    assert "AugdagError: Prefect's temporary server exited with status 3" in res.stderr, res.stderr[-3000:]
    assert "uvicorn --app-dir" in res.stderr


def test_nothing_starts_where_prefect_already_has_an_api():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = "http://127.0.0.1:9/api"  # nothing listens: ready() must not contact it
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with temporary_server(log=pytest.fail) as server:
            assert server.proc is None and server.url == url and server.ready() == url


def test_nothing_starts_where_temporary_servers_are_off():
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

    with temporary_settings(updates={PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}, restore_defaults={PREFECT_API_URL}):
        with temporary_server(log=pytest.fail) as server:
            assert server.proc is None and server.url is None and server.ready() is None


def test_wait_healthy_names_a_process_that_exited(tmp_path):
    from augdag.prefect_server import wait_healthy

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    proc.wait()
    with pytest.raises(AugdagError, match=r"demo server exited with status 7 while starting"):
        wait_healthy(proc, "http://127.0.0.1:9/api", 60, "demo server")
