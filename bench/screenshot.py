"""Screenshot of the live page on the demo fleet, for the README (docs/screenshot.png).

Runs ``gpulse demo`` (default scenario) on a free loopback port, lets the simulated fleet
play long enough for every card to reach its state, opens the page in headless Chromium
at a desktop width and saves the whole page as a PNG. Prints what it measured on the way.

    python bench/screenshot.py [--out FILE] [--speed 5] [--sim-seconds 150] [--width 1440] [--phone]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "e2e")]  # the demo and browser helpers the browser tests use

from live_page_browser import DemoProcess, browser_missing, headless_chromium, set_viewport  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--speed", type=float, default=5.0,
                        help="simulated seconds per real second (low keeps a busy machine from gaps)")
    parser.add_argument("--sim-seconds", type=float, default=150.0,
                        help="simulated seconds to play before the screenshot (the default scenario "
                             "shows every state by 100 s)")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900, help="viewport height; the whole page is captured")
    parser.add_argument("--phone", action="store_true", help="a phone's viewport (390 px wide, mobile, 2x)")
    args = parser.parse_args(argv)

    missing = browser_missing()
    if missing:
        print(f"cannot take the screenshot: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpulse-shot-") as tmp:
        work = Path(tmp)
        demo = DemoProcess(work, args.scenario, speed=args.speed)
        t0 = time.monotonic()
        demo.start()
        print(f"demo ready after {time.monotonic() - t0:.1f} s: {demo.first_line() or demo.url}")
        driver = headless_chromium(work / "profile", args.width, args.height)
        try:
            width, scale = (390, 2.0) if args.phone else (args.width, 1.0)
            set_viewport(driver, width, args.height, mobile=args.phone, scale=scale)
            t1 = time.monotonic()
            driver.get(demo.url + "/")
            print(f"page loaded in {time.monotonic() - t1:.2f} s")
            wait = max(0.0, args.sim_seconds / args.speed - (time.monotonic() - t0))
            time.sleep(wait)
            _wait_for_cards(driver)
            _measure(demo.url, args.speed)
            height = int(driver.execute_script("return document.documentElement.scrollHeight"))
            set_viewport(driver, width, height, mobile=args.phone, scale=scale)
            time.sleep(2.5)  # one more poll at the full height, so nothing is half drawn
            shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                          {"format": "png", "captureBeyondViewport": True})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_bytes(base64.b64decode(shot["data"]))
            print(f"wrote {args.out} ({width}x{height} CSS px, {args.out.stat().st_size / 1024:.0f} KiB)")
            severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            if severe:
                print(f"console errors: {severe}", file=sys.stderr)
                return 1
        finally:
            driver.quit()
            demo.stop()
    return 0


def _measure(url: str, speed: float, requests: int = 20) -> None:
    """Size and latency of the page's data, each request on a new tick (so each one is built afresh)."""
    raw = httpx.get(f"{url}/api/v1/overview", headers={"Accept-Encoding": "identity"}, timeout=10.0)
    with httpx.stream("GET", f"{url}/api/v1/overview", headers={"Accept-Encoding": "gzip"}) as response:
        packed = sum(len(chunk) for chunk in response.iter_raw())
    states = [g["state"] for g in raw.json()["gpus"]]
    print(f"states: {json.dumps(states)}")
    times = []
    interval = float(raw.json()["node"]["interval_seconds"])
    with httpx.Client(timeout=10.0) as client:
        for _ in range(requests):
            time.sleep(interval / speed + 0.05)  # a new tick each time
            start = time.perf_counter()
            client.get(f"{url}/api/v1/overview", headers={"Accept-Encoding": "gzip"}).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(f"/api/v1/overview ({len(states)} GPUs, 5 min window): {len(raw.content) / 1024:.0f} KiB, "
          f"{packed / 1024:.0f} KiB gzipped; built fresh: median {statistics.median(times):.0f} ms, "
          f"max {times[-1]:.0f} ms over {requests} requests")


def _wait_for_cards(driver: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.execute_script(  # type: ignore[attr-defined]
                "return document.querySelectorAll('article.card').length"):
            return
        time.sleep(0.25)
    raise TimeoutError("no GPU card appeared on the page")


if __name__ == "__main__":
    raise SystemExit(main())
