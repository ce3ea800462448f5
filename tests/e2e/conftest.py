"""What the end-to-end tests share: `marrow run` on a free port, headless Chromium, the
screenshot folder, and the first steps every flow takes (the first administrator, a case)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest
from app.bench.servers import free_port, stop_process_group, wait_for
from support.app import clean_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
PROCESS_TIMEOUT_MS = 120_000


@pytest.fixture
def server(tmp_path, repo_root) -> str:
    """`marrow run` on a free port, everything under tmp_path except the ONNX export of the
    shipped model, which is cached where a laptop `marrow run` keeps it (keyed by the weights)."""
    from app.cli import marrow_command

    env = clean_env(MARROW_DATA_DIR=str(tmp_path / "data"),
                    MARROW_MODEL_CACHE_DIR=str(repo_root / "var" / "model-cache"))
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(marrow_command("run", "--host", "127.0.0.1", "--port", str(port)), cwd=repo_root,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/api/health", timeout=2).status_code == 200, 60, "marrow run", proc, log)
        yield url
    finally:
        stop_process_group(proc, sig=2, timeout=60)


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (scripts/test.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def artifacts(repo_root) -> Path:
    out = repo_root / "test-artifacts" / "e2e"
    out.mkdir(parents=True, exist_ok=True)
    return out


def open_new_case(page, server: str, accession: str) -> str:
    """First visit: create the first administrator, then a case; returns the case page's URL."""
    page.goto(server)
    assert page.url.endswith("/setup")
    page.fill("input[name=name]", "ada")
    page.fill("input[name=password]", "a long password")
    page.fill("input[name=password2]", "a long password")
    page.click("button:has-text('Create administrator')")
    page.wait_for_url("**/cases")
    page.fill("input[name=accession]", accession)
    page.click("button:has-text('Create case')")
    page.wait_for_url(re.compile(r".*/cases/\d+$"))
    return page.url
