"""The MLflow UI, end to end in a real browser: `mlflow server` on a store written by a real small
multirun, opened in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Needs the `browser` extra and `apt-get install chromium chromium-driver` (.ci/run installs them).
In CI (CI=true) a missing browser is a failure; elsewhere the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / ".test-artifacts"  # git-ignored; screenshots land here


def _need(what: str) -> None:
    message = f"browser test: {what} (apt-get install chromium chromium-driver; uv sync --extra browser)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        _need(f"chromium={chromium}, chromedriver={driver} not found")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _need("selenium is not installed")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """End the server and its uvicorn workers: they share its process group (its own PID)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def test_mlflow_ui_shows_the_sweep(small_sweep, tmp_path: Path) -> None:
    chromium, driver_path = _browser_paths()
    from mlflow import MlflowClient
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    client = MlflowClient(tracking_uri=small_sweep.tracking_uri)
    experiment = client.get_experiment_by_name(small_sweep.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("lambda_hat.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "mlflow_server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            small_sweep.tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    browser = None
    try:
        _wait_healthy(url, server, timeout=300)
        options = Options()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1600,1000"):
            options.add_argument(arg)
        browser = webdriver.Chrome(options=options, service=Service(driver_path))
        browser.set_page_load_timeout(120)

        def page_shows(*texts: str, timeout: float = 240) -> str:  # generous: a loaded machine is slow, a fast one returns early
            deadline = time.monotonic() + timeout
            body = ""
            while time.monotonic() < deadline:
                body = browser.find_element(By.TAG_NAME, "body").text
                if all(t in body for t in texts):
                    return body
                time.sleep(0.5)
            raise AssertionError(f"page does not show {[t for t in texts if t not in body]}; it shows: {body[:1500]}")

        # The experiment's runs, in the "Model training" view (MLflow 3 opens in GenAI mode)
        browser.get(f"{url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning")
        page_shows(small_sweep.experiment, parent.info.run_name, "5 matching runs")
        row = browser.find_element(By.CSS_SELECTOR, f'[role=row][row-id="{parent.info.run_id}"]')
        row.find_element(By.CSS_SELECTOR, 'button[data-component-id*="runnamecellrenderer"]').click()  # expand the parent
        page_shows(*{c.info.run_name for c in children})
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "mlflow_ui_runs.png"))

        # A child's page: its metrics, llc_mean among them, and its parent
        child = children[0]
        browser.get(f"{url}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}?workflowType=machine_learning")
        body = page_shows(child.info.run_name, "llc_mean", parent.info.run_name)
        assert f"{child.data.metrics['llc_mean']:.4g}"[:4] in body
        # About this run: the entry point as Source, with the commit beside it
        assert "python -m lambda_hat" in body and child.data.tags["mlflow.source.git.commit"][:7] in body
        browser.save_screenshot(str(ARTIFACTS / "mlflow_ui_child_run.png"))
    finally:
        if browser is not None:
            browser.quit()
        _stop(server)
        log.close()
    assert server.poll() is not None
    assert (ARTIFACTS / "mlflow_ui_runs.png").stat().st_size > 10_000
