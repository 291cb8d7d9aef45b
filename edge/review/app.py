"""The review page's routes (FastAPI): the queue, the pictures, and answers.

Every request passes one guard first (`_guard`): the Host header (a loopback server answers
only its own names, against DNS rebinding), the access token when one is set (a header, a
session cookie, or once as `?token=` which becomes an HttpOnly SameSite=Strict cookie), and
on anything but GET/HEAD a CSRF token bound to the session, sent as a header by the page's
script. Files are served only from OUT/review and OUT/overlays, by a checked real path.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from edge.journal import AlreadyAnsweredError, AnswerRefusedError, Journal
from edge.overlay import ensure_overlay
from edge.review.answers import answer_frames, finish_pending
from edge.review.pictures import banner_picture
from edge.review.queue import OVERLAYS, REVIEW, Item, load_queue, waiting
from edge.review.security import (
    CSRF_HEADER,
    SESSION_COOKIE,
    TOKEN_HEADER,
    Sessions,
    allowed_hosts,
    resolve_inside,
    same,
)
from edge.sink import SinkError
from edge.triage import BURST_FRAMES

HERE = Path(__file__).resolve().parent
SAFE_METHODS = ("GET", "HEAD")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; "
    "style-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Settings:
    """What the page needs to know. `labels`: offered when a person picks another label (the
    bundle's classes, the config's taxa); `on_answer`: called after answers (the results file
    is rewritten there)."""

    out: Path
    token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8321
    gap_seconds: float = 10.0
    max_frames: int = BURST_FRAMES
    labels: tuple[str, ...] = ()
    empty_classes: tuple[str, ...] = ()
    on_answer: Callable[[], None] | None = None


class AnswerIn(BaseModel):
    """An answer for one frame or a whole burst."""

    frames: list[int] = Field(min_length=1, max_length=1000)
    answer: Literal["accept", "label", "empty", "person", "vehicle"]
    label: str | None = Field(None, max_length=200)
    who: str | None = Field(None, max_length=200)


def _pct(p: float | None) -> str:
    return "–" if p is None else f"{round(100 * p)} %"


def _item_json(it: Item) -> dict:
    d = asdict(it)
    d["time"] = it.time.isoformat() if it.time else None
    return d


def create_app(settings: Settings) -> FastAPI:
    """The app for one OUT folder; the journal stays open until the app shuts down."""
    out = settings.out.resolve()
    journal = Journal.open(out)
    finish_pending(journal, out)  # an answer a crash cut short is completed first
    sessions = Sessions()
    hosts = allowed_hosts(settings.host, settings.port)
    cookie_name = f"{SESSION_COOKIE}_{settings.port}"  # cookies ignore ports: one a server
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["pct"] = _pct
    templates = Jinja2Templates(env=env)
    try:
        default_who = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container, a service user)
        default_who = "unnamed"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            journal.close()

    app = FastAPI(
        title="edge review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def cookie(response: Response, sid: str) -> None:
        response.set_cookie(cookie_name, sid, httponly=True, samesite="strict", path="/")

    def deny(status: int, text: str) -> Response:
        return PlainTextResponse(text, status, headers=HEADERS)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable) -> Response:
        if hosts is not None and request.headers.get("host", "") not in hosts:
            return deny(400, "unexpected Host header: open the address `edge review` printed")
        sid = request.cookies.get(cookie_name)
        sid = sid if sessions.csrf(sid) else None
        by_header, new_sid = False, None
        if settings.token is not None:
            auth = request.headers.get("authorization", "")
            given = request.headers.get(TOKEN_HEADER) or auth.removeprefix("Bearer ").strip()
            if same(given, settings.token):
                by_header = True
            elif sid is None:
                if not same(request.query_params.get("token"), settings.token):
                    return deny(
                        401,
                        "this page needs its token: open the address with "
                        "?token=... that `edge review` printed",
                    )
                sid = new_sid = sessions.new()[0]
                if request.method in SAFE_METHODS:  # the token leaves the address bar
                    url = request.url.remove_query_params("token")
                    response = RedirectResponse(
                        url.path + (f"?{url.query}" if url.query else ""), 303, headers=HEADERS
                    )
                    cookie(response, sid)
                    return response
        elif sid is None and request.method in SAFE_METHODS:
            sid = new_sid = sessions.new()[0]
        if request.method not in SAFE_METHODS and not by_header:
            origin = request.headers.get("origin")
            if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
                return deny(403, "cross-site request refused")
            if not same(request.headers.get(CSRF_HEADER), sessions.csrf(sid)):
                return deny(403, "missing or wrong CSRF token: reload the page")
        request.state.sid = sid
        response = await call_next(request)
        if new_sid:
            cookie(response, new_sid)
        response.headers.update(HEADERS)
        return response

    def queue() -> list:
        return load_queue(
            journal, out, gap_seconds=settings.gap_seconds, max_frames=settings.max_frames
        )

    @app.get("/")
    def page(request: Request) -> Response:
        cameras = queue()
        seen = {
            lbl
            for c in cameras
            for b in c.bursts
            for i in b.items
            for lbl in (i.label, *(n for n, _ in i.top))
            if lbl
        }
        return templates.TemplateResponse(
            request,
            "review.html",
            {
                "cameras": cameras,
                "total": sum(c.count for c in cameras),
                "csrf": sessions.csrf(request.state.sid) or "",
                "out": out.name,
                "labels": sorted(set(settings.labels) | seen, key=str.lower),
            },
        )

    @app.get("/api/queue")
    def queue_json() -> dict:
        return {
            "cameras": [
                {
                    "name": c.name,
                    "bursts": [
                        {"key": b.key, "frames": [_item_json(i) for i in b.items]} for b in c.bursts
                    ],
                }
                for c in queue()
            ]
        }

    @app.get("/media/{path:path}")
    def media(path: str) -> Response:
        real = resolve_inside(out, path, under=(REVIEW, OVERLAYS))
        if real is None:
            raise HTTPException(404, "no such frame here")
        return FileResponse(real)

    @app.get("/picture/{frame_id}")
    def picture(frame_id: int) -> Response:
        f = next((f for f in waiting(journal, out) if f.id == frame_id), None)
        if f is None or f.dest is None:
            raise HTTPException(404, "not in the review queue")
        real = ensure_overlay(journal, out, f)  # drawn now from its journal data if need be
        if real is not None:  # a real path inside OUT/overlays (resolve_inside)
            return FileResponse(real, media_type="image/jpeg")
        frame = resolve_inside(out, f.dest, under=(REVIEW,))
        if frame is None:
            raise HTTPException(404, "not in the review queue")
        scores = {
            k: v
            for k, v in (("softmax", f.softmax), ("overmap", f.overmap), ("fused", f.confidence))
            if v is not None
        }
        return Response(banner_picture(frame, f.label or "?", scores), media_type="image/jpeg")

    @app.post("/api/answer")
    def answer(body: AnswerIn, request: Request) -> JSONResponse:
        client = request.client.host if request.client else "?"
        who = (body.who or "").strip() or f"{default_who}@{client}"
        try:
            applied = answer_frames(
                journal,
                out,
                body.frames,
                body.answer,
                who=who,
                label=body.label,
                empty_classes=settings.empty_classes,
            )
        except AlreadyAnsweredError as e:
            raise HTTPException(409, str(e)) from None
        except AnswerRefusedError as e:
            raise HTTPException(404, str(e)) from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        except SinkError as e:  # journaled, not moved: finished once the frame can be moved
            raise HTTPException(500, f"answer recorded, frame not moved yet: {e}") from None
        if settings.on_answer is not None:
            settings.on_answer()
        return JSONResponse(
            {"applied": [asdict(a) for a in applied], "waiting": len(waiting(journal, out))}
        )

    return app
