"""End to end: the live page in a real headless Chromium against the real demo.

One demo process (a four-GPU scenario written here, speed 10) and one browser serve the whole
module; the tests run in file order, the agent restart last. What they show:

- every GPU card renders with its state in words and a diagnosis sentence;
- a cooling failure in the simulated fleet turns its card to "Throttled: thermal" within a few
  seconds of the fleet's change (seen in ``/metrics`` as a thermal clock-event reason);
- the window selector narrows the shares and charts to the minute asked for;
- the console logs no errors;
- at a phone's width (390x844) nothing overflows sideways and the cards stack one per row;
- the page survives the agent restarting: a "not reachable" banner, then the cards come back.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_page_browser import DemoProcess, browser_missing, headless_chromium, set_viewport

from agent.web.overview import STATE_LABELS

pytestmark = pytest.mark.e2e

SPEED = 10.0
COOLING_GPU = 2
COOLING_AT_S = 150.0  # simulated: 15 s of real time, time enough to see the card computing first
CARD_DEADLINE_S = 6.0  # real seconds from the fleet's change to the card: a 2 s poll plus slack
SCENARIO = f"""
name: live-page
description: four cards for the browser test; GPU {COOLING_GPU}'s cooling fails at {COOLING_AT_S:g} s
seed: 11
interval_s: 1.0
gpus:
  - model: H100-SXM
    workload: {{kind: training, precision: bf16}}
  - model: H100-SXM
    workload: {{kind: inference_decode, precision: bf16}}
  - model: H100-SXM
    workload: {{kind: training, precision: bf16}}
  - model: H100-SXM
    workload: {{kind: idle}}
events:
  - {{at_s: {COOLING_AT_S:g}, gpu: {COOLING_GPU}, kind: cooling_failure, factor: 4}}
"""
GPUS = 4
THERMAL_REASON = re.compile(
    rf'^gpulse_gpu_clock_event_active\{{gpu="{COOLING_GPU}",[^}}]*reason="(sw|hw)_thermal_slowdown"\}} 1',
    re.MULTILINE)

# One JS call reads what the tests look at on every card.
CARDS_JS = """
return [...document.querySelectorAll('article.card')].map((c) => ({
  gpu: Number(c.dataset.gpu), state: c.dataset.state,
  label: c.querySelector('.state').textContent, diagnosis: c.querySelector('.diagnosis').textContent}));
"""


LAYOUT_JS = """
const cards = [...document.querySelectorAll('article.card')].map((c) => c.getBoundingClientRect());
const wide = [...document.querySelectorAll('body *')].filter((e) => {
  const r = e.getBoundingClientRect();
  return r.width > 0 && r.right > window.innerWidth + 0.5;
}).map((e) => e.tagName + '.' + e.className);
return {inner: window.innerWidth, scroll: document.documentElement.scrollWidth, wide,
        cards: cards.map((r) => ({left: r.left, top: r.top, bottom: r.bottom, width: r.width})),
        font: parseFloat(getComputedStyle(document.querySelector('.diagnosis')).fontSize),
        badge: parseFloat(getComputedStyle(document.querySelector('.state')).fontSize),
        chart: document.querySelector('.chart svg').getBoundingClientRect().width};
"""


def width(session: Session) -> int:
    return int(session.driver.execute_script("return window.innerWidth"))


# How the browser logs a poll that met no agent: refused while nothing listens, reset or
# empty when the kill lands while a poll is in flight.
DEAD_AGENT_ERRORS = ("ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET", "ERR_EMPTY_RESPONSE")


def refused_poll(entry: dict[str, Any]) -> bool:
    """The browser's own log line for a poll that found no agent, or lost it mid-request."""
    message = str(entry.get("message", ""))
    return "/api/v1/overview" in message and any(error in message for error in DEAD_AGENT_ERRORS)


class Session:
    def __init__(self, demo: DemoProcess, driver: Any) -> None:
        self.demo = demo
        self.driver = driver
        self.console: list[dict[str, Any]] = []

    def cards(self) -> list[dict[str, Any]]:
        return list(self.driver.execute_script(CARDS_JS))

    def card(self, index: int) -> dict[str, Any] | None:
        return next((c for c in self.cards() if c["gpu"] == index), None)

    def banner(self) -> str | None:
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "const b = document.getElementById('banner'); return b.hidden ? null : b.textContent;")

    def read_console(self) -> list[dict[str, Any]]:
        entries = list(self.driver.get_log("browser"))
        self.console.extend(entries)
        return entries

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                logs = self.demo.logs()
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{logs}")
            time.sleep(every_s)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    work: Path = tmp_path_factory.mktemp("live-page")
    (work / "scenario.yaml").write_text(SCENARIO)
    driver = headless_chromium(work / "profile", 1280, 900)  # the browser starts while nothing else runs
    demo = DemoProcess(work, str(work / "scenario.yaml"), speed=SPEED)
    try:
        demo.start()
        driver.get(demo.url + "/")
        yield Session(demo, driver)
    finally:
        driver.quit()
        demo.stop()


