"""The running demo and a headless Chromium, for the live page's browser tests and screenshot.

``DemoProcess`` runs ``python -m agent demo`` on a loopback port as a subprocess (it can be
killed and started again on the same port); ``headless_chromium`` opens Debian's Chromium
through its chromedriver with a fresh profile and the console log captured.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("GPULSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("GPULSE_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} not installed (Debian package '{package}'); the live-page browser tests need it"
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is not installed (pip install selenium); the live-page browser tests need it"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Used only while `demo` is not yet a subcommand of `python -m agent`: the simulator's own demo
# command (agent.sim.cli), with the live page's router included if the application lacks it.
_FALLBACK_LAUNCHER = """
import sys
import agent.api.app as api_app
import agent.web.routes
from agent.sim.cli import main

_create = api_app.create_app
def create_app(runtime):
    app = _create(runtime)
    if not any(getattr(r, "path", None) == "/api/v1/overview" for r in app.routes):
        app.include_router(agent.web.routes.router)
    return app
api_app.create_app = create_app
sys.exit(main(sys.argv[1:]))
"""


def demo_is_a_command() -> bool:
    from agent.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    return bool(actions) and "demo" in (actions[0].choices or {})  # type: ignore[operator]


def demo_command(scenario: str, speed: float, listen: str) -> list[str]:
    args = ["demo", "--scenario", scenario, "--speed", str(speed), "--listen", listen]
    if demo_is_a_command():
        return [sys.executable, "-m", "agent", *args]
    return [sys.executable, "-c", _FALLBACK_LAUNCHER, *args]


class DemoProcess:
    """``gpulse demo`` on 127.0.0.1:``port``; stop it and start it again on the same port."""

    def __init__(self, workdir: Path, scenario: str, *, speed: float, port: int | None = None) -> None:
        self.workdir = workdir
        self.scenario = scenario
        self.speed = speed
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 40.0) -> None:
        self.starts += 1
        log = open(self.workdir / f"demo-{self.starts}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            demo_command(self.scenario, self.speed, f"127.0.0.1:{self.port}"),
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.proc.returncode}\n{self.logs()}")
            if self._ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"the demo was not ready after {timeout_s:.0f} s\n{self.logs()}")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def logs(self) -> str:
        out = []
        for path in sorted(self.workdir.glob("demo-*.log")):
            out.append(f"--- {path.name} (tail) ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def first_line(self) -> str:
        """The first line the latest start printed (where it says its URL)."""
        path = self.workdir / f"demo-{self.starts}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return next((line for line in lines if "http" in line), "")


def headless_chromium(user_data_dir: Path, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium with a fresh profile whose console log ``driver.get_log("browser")`` reads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    return driver


def set_viewport(driver: Any, width: int, height: int, *, mobile: bool = False, scale: float = 1.0) -> None:
    """Emulate a device's viewport exactly (window sizes include browser chrome; this does not)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})
