"""`edge review` as a ranger starts it: the command line, the printed address and token, a
real server process, and the results file rewritten with the person's label."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.config import parse_config
from edge.review.security import TOKEN_HEADER, allowed_hosts, is_loopback, resolve_inside
from edge.review.server import address

from .review_helpers import frames_by_name, free_port

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "cli-token-0123456789abcdef"


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 60.0) -> str:
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if text in line:
                return line
        if proc.poll() is not None:
            break
    raise AssertionError(f"no {text!r} in the output:\n{seen}{proc.stderr.read()}")


def _request(url: str, *, token: str | None = None, body: dict | None = None):
    headers = {TOKEN_HEADER: token} if token else {}
    data = None
    if body is not None:
        data, headers["content-type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_edge_review_serves_answers_and_rewrites_the_results(out: Path, tiny_bundle: Path):
    ids = frames_by_name(out)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "review",
            str(out),
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--bundle",
            str(tiny_bundle),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _wait_for_line(proc, "review queue:")
        assert f"http://127.0.0.1:{port}/?token={TOKEN}" in line
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # the address is printed as uvicorn starts to bind
            try:
                assert _request(base + "/api/queue")[0] == 401
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        status, body = _request(base + "/api/queue", token=TOKEN)
        assert status == 200 and len(json.loads(body)["cameras"]) == 2
        status, body = _request(
            base + "/api/answer",
            token=TOKEN,
            body={
                "frames": [ids["EK000002.JPG"]],
                "answer": "label",
                "label": "deer",
                "who": "ana",
            },
        )
        assert status == 200, body
        results = out / "results" / "megadetector.json"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            entries = {e["file"]: e for e in json.loads(results.read_text())["images"]}
            if "tagged/S90/EK000002.JPG" in entries:
                break
            time.sleep(0.1)
        entry = entries["tagged/S90/EK000002.JPG"]
        assert entry["label"] == "deer" and entry["classification_method"] == "human"
        assert entry["detections"][0]["classifications"] == [["1", 1.0]]  # tiny bundle: deer
        assert entries["review/S90/EK000003.JPG"]["decision"] == "review"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_edge_review_refuses_a_folder_without_a_journal(tmp_path: Path):
    r = CliRunner().invoke(app, ["review", str(tmp_path)])
    assert r.exit_code == 2 and "no journal.sqlite" in r.output
    (tmp_path / "journal.sqlite").write_bytes(b"")
    r = CliRunner().invoke(app, ["review", str(tmp_path), "--token", "short"])
    assert r.exit_code == 2 and "16 characters" in r.output


def test_a_token_is_required_beyond_localhost():
    cfg = parse_config({})
    assert address(cfg, None, None, None).token is None  # 127.0.0.1: this machine only
    far = address(cfg, "0.0.0.0", None, None)
    assert far.token and len(far.token) >= 16 and far.port == 8321
    assert f"?token={far.token}" in far.url()
    cfg = parse_config(
        {"review": {"host": "192.168.4.2", "port": 9000, "token": "from-the-config-0123"}}
    )
    a = address(cfg, None, None, None)
    assert (a.host, a.port, a.token) == ("192.168.4.2", 9000, "from-the-config-0123")
    assert address(cfg, None, 9001, "from-the-flag-0123456").token == "from-the-flag-0123456"
    with pytest.raises(ValueError):
        parse_config({"review": {"token": "short"}})
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.7")
    assert "127.0.0.1:8321" in allowed_hosts("127.0.0.1", 8321)
    assert allowed_hosts("0.0.0.0", 8321) is None


def test_resolve_inside_by_hand(tmp_path: Path):
    (tmp_path / "review").mkdir()
    (tmp_path / "review/a.jpg").write_bytes(b"x")
    (tmp_path / "journal.sqlite").write_bytes(b"x")
    assert resolve_inside(tmp_path, "review/a.jpg", under=("review",)) is not None
    for rel in (
        "journal.sqlite",
        "../x",
        "review/../journal.sqlite",
        "/etc/passwd",
        "review/./a.jpg",
        "review//a.jpg",
        "review",
        "review/missing.jpg",
        "",
    ):
        assert resolve_inside(tmp_path, rel, under=("review",)) is None, rel
