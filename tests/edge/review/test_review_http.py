"""The review page over HTTP (FastAPI's TestClient, the real app on a real OUT): the token,
sessions and CSRF, Host names, paths that try to leave OUT, and answers refused."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from edge.journal import Journal  # noqa: E402
from edge.review.app import Settings, create_app  # noqa: E402
from edge.review.security import CSRF_HEADER, SESSION_COOKIE, TOKEN_HEADER  # noqa: E402

from .review_helpers import files_under, frames_by_name

TOKEN = "a-field-token-0123456789"
LOCAL = "http://127.0.0.1:8321"


def client(
    out: Path, *, token: str | None = None, host: str = "127.0.0.1", base: str = LOCAL
) -> TestClient:
    app = create_app(
        Settings(out=out, token=token, host=host, port=8321, labels=("deer", "bobcat"))
    )
    return TestClient(app, base_url=base, follow_redirects=False)


def csrf_of(page: str) -> str:
    marker = '<meta name="csrf-token" content="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def post(c: TestClient, frames: list[int], answer: str, csrf: str | None, **kw):
    headers = {CSRF_HEADER: csrf} if csrf else {}
    return c.post("/api/answer", json={"frames": frames, "answer": answer, **kw}, headers=headers)


def test_the_page_lists_the_queue_with_words_and_keys(out: Path):
    with client(out) as c:
        r = c.get("/")
        assert r.status_code == 200
        page = r.text
        assert page.count('class="frame"') == 9 and page.count('class="burst"') == 5
        assert "The model is unsure" in page and "<kbd>Shift</kbd>" in page
        assert '<option value="bobcat">' in page
        assert r.headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        cookie = r.headers["set-cookie"]
        assert SESSION_COOKIE in cookie and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert len(csrf_of(page)) > 20
        q = c.get("/api/queue").json()
        assert [cam["name"] for cam in q["cameras"]] == ["CA01", "S90"]
        ids = frames_by_name(out)
        pic = c.get(f"/picture/{ids['EK000001.JPG']}")
        assert pic.status_code == 200 and pic.content[:2] == b"\xff\xd8"
        assert c.get("/static/review.js").status_code == 200


def test_the_overlay_is_drawn_when_the_page_first_asks_for_it(out: Path):
    ids = frames_by_name(out)
    drawn = out / "overlays/S90/EK000002.JPG.overmap.jpg"
    assert not drawn.exists()  # the watcher keeps what it needs, draws nothing
    with client(out) as c:
        r = c.get(f"/picture/{ids['EK000002.JPG']}")
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
        assert drawn.is_file() and r.content == drawn.read_bytes()
        assert c.get(f"/picture/{ids['EK000002.JPG']}").content == r.content
        assert c.get("/picture/999").status_code == 404


def test_answers_need_the_sessions_csrf_token(out: Path):
    ids = frames_by_name(out)
    fid = ids["EK000002.JPG"]
    with client(out) as c:
        csrf = csrf_of(c.get("/").text)
        assert post(c, [fid], "accept", None).status_code == 403
        assert post(c, [fid], "accept", "forged").status_code == 403
        # a page on another site posting with the browser's cookie
        r = c.post(
            "/api/answer",
            json={"frames": [fid], "answer": "accept"},
            headers={CSRF_HEADER: csrf, "origin": "http://evil.example"},
        )
        assert r.status_code == 403
        assert files_under(out, "tagged") == set()
        r = post(c, [fid], "accept", csrf, who="ana")
        assert r.status_code == 200, r.text
        assert r.json()["applied"][0]["dest"] == "tagged/S90/EK000002.JPG"
        assert r.json()["waiting"] == 8
        # the token of one session is no good with another (a fresh client: no cookie)
    with client(out) as other:
        other.get("/")
        assert post(other, [ids["EK000003.JPG"]], "empty", csrf).status_code == 403
    assert files_under(out, "tagged") == {"tagged/S90/EK000002.JPG"}
    with Journal.open(out) as j:
        assert j.answer_of(fid).who == "ana"


def test_a_second_answer_is_refused_with_409_and_frames_not_in_the_queue_with_404(out: Path):
    ids = frames_by_name(out)
    with client(out) as c:
        csrf = csrf_of(c.get("/").text)
        assert post(c, [ids["EK000004.JPG"]], "empty", csrf).status_code == 200
        before = files_under(out, "review"), files_under(out, "empty")
        r = post(c, [ids["EK000004.JPG"]], "accept", csrf)
        assert r.status_code == 409 and "answered already" in r.json()["detail"]
        assert (
            post(c, [ids["EK000005.JPG"], ids["EK000004.JPG"]], "person", csrf).status_code == 409
        )
        assert post(c, [12345], "accept", csrf).status_code == 404
        (out / "review/S90/EK000006.JPG").unlink()  # taken away by hand: not in the queue
        assert post(c, [ids["EK000006.JPG"]], "accept", csrf).status_code == 404
        assert post(c, [ids["EK000005.JPG"]], "label", csrf, label="").status_code == 422
        assert post(c, [ids["EK000005.JPG"]], "maybe", csrf).status_code == 422
        assert files_under(out, "empty") == before[1]
        assert files_under(out, "review") == before[0] - {"review/S90/EK000006.JPG"}
        with Journal.open(out) as j:
            assert [a.frame_id for a in j.answers()] == [ids["EK000004.JPG"]]


@pytest.mark.parametrize(
    "path",
    [
        "/media/../journal.sqlite",
        "/media/%2e%2e%2fjournal.sqlite",
        "/media/review/%2e%2e/journal.sqlite",
        "/media/review/..%2f..%2fetc%2fpasswd",
        "/media/%2fetc%2fpasswd",
        "/media//etc/passwd",
        "/media/review/S90/%2e%2e%2f%2e%2e%2fjournal.sqlite",
        "/media/journal.sqlite",
        "/media/results/megadetector.json",
        "/media/review/S90/outside.jpg",  # a symlink in OUT/review to a file outside OUT
        "/media/review/S90/inside.jpg",  # a symlink in OUT/review to OUT's journal
        "/media/review/linked/EK000001.JPG",  # a linked folder that leads out of OUT
        "/media/review\\S90\\EK000001.JPG",
        "/media/review/S90/EK000001.JPG%00.json",
    ],
)
def test_no_path_outside_out_is_served(out: Path, tmp_path: Path, path: str):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not for the network")
    (out / "review/S90/outside.jpg").symlink_to(secret)
    (out / "review/S90/inside.jpg").symlink_to(out / "journal.sqlite")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/EK000001.JPG").write_bytes(b"\xff\xd8 elsewhere")
    (out / "review/linked").symlink_to(tmp_path / "elsewhere")
    with client(out) as c:
        c.get("/")
        r = c.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert b"not for the network" not in r.content and b"SQLite" not in r.content
        assert b"elsewhere" not in r.content
        ok = c.get("/media/review/S90/EK000001.JPG")
        assert (
            ok.status_code == 200 and ok.content == (out / "review/S90/EK000001.JPG").read_bytes()
        )
        assert c.get("/media/overlays/S90/EK000001.JPG.overmap.jpg").status_code == 404
        c.get(f"/picture/{frames_by_name(out)['EK000001.JPG']}")  # drawn once looked at
        assert c.get("/media/overlays/S90/EK000001.JPG.overmap.jpg").status_code == 200


def test_the_token_is_needed_once_then_a_cookie(out: Path):
    ids = frames_by_name(out)
    with client(out, token=TOKEN) as c:
        assert c.get("/").status_code == 401
        assert c.get("/?token=wrong-token-0123456789").status_code == 401
        assert c.get(f"/media/review/S90/EK000001.JPG?token={TOKEN[:-1]}").status_code == 401
        assert post(c, [ids["EK000001.JPG"]], "accept", "x").status_code == 401
        r = c.get(f"/?token={TOKEN}")
        assert r.status_code == 303 and r.headers["location"] == "/"  # the token leaves the URL
        assert "HttpOnly" in r.headers["set-cookie"]
        page = c.get("/")  # the cookie now
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        assert c.get("/media/review/S90/EK000001.JPG").status_code == 200
        assert post(c, [ids["EK000001.JPG"]], "accept", None).status_code == 403  # CSRF still
        assert post(c, [ids["EK000001.JPG"]], "accept", csrf).status_code == 200
    with client(out, token=TOKEN) as api:  # a script: the token as a header, no cookie
        assert api.get("/api/queue", headers={TOKEN_HEADER: "nope"}).status_code == 401
        assert api.get("/api/queue", headers={TOKEN_HEADER: TOKEN}).status_code == 200
        r = api.post(
            "/api/answer",
            json={"frames": [ids["EK000002.JPG"]], "answer": "empty"},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 200
    # EK000001: the model said "empty", so accepting it sorts it as empty
    assert files_under(out, "empty") == {"empty/S90/EK000001.JPG", "empty/S90/EK000002.JPG"}


def test_a_loopback_server_answers_only_its_own_names(out: Path):
    with client(out, base="http://evil.example:8321") as c:  # DNS rebinding
        assert c.get("/").status_code == 400
    with client(out, base="http://localhost:8321") as c:
        assert c.get("/").status_code == 200
    # beyond loopback any Host name is fine: the token is what guards the page
    with client(out, token=TOKEN, host="0.0.0.0", base="http://10.0.0.7:8321") as c:
        assert c.get("/").status_code == 401
        assert c.get(f"/?token={TOKEN}").status_code == 303
