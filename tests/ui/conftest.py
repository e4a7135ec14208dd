"""Fixtures: the real model and app services as processes on 127.0.0.1, and headless
Chromium driven through chromedriver (no browser download: Debian's packages)."""

import sys
import tempfile
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from procs import ROOT, Proc, binary, free_port, poll  # noqa: E402

OUT = ROOT / "test-output" / "ui"


def wait_until(check, what: str, timeout: float = 20.0):
    poll(check, timeout, what=what)


class Stack:
    def __init__(self):
        OUT.mkdir(parents=True, exist_ok=True)
        self.model_port, self.app_port = free_port(), free_port()
        self.model = None
        self.start_model()
        self.app = Proc("app", [binary("app-service")], OUT, env={
            "HTTP_ADDR": f"127.0.0.1:{self.app_port}",
            "MODEL_HOST": f"http://127.0.0.1:{self.model_port}",
            "APP_VERSION": "v1",
            "MODEL_TIMEOUT_MS": "1000",
        })
        self.url = f"http://127.0.0.1:{self.app_port}"
        wait_until(lambda: requests.get(f"{self.url}/readyz", timeout=2).ok, "app")

    def start_model(self):
        self.model = Proc("model", [binary("model-service")], OUT, env={
            "GRPC_ADDR": f"127.0.0.1:{self.model_port}",
            "METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "MODEL_ROOT": str(ROOT / "models"),
            "MODEL_RELOAD_SECS": "0",
        })

    def stop(self):
        for s in (self.app, self.model):
            if s:
                s.stop()


@pytest.fixture(scope="session")
def stack():
    s = Stack()
    try:
        yield s
    finally:
        s.stop()


def make_browser(javascript: bool) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1000,900"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='ui-chromium-')}")
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))
    driver.set_page_load_timeout(20)
    return driver


@pytest.fixture
def browser():
    driver = make_browser(javascript=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser_nojs():
    driver = make_browser(javascript=False)
    try:
        yield driver
    finally:
        driver.quit()