def test_every_card_shows_its_state_and_diagnosis(session: Session) -> None:
    assert f"{session.demo.url}/" in session.demo.first_line()  # the demo prints the page's URL
    labels = set(STATE_LABELS.values())

    def complete() -> list[dict[str, Any]] | None:
        cards = session.cards()
        ready = len(cards) == GPUS and all(
            c["label"] in labels and c["diagnosis"].startswith(f"GPU {c['gpu']} ") for c in cards)
        return cards if ready else None

    cards = session.wait("every card with a state and a diagnosis", complete, 30)
    assert [c["gpu"] for c in cards] == list(range(GPUS))
    by_gpu = {c["gpu"]: c for c in cards}
    assert by_gpu[0]["label"] == "Computing" and by_gpu[3]["label"] == "Idle"
    assert by_gpu[1]["label"] in ("Memory-bound", "Waiting (no host cause)")
    for c in cards:
        assert c["label"] == STATE_LABELS[c["state"]]  # the words match the state the colour shows


def test_cooling_failure_turns_the_card_to_thermal_throttling(session: Session) -> None:
    seen_before = session.wait(f"GPU {COOLING_GPU}'s card", lambda: session.card(COOLING_GPU), 20)
    assert seen_before["label"] == "Computing", "the cooling failed before the page saw the GPU compute"

    def fleet_changed() -> bool:
        try:
            return bool(THERMAL_REASON.search(httpx.get(f"{session.demo.url}/metrics", timeout=5).text))
        except httpx.HTTPError:
            return False

    session.wait("the simulated cooling failure to throttle the clocks", fleet_changed,
                 COOLING_AT_S / SPEED + 20, every_s=0.1)
    changed_at = time.monotonic()
    card = session.wait("the card to read 'Throttled: thermal'",
                        lambda: (c := session.card(COOLING_GPU)) and c["label"] == "Throttled: thermal" and c,
                        CARD_DEADLINE_S, every_s=0.1)
    print(f"card turned thermal {time.monotonic() - changed_at:.1f} s after the fleet did")
    assert card["state"] == "throttled_thermal"
    others = {c["gpu"]: c["label"] for c in session.cards() if c["gpu"] != COOLING_GPU}
    assert others[0] == "Computing"  # only the GPU whose cooling failed changed


def test_window_selector_narrows_the_shares_and_charts(session: Session) -> None:
    from selenium.webdriver.support.select import Select

    captions = "return [...document.querySelectorAll('.time .caption :last-child')].map((e) => e.textContent)"
    assert all(c.endswith("min") for c in session.driver.execute_script(captions))  # 5 min, >1.5 min played
    Select(session.driver.find_element("id", "window")).select_by_value("1")

    def narrowed() -> list[str] | None:
        found = session.driver.execute_script(captions)
        seconds = [re.fullmatch(r"last (\d+) s", c) for c in found]
        return found if len(found) == GPUS and all(m and int(m[1]) <= 60 for m in seconds) else None

    session.wait("captions of a 1-minute window", narrowed, 6)
    assert "minutes=1" in session.driver.current_url  # a link to the page keeps the window
    Select(session.driver.find_element("id", "window")).select_by_value("5")


def test_no_console_errors(session: Session) -> None:
    time.sleep(2 * 2.0)  # let two more polls run, so that their handling is in the log too
    errors = [e for e in session.read_console() if e.get("level") == "SEVERE"]
    assert errors == []


def test_phone_width_stays_usable(session: Session) -> None:
    set_viewport(session.driver, 390, 844, mobile=True, scale=3)
    try:
        session.wait("a phone's viewport", lambda: width(session) == 390, 5)
        layout = session.driver.execute_script(LAYOUT_JS)
        assert layout["scroll"] <= layout["inner"], f"scrolls sideways: {layout['scroll']} px"
        assert layout["wide"] == [], f"elements past the right edge: {layout['wide'][:5]}"
        cards = layout["cards"]
        assert len(cards) == GPUS
        assert len({round(c["left"]) for c in cards}) == 1  # one column
        assert all(b["top"] >= a["bottom"] for a, b in itertools.pairwise(cards))  # one per row
        assert all(c["width"] >= 390 - 2 * 16 for c in cards)  # the cards use the width
        assert layout["font"] >= 13 and layout["badge"] >= 12  # readable text
        assert layout["chart"] >= 300  # charts get the full card width, one per row
    finally:
        set_viewport(session.driver, 1280, 900)


def test_page_survives_the_agent_restarting(session: Session) -> None:
    session.read_console()
    before = len(session.console)
    session.demo.stop(kill=True)  # a crash, not a clean shutdown
    banner = session.wait("the 'not reachable' banner", lambda: session.banner(), 8)
    assert "not reachable" in banner
    assert len(session.cards()) == GPUS  # the last picture stays, dimmed
    assert session.driver.execute_script("return document.body.classList.contains('stale')")

    session.demo.start()  # the same port
    session.wait("the banner to go away", lambda: session.banner() is None, 15)

    def back() -> list[dict[str, Any]] | None:
        cards = session.cards()
        return cards if len(cards) == GPUS and all(c["state"] for c in cards) else None

    cards = session.wait("cards with states again", back, 10)
    assert {c["label"] for c in cards} <= set(STATE_LABELS.values())
    assert not session.driver.execute_script("return document.body.classList.contains('stale')")
    # While the agent was down the browser logged the refused polls; nothing else went wrong.
    session.read_console()
    unexpected = [e for e in session.console[before:] if e.get("level") == "SEVERE" and not refused_poll(e)]
    assert unexpected == []
