"""Make docs/prefect-ui.png: a finished pipeline run's graph in the Prefect UI (for the README).

Starts `augdag server` on a scratch copy of the project (tiny params, as the tests use), launches the
pipeline deployment through the API, waits for it, and screenshots the run's page with headless
Chromium.    .venv/bin/python docs/screenshot_ui.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import BIN, SMALL, make_project  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "prefect-ui.png").resolve()
    port = 4200
    tmp = Path(tempfile.mkdtemp(prefix="augdag-ui-"))
    proj = make_project(tmp / "proj", {**SMALL, "finetune": {**SMALL["finetune"], "pretrained": False},
                                       "evaluate": {"robustness": {"enabled": False}}})
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    env.update(PATH=f"{BIN}:{env['PATH']}", PREFECT_HOME=str(tmp / "prefect-home"))
    proc = subprocess.Popen([str(BIN / "augdag"), "-C", str(proj), "server", "--port", str(port)], env=env,
                            stdout=open(tmp / "server.log", "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    try:
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment

        from augdag.flows import serve

        deadline = time.monotonic() + 300
        while True:
            try:
                fr = run_deployment(serve.PIPELINE_DEPLOYMENT, parameters={"seed": 1}, timeout=900, poll_interval=2,
                                    as_subflow=False)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(3)
        print("run:", fr.name, fr.state.name if fr.state else None)

        async def child():
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

            async with get_client() as c:
                runs = await c.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[fr.id])))
                return runs[0].id if runs else fr.id

        target = asyncio.run(child())
        url = f"http://127.0.0.1:{port}/runs/flow-run/{target}"
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp / 'chrome'}", "--window-size=1400,900", "--virtual-time-budget=20000",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=180)
        print("screenshot:", out, url)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
