"""Helpers for the demo-page tests: the built bundle, headless Chromium from Debian's
packages driven by Playwright (never a downloaded browser), and a page recorder that
collects every request, console error and uncaught page error."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    sync_playwright,
)

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
BASE_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# Chromium's fake microphone (a beep), granted without a prompt.
FAKE_MIC_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
DIST = ROOT / "web" / "dist"
OUTPUT = ROOT / "test-output" / "web"


def ensure_bundle() -> dict[str, str]:
    """The built page's manifest; builds it (`make web`) when a fresh checkout has none."""
    manifest = DIST / "manifest.json"
    if not manifest.is_file():
        subprocess.run(["make", "--no-print-directory", "web"], cwd=ROOT, check=True)
    return dict(json.loads(manifest.read_text()))


@contextmanager
def chromium() -> Iterator[Browser]:
    """The built page's browser for a module of tests: Chromium with the fake microphone."""
    ensure_bundle()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def launch(playwright: Playwright, *, fake_mic_ui: bool = True) -> Browser:
    args = BASE_ARGS + (FAKE_MIC_ARGS if fake_mic_ui else ["--use-fake-device-for-media-stream"])
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args)


def screenshot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    page.screenshot(path=str(path), full_page=True)
    return path


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


# What Chromium itself prints when a request fails or answers an error status: expected
# when LiveKit is unreachable or the server refuses; not a script error.
NETWORK_NOISE = ("Failed to load resource", "WebSocket connection to")


@dataclass
class Recorder:
    requests: list[Request] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Recorder:
        page.on("request", lambda request: self.requests.append(request))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        return self

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(NETWORK_NOISE):
            self.console_errors.append(message.text)

    def urls(self, path: str) -> list[Request]:
        return [r for r in self.requests if urlsplit(r.url).path == path]

    def assert_clean(self) -> None:
        assert self.page_errors == [], self.page_errors
        assert self.console_errors == [], self.console_errors

    def assert_origins(self, *allowed: str) -> None:
        seen = {origin(r.url) for r in self.requests if not r.url.startswith(("data:", "blob:"))}
        assert seen <= set(allowed), f"requests to {sorted(seen - set(allowed))}"


def minutes_words(retry_after_s: int) -> str:
    """How the page words a Retry-After under 90 minutes (web/src/i18n.js)."""
    return wait_words(retry_after_s, "en")


_WAIT_UNITS = {"en": ("minute", "hour"), "fr": ("minute", "heure")}


def wait_words(retry_after_s: int, language: str) -> str:
    """How the page words any Retry-After (web/src/i18n.js `wait`): minutes under 90 of
    them, else hours, each rounded up."""
    minute, hour = _WAIT_UNITS[language]
    n, unit = math.ceil(retry_after_s / 60), minute
    if n >= 90:
        n, unit = math.ceil(n / 60), hour
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
