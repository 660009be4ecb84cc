"""Debian's Chromium, headless, for Trio tests: ``open_browser(profile_dir)``.

The browser is driven through Debian's chromedriver with Selenium. Debian builds
``chromium`` and ``chromium-driver`` from one source at one version, so the driver always
speaks the browser's protocol (a driver that downloads or pins its own browser build
cannot be used here). WebDriver calls are blocking HTTP requests to chromedriver and not
tied to a thread, so each runs in a Trio worker thread; every one of them is bounded by
chromedriver's own timeouts, and every wait on the page by a deadline.

Without ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` the test is skipped, loudly,
except under ``CI=true``, where that is a failure (``scripts/test`` installs both).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
import trio
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

__all__ = ["ARTIFACTS", "Browser", "open_browser", "require_chromium"]

T = TypeVar("T")

CHROMIUM: Final = Path(os.environ.get("REPLYHQ_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER: Final = Path(os.environ.get("REPLYHQ_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: Screenshots worth keeping after the run (gitignored).
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / ".artifacts"

VIEWPORT: Final = (1440, 900)
WAIT_TIMEOUT: Final = 15.0
POLL_INTERVAL: Final = 0.05
#: Bounds a single WebDriver command (a page load, a script), so a worker thread never hangs.
COMMAND_TIMEOUT: Final = 30.0
EXIT_TIMEOUT: Final = 10.0


def require_chromium() -> None:
    """Skip (fail under CI=true) unless Debian's chromium and chromedriver are installed."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = (
        f"CHROMIUM IS NOT INSTALLED ({', '.join(missing)} missing): the dashboard's browser "
        "test DID NOT RUN. scripts/test installs Debian's chromium and chromium-driver; "
        "under CI=true this fails."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


async def _blocking(call: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(functools.partial(call, *args))


class Browser:
    """One headless Chromium window. Selectors are CSS; scripts are JavaScript bodies
    (``return ...``) with ``arguments[0..]`` bound to ``args``."""

    def __init__(self, driver: webdriver.Chrome, failure_screenshot: Path) -> None:
        self._driver = driver
        self._failure_screenshot = failure_screenshot

    async def get(self, url: str) -> None:
        await _blocking(self._driver.get, url)

    async def refresh(self) -> None:
        await _blocking(self._driver.refresh)

    async def js(self, script: str, *args: Any) -> Any:
        return await _blocking(self._driver.execute_script, script, *args)

    async def type(self, selector: str, text: str) -> None:
        """Type into a field key by key, as a person would (each key fires ``input``)."""

        def send() -> None:
            self._driver.find_element(By.CSS_SELECTOR, selector).send_keys(text)

        await _blocking(send)

    async def press_enter(self, selector: str) -> None:
        await self.type(selector, Keys.ENTER)

    async def click(self, selector: str) -> None:
        def click() -> None:
            self._driver.find_element(By.CSS_SELECTOR, selector).click()

        await _blocking(click)

    async def wait_for(
        self, what: str, script: str, *args: Any, timeout: float = WAIT_TIMEOUT
    ) -> Any:
        """Poll ``script`` until it returns something truthy (returned), or fail after
        ``timeout`` seconds, saying ``what`` was awaited and what the page showed."""
        deadline = trio.current_time() + timeout
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if trio.current_time() >= deadline:
                break
            await trio.sleep(POLL_INTERVAL)
        shown = await self.js("return document.body.innerText")
        await self.screenshot(self._failure_screenshot)
        raise AssertionError(
            f"the page did not show {what} within {timeout} s (screenshot: "
            f"{self._failure_screenshot}); it showed:\n{shown}"
        )

    async def screenshot(self, path: Path) -> Path:
        """Save what the window shows as a PNG at ``path``."""

        def save() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._driver.get_screenshot_as_png())

        await _blocking(save)
        return path

    async def console_errors(self) -> list[str]:
        """What the page logged at level SEVERE (script errors, CSP violations, failed
        loads) since the last call."""
        entries: list[dict[str, Any]] = await _blocking(self._driver.get_log, "browser")
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]


def _processes_using(profile: Path) -> list[int]:
    """The pids of the browser processes started with this profile (only ours use it)."""
    needle = f"--user-data-dir={profile}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


@contextlib.asynccontextmanager
async def open_browser(profile: Path) -> AsyncIterator[Browser]:
    """Start headless Chromium with a fresh profile in ``profile``; on exit quit it and
    make sure none of its processes is left."""
    require_chromium()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--lang=en-US",
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    log = profile.parent / "chromedriver.log"
    # A driver path given to the Service keeps Selenium from looking for (or downloading)
    # one of its own.
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log))

    def start() -> webdriver.Chrome:
        profile.mkdir(parents=True, exist_ok=True)
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.set_page_load_timeout(COMMAND_TIMEOUT)
            driver.set_script_timeout(COMMAND_TIMEOUT)
            # --window-size counts the browser's own frame; the page gets exactly this much.
            width, height = VIEWPORT
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        except BaseException:
            driver.quit()
            raise
        return driver

    try:
        driver = await _blocking(start)
    except WebDriverException as exc:
        raise AssertionError(f"chromium did not start: {exc.msg}; see {log}") from None
    try:
        yield Browser(driver, ARTIFACTS / "dashboard-failure.png")
    finally:
        with trio.CancelScope(shield=True):
            await _blocking(driver.quit)  # closes the browser, then stops chromedriver
            with trio.move_on_after(EXIT_TIMEOUT):
                while _processes_using(profile):  # noqa: ASYNC110 - no event for another process's exit
                    await trio.sleep(POLL_INTERVAL)
            for pid in _processes_using(profile):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
