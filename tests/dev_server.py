"""Start ``langgraph dev`` on this project for a test, and stop it (offline, loopback only).

The server runs from the project root (``langgraph.json``), keeps its state in
``.langgraph_api`` there (removed afterwards) and writes its log to a file the
test names. Tests drive it with ``langgraph-sdk``, as Studio does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
STATE_DIR = ROOT / ".langgraph_api"

requires_dev_server = pytest.mark.skipif(
    not LANGGRAPH.exists()
    or importlib.util.find_spec("langgraph_runtime_inmem") is None
    or importlib.util.find_spec("onnxruntime") is None,
    reason="langgraph-cli[inmem] or the embedded embedder not installed (make install)",
)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dev_server(
    env: Mapping[str, str],
    log_path: Path,
    *,
    keep_state: Path | None = None,
    timeout_s: float = 180,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """Run ``langgraph dev`` with ``env`` added to this process's environment; yield its base URL.

    The server listens on ``host`` only (127.0.0.1 unless a test needs a request that does not
    come over loopback), without browser or hot reload, with LangSmith
    tracing off. On exit it is stopped (SIGTERM, then SIGKILL) and its state directory
    removed, after being copied to ``keep_state`` if given (what the server wrote to disk).

    Raises:
        pytest.fail.Exception: if the server exits or does not answer ``/ok`` within ``timeout_s``
            (the log's tail is in the message).
    """
    port = free_port(host)
    full_env = {**os.environ, "LANGSMITH_TRACING": "false", **env}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", host, "--port", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://{host}:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"langgraph dev exited: {log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"langgraph dev did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if keep_state is not None and STATE_DIR.exists():
                shutil.copytree(STATE_DIR, keep_state, dirs_exist_ok=True)
            shutil.rmtree(STATE_DIR, ignore_errors=True)
