"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium, and a local listener.

Nothing here downloads a browser or a driver: both come from Debian's packages (``make test``
installs them as root). Without them the browser tests are skipped, unless
``MEMALIGN_REQUIRE_BROWSER=1`` (set by ``make test``) makes that an error.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# Selenium Manager would try to download a driver; the driver here is Debian's.
os.environ.setdefault("SE_OFFLINE", "true")

# Chromium on a closed network, as root in a container: no sandbox (root), no shared-memory size limit
# (small /dev/shm), no GPU, and none of the background requests a fresh profile makes.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--lang=en-US",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (cookies are cleared by the tests that switch users)."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not chromium or not driver_path:
        message = "Debian's chromium and chromium-driver, and selenium, are needed (make install browser)"
        if os.environ.get("MEMALIGN_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    # An alert must stay open for the test to see it, not be dismissed by the driver.
    options.unhandled_prompt_behavior = "ignore"
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)  # axe-core on a busy machine
    try:
        yield driver
    finally:
        driver.quit()


class Listener:
    """An HTTP server on 127.0.0.1 standing for an attacker's host: records every request it gets.

    ``page`` is served at ``/attack`` (an attacker's page); every other path answers 204.
    """

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.page = ""
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.hits.append(self.path)
                body = listener.page.encode() if self.path == "/attack" else b""
                self.send_response(200 if body else 204)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()
