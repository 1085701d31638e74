"""The live page's routes over real HTTP (uvicorn on loopback): the page, its assets, the overview."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_fixtures import signals

import agent.web
from agent.api.app import create_app
from agent.web import routes

STATIC = Path(agent.web.__file__).parent / "static"


def app_for(runtime: Any) -> Any:
    app = create_app(runtime)
    if not any(getattr(r, "path", None) == "/api/v1/overview" for r in app.routes):
        app.include_router(routes.router)  # until the application includes the page itself
    return app


@pytest.fixture
def served(filled: Any, live_server: Any) -> Any:
    """(node, base URL): two GPUs with a minute of history, served by uvicorn."""
    node = filled()
    for t in range(1, 61):
        node.add(0, t, signals(compute_bound=1.0))
        node.add(1, t, signals(starved_io=0.7, compute_bound=0.3))
    node.publish(60)
    return node, live_server(app_for(node.runtime))


def test_the_page_and_its_assets(served: Any) -> None:
    _node, url = served
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text)
    assert sorted(referenced) == ["/ui/app.js", "/ui/style.css"]
    js = httpx.get(f"{url}/ui/app.js")
    css = httpx.get(f"{url}/ui/style.css")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "/api/v1/overview" in js.text
    assert js.content == (STATIC / "app.js").read_bytes()


def test_nothing_is_fetched_from_elsewhere() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        # the SVG namespace is a name, not a fetch; any other absolute URL would be
        urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", text)
                if u != "http://www.w3.org/2000/svg"]
        assert urls == [], f"{path.name} refers to {urls}"
        assert "@import" not in text and "fonts.googleapis" not in text


def test_unknown_asset_is_a_json_404(served: Any) -> None:
    _node, url = served
    r = httpx.get(f"{url}/ui/missing.js")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found", "detail": "no such asset: missing.js"}


TRAVERSALS = ("/ui/..%2Froutes.py", "/ui/%2e%2e%2f%2e%2e%2fruntime.py", "/ui/..%2F..%2F__init__.py",
              "/ui/static%2Fapp.js", "/ui/..%5Croutes.py", "/ui/index.html", "/ui/", "/ui/%2Fetc%2Fpasswd")


def test_no_path_reaches_the_file_system(served: Any) -> None:
    _node, url = served
    for path in TRAVERSALS:
        r = httpx.get(url + path)
        assert r.status_code == 404, path
        assert "import" not in r.text and "root:" not in r.text, path
        assert r.headers["content-type"].startswith("application/json"), path


def test_overview_over_http(served: Any) -> None:
    _node, url = served
    r = httpx.get(f"{url}/api/v1/overview")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["ready"] is True
    assert [g["state"] for g in body["gpus"]] == ["compute_bound", "starved_io"]
    assert [g["state_label"] for g in body["gpus"]] == ["Computing", "Starved by I/O"]
    assert body["gpus"][1]["diagnosis"].startswith("GPU 1 spent 70 % of the last 5 minutes starved by I/O")


def test_overview_is_gzipped_when_asked(served: Any) -> None:
    _node, url = served
    with httpx.stream("GET", f"{url}/api/v1/overview", headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        packed = b"".join(raw.iter_raw())
    plain = httpx.get(f"{url}/api/v1/overview", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert gzip.decompress(packed) == plain.content  # same snapshot, same document


def test_window_is_validated(served: Any) -> None:
    _node, url = served
    for minutes in ("0", "-1", "61", "soon"):
        r = httpx.get(f"{url}/api/v1/overview", params={"minutes": minutes})
        assert r.status_code == 422 and "minutes" in r.json()["detail"], minutes


def test_a_new_snapshot_replaces_the_cached_overview(served: Any) -> None:
    node, url = served
    first = httpx.get(f"{url}/api/v1/overview").json()
    assert httpx.get(f"{url}/api/v1/overview").json()["gpus"] == first["gpus"]
    for t in range(61, 81):
        node.add(0, t, signals(throttled_thermal=1.0))
    node.publish(80)
    assert httpx.get(f"{url}/api/v1/overview").json()["gpus"][0]["state"] == "throttled_thermal"
    assert httpx.get(f"{url}/api/v1/overview", params={"minutes": 1}).json()["node"]["window_seconds"] == 60


def test_health_is_fresh_even_when_the_snapshot_is_not(served: Any) -> None:
    node, url = served
    assert httpx.get(f"{url}/api/v1/overview").json()["node"]["health"]["healthy"] is True
    node.clock.advance(3600)  # the loop never ticked: past the start-up grace, and no new snapshot
    health = httpx.get(f"{url}/api/v1/overview").json()["node"]["health"]
    assert health["healthy"] is False and "has not ticked" in health["detail"]


def test_diagnosis_failure_leaves_the_page_working(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    node, url = served

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in a diagnosis")

    monkeypatch.setattr("agent.signals.diagnosis.diagnose_store", broken)
    node.add(0, 61, signals(compute_bound=1.0))
    node.publish(61)  # a new snapshot: the overview is built again
    body = httpx.get(f"{url}/api/v1/overview").json()
    assert body["gpus"][0]["state"] == "compute_bound" and body["gpus"][0]["diagnosis"] is None
