"""Helpers for tests that start a real Airflow api-server: a free port, waiting until it is healthy, a login token."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base: str, procs: dict[str, tuple[subprocess.Popen, Path]], seconds: int = 120) -> None:
    """Poll the api-server's health endpoint; fail with a process's log tail if it exits first."""
    for _ in range(seconds):
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        for name, (proc, log) in procs.items():
            assert proc.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"the api-server at {base} did not become healthy in {seconds} s")


def admin_password(airflow_home: Path) -> str:
    """The simple auth manager's generated password for `admin`."""
    return json.loads((airflow_home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]


def admin_headers(base: str, airflow_home: Path) -> dict[str, str]:
    """Authorization headers with a fresh JWT for `admin` (POST /auth/token)."""
    response = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": admin_password(airflow_home)})
    return {"authorization": f"Bearer {response.json()['access_token']}"}
