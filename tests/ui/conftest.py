"""Fixtures: the real model and app services as processes on 127.0.0.1, and headless
Chromium driven through chromedriver (no browser download: Debian's packages)."""

import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from smsdev import ROOT
from smsdev import stack as local  # the one description of the local stack
from smsdev.procs import free_port, poll

OUT = ROOT / "test-output" / "ui"


def wait_until(check, what: str, timeout: float = 20.0):
    poll(check, timeout, what=what)


class Stack:
    """Model v1 and app v1, as smsdev.stack describes them; the model can be stopped and restarted."""

    def __init__(self):
        self.procs = local.Stack(OUT)
        model_port = free_port()
        self.model_service = local.model(grpc=f"127.0.0.1:{model_port}", metrics=f"127.0.0.1:{free_port()}",
                                         MODEL_RELOAD_SECS="0")
        self.model = None
        self.start_model()
        app = local.app(http=f"127.0.0.1:{free_port()}", model_host=f"http://127.0.0.1:{model_port}",
                        MODEL_TIMEOUT_MS="1000")
        self.procs.up(app)
        self.url = app.addresses["url"]

    def start_model(self):
        # Started again on the same port after a stop; the app reconnects by itself.
        self.model = self.procs.up(self.model_service)

    def stop(self):
        self.procs.stop_all()


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
