"""A real headless Chromium for the UI tests: Debian's chromium driven by Playwright, the Airflow login, and where
screenshots are kept as test artefacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def have_chromium() -> bool:
    """True when Debian's chromium is installed; in CI its absence fails the test (.ci/run installs it)."""
    if os.path.exists(CHROMIUM):
        return True
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    return False


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (Playwright's own browser download does not work here); skip without one."""
    if not have_chromium():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def screens_folder() -> Path:
    """Where the screenshots are kept as test artefacts (var/test-artifacts/screens, or $TEST_ARTIFACTS/screens)."""
    folder = Path(os.environ.get("TEST_ARTIFACTS", REPO / "var" / "test-artifacts")) / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def login(page: Any, base: str, password: str, landing: str = "/monitoring/") -> None:
    """Sign in on the Airflow login page. It sets the JWT cookie and then navigates by script: wait for both
    before leaving it, or our navigation and the login page's race (ERR_ABORTED, or a second trip to the login page)."""
    page.goto(f"{base}{landing}")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
    page.wait_for_load_state("networkidle")
