"""The review page in a real browser: Debian's chromium driven by playwright against the real
server (uvicorn on 127.0.0.1, a free port), answered with the keyboard alone."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.journal import Journal
from edge.review.app import Settings, create_app

from .review_helpers import files_under, frames_by_name, free_port, sidecar_of

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(out: Path) -> Iterator[str]:
    """The app served by uvicorn in a thread; yields its address."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    app = create_app(Settings(out=out, host="127.0.0.1", port=port))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_raw_paths_that_climb_out_are_refused_by_the_live_server(server: str, out: Path):
    """http.client sends the path as written (a browser or httpx would normalise `..`)."""
    host, port = server.removeprefix("http://").split(":")
    for path in (
        "/media/../journal.sqlite",
        "/media/review/../../journal.sqlite",
        "/media/review/S90/../../journal.sqlite",
        "/media/%2e%2e/journal.sqlite",
    ):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        assert r.status in (400, 404), path
        assert b"SQLite" not in body


def test_a_ranger_answers_with_the_keyboard(server: str, out: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(
            "Debian's chromium is not installed (./install.sh --dev as root installs it with apt)"
        )
    ids = frames_by_name(out)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']")
            frame = page.locator("article.frame.current")
            assert frame.get_attribute("data-id") == str(ids["CA-01_0006501.jpg"])
            assert "The model is unsure" in frame.inner_text()

            def answered(name: str) -> None:
                page.wait_for_selector(f"#f{ids[name]}.answered", timeout=10_000)

            page.fill("#who", "ana")
            page.locator("#who").dispatch_event("change")
            page.locator("h1").click()  # focus off the name field: keys go to the page
            page.keyboard.press("a")  # accept the first CA01 frame (the model: human)
            answered("CA-01_0006501.jpg")
            page.keyboard.press("e")  # the next one is empty
            answered("CA-01_0006502.jpg")
            page.keyboard.press("s")  # skip the third
            page.keyboard.press("ArrowLeft")  # back to it, and on again
            page.keyboard.press("ArrowRight")
            assert page.locator("article.frame.current").get_attribute("data-id") == str(
                ids["EK000001.JPG"]
            )
            page.keyboard.press("Shift+P")  # the whole first S90 burst: a person, three frames
            for name in ("EK000001.JPG", "EK000002.JPG", "EK000003.JPG"):
                answered(name)
            page.keyboard.press("l")  # another label, typed
            page.wait_for_selector("#label-form:not([hidden])")
            page.keyboard.type("bobcat")
            page.keyboard.press("Enter")
            answered("EK000004.JPG")
            assert page.inner_text("#left") == "3"
            text = page.inner_text(f"#f{ids['EK000004.JPG']} .result")
            assert "bobcat" in text and "tagged/S90/EK000004.JPG" in text
            page.keyboard.press("a")  # the next frame of that burst: accepted
            answered("EK000005.JPG")
            assert page.inner_text("#left") == "2"
        finally:
            browser.close()

    assert files_under(out, "empty") == {"empty/CA01/CA-01_0006502.jpg"}
    tagged = files_under(out, "tagged")
    assert {
        "tagged/CA01/CA-01_0006501.jpg",
        "tagged/S90/EK000001.JPG",
        "tagged/S90/EK000002.JPG",
        "tagged/S90/EK000003.JPG",
        "tagged/S90/EK000004.JPG",
    } <= tagged
    assert sidecar_of(out / "tagged/S90/EK000004.JPG")["label"] == "bobcat"
    with Journal.open(out) as j:
        got = {a.frame_id: (a.answer, a.label, a.decision, a.who) for a in j.answers()}
        assert got[ids["CA-01_0006501.jpg"]] == ("accept", "human", "tagged", "ana")
        assert got[ids["CA-01_0006502.jpg"]] == ("empty", None, "empty", "ana")
        for name in ("EK000001.JPG", "EK000002.JPG", "EK000003.JPG"):
            assert got[ids[name]] == ("person", "human", "tagged", "ana")
        assert got[ids["EK000004.JPG"]] == ("label", "bobcat", "tagged", "ana")
        assert got[ids["EK000005.JPG"]] == ("accept", "human", "tagged", "ana")
        assert ids["CA-01_0006503.jpg"] not in got  # skipped: still waiting
        assert all(a.state == "done" for a in j.answers())
        assert len(j.review_queue()) == 9 - len(got)
    assert "review/CA01/CA-01_0006503.jpg" in files_under(out, "review")
