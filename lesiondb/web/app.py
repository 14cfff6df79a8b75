"""The Starlette application of ``lesiondb serve``: thin routes over :mod:`lesiondb.web.pages`.

Pages are rendered on the server (Jinja2, autoescaped); the only script is ``static/review.js``
(the queue's keyboard shortcuts and in-place decisions); every asset is served from the package.

Privacy and safety (the graph holds patient data, pseudonymised):

- the CLI binds 127.0.0.1 unless told otherwise, and the app answers only requests whose ``Host``
  is one it was started for (a web page elsewhere cannot read it by DNS rebinding);
- every POST needs the token the pages carry (a form on another site cannot accept or reject),
  and a cross-origin ``Origin`` is refused;
- pages are ``no-store``, crops ``private``; the Content-Security-Policy allows this origin only.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..core.pseudonym import Pseudonymizer
from ..errors import InputError, LesionDBError
from ..graph.engine import Engine
from . import pages
from .crops import (
    BOX_COLOURS,
    DEFAULT_SIZE_PX,
    DEFAULT_WINDOW,
    SIZES_PX,
    WINDOWS,
    CropCache,
    CropKey,
    encode_png,
    placeholder_png,
    render_crop,
)
from .images import ImageLibrary, SliceNotFound

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
LOCAL_HOSTS = ("127.0.0.1", "localhost")
TOKEN_HEADER = "x-lesiondb-token"
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
WINDOW_LABELS = {"soft": "soft tissue (W400/L40)", "lung": "lung (W1500/L-600)", "bone": "bone (W1800/L400)"}


@dataclass
class WebState:
    """What the routes share: the engine, the image library, the crop cache and settings."""

    engine: Engine
    library: ImageLibrary
    cache: CropCache
    reviewer: str = ""
    k_similar: int = 8
    queue_limit: int = 50
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    placeholders: dict[tuple[int, str], bytes] = field(default_factory=dict)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["mm"] = lambda v: "–" if v is None else f"{float(v):.1f} mm"
    env.filters["num"] = lambda v, d=2: "–" if v is None else f"{float(v):.{d}f}"
    env.filters["pct"] = lambda v: "–" if v is None else f"{float(v):+.0f} %"
    env.filters["day"] = lambda v: "–" if v is None else f"day {int(v)}"
    env.filters["short"] = lambda s, n=12: s if s is None or len(str(s)) <= n + 1 else f"{str(s)[:n]}…"
    env.globals["WINDOWS"] = WINDOW_LABELS
    return env


ENV = _env()


def _crop_url(kind: str, item_id: str, window: str, size: int | None = None, v: str | None = None) -> str:
    q = {"window": window}
    if size:
        q["size"] = str(size)
    if v:
        q["v"] = v
    return f"/crops/{kind}/{item_id}.png?{urlencode(q)}"


def _window(request: Request) -> str:
    w = request.query_params.get("window", DEFAULT_WINDOW)
    return w if w in WINDOWS else DEFAULT_WINDOW


def _render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    state: WebState = request.app.state.web
    window = _window(request)

    def with_window(w: str) -> str:
        q = dict(request.query_params)
        q["window"] = w
        return f"{request.url.path}?{urlencode(q)}"

    html = ENV.get_template(template).render(
        request=request, window=window, with_window=with_window, token=state.token, reviewer=state.reviewer,
        crop=lambda kind, item_id, size=None, v=None: _crop_url(kind, item_id, window, size, v),
        images=state.library.summary() if state.library.ready else None, **ctx)
    return HTMLResponse(html, status_code=status)


def _not_found(request: Request, what: str) -> HTMLResponse:
    return _render(request, "error.html", status=404, title="not found", message=what)


# -- pages ---------------------------------------------------------------------------------------
def index(request: Request) -> HTMLResponse:
    state: WebState = request.app.state.web
    try:
        skip = max(int(request.query_params.get("skip", 0)), 0)
        limit = min(max(int(request.query_params.get("limit", 500)), 1), 5000)
    except ValueError:
        skip, limit = 0, 500
    rows = pages.patients_overview(state.engine, skip=skip, limit=limit)
    return _render(request, "index.html", title="patients", patients=rows, skip=skip, limit=limit)


def patient(request: Request) -> HTMLResponse:
    state: WebState = request.app.state.web
    data = pages.patient_timeline(state.engine, request.path_params["patient_id"])
    if data is None:
        return _not_found(request, "no such patient in this graph")
    for t in data["tracks"]:
        t["chart"] = Markup(t["chart"])  # built by charts.diameter_chart, every text in it escaped
    return _render(request, "patient.html", title=f"patient {data['patientId']}", p=data)


def lesion(request: Request) -> HTMLResponse:
    state: WebState = request.app.state.web
    data = pages.lesion_view(state.engine, request.path_params["lesion_id"], k=state.k_similar)
    if data is None:
        return _not_found(request, "no such lesion in this graph")
    return _render(request, "lesion.html", title=f"lesion {data['lesionId']}", l=data)


def queue(request: Request) -> HTMLResponse:
    state: WebState = request.app.state.web
    patient_id = request.query_params.get("patient") or None
    try:
        limit = min(max(int(request.query_params.get("limit", state.queue_limit)), 1), 1000)
    except ValueError:
        limit = state.queue_limit
    data = pages.review_queue(state.engine, limit=limit, patient=patient_id)
    return _render(request, "queue.html", title="review queue", q=data, patient=patient_id, limit=limit,
                   done=request.query_params.get("done"))


# -- decisions -----------------------------------------------------------------------------------
def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def decide_proposal(request: Request) -> Response:
    return await _decide(request, "proposal")


async def decide_link(request: Request) -> Response:
    return await _decide(request, "link")


async def _decide(request: Request, kind: str) -> Response:
    state: WebState = request.app.state.web
    item_id, action = request.path_params["item_id"], request.path_params["action"]
    if action not in pages.ACTIONS:
        return JSONResponse({"error": "use …/accept or …/reject"}, status_code=404)
    form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    token = request.headers.get(TOKEN_HEADER) or form.get("token", "")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
    if not secrets.compare_digest(token.encode(), state.token.encode()):
        return JSONResponse({"error": "missing or wrong page token: reload the page"}, status_code=403)
    by = form.get("by", "").strip() or state.reviewer or None
    try:
        out = await run_in_threadpool(pages.decide, state.engine, kind, item_id, action, by, form.get("reason"))
    except InputError as exc:
        if _wants_json(request):
            return JSONResponse({"error": str(exc)}, status_code=409)
        return _render(request, "error.html", status=409, title="not done", message=str(exc))
    if _wants_json(request):
        return JSONResponse(out)
    back = "/proposals?" + urlencode({"done": item_id})
    return RedirectResponse(back, status_code=303)


# -- crops ---------------------------------------------------------------------------------------
def _placeholder(state: WebState, size: int, text: str) -> bytes:
    key = (size, text)
    if key not in state.placeholders:
        state.placeholders[key] = placeholder_png(size, text)
    return state.placeholders[key]


PLACEHOLDER_TEXT = {"no-images-folder": "no image folder", "series-not-found": "image not found",
                    "slice-unreadable": "unreadable image", "no-slice-index": "no key slice",
                    "not-found": "not in graph"}


def crop(request: Request) -> Response:
    state: WebState = request.app.state.web
    kind, item_id = request.path_params["kind"], request.path_params["item_id"]
    window = request.query_params.get("window", DEFAULT_WINDOW)
    if kind not in ("lesion", "proposal") or window not in WINDOWS:
        return JSONResponse({"error": f"use /crops/lesion|proposal/ID.png?window={'|'.join(WINDOWS)}"},
                            status_code=400)
    try:
        size = min(max(int(request.query_params.get("size", DEFAULT_SIZE_PX)), SIZES_PX[0]), SIZES_PX[1])
    except ValueError:
        size = DEFAULT_SIZE_PX
    # a lesion's geometry never changes under its id; a proposal's moves when it is re-mined, so
    # its pages name the version they show (v=) and a cached crop of it needs no graph read
    version = "" if kind == "lesion" else request.query_params.get("v", "")
    if kind == "lesion" or version:
        data = state.cache.get(CropKey(kind, item_id, version, window, size))
        if data is not None:
            return _png(data, cacheable=True)
    target = pages.crop_target(state.engine, kind, item_id)
    if target is None:
        return _png(_placeholder(state, size, PLACEHOLDER_TEXT["not-found"]), status=404, reason="not-found")
    key = CropKey(kind, item_id, "" if kind == "lesion" else target.version, window, size)
    data = state.cache.get(key)
    if data is None:
        try:
            hu = state.library.slice_hu(target.slice)
        except SliceNotFound as exc:
            return _png(_placeholder(state, size, PLACEHOLDER_TEXT.get(exc.code, "no image")), reason=exc.code)
        data = encode_png(render_crop(hu, target.box_px, window=window, size_px=size, box_colour=BOX_COLOURS[kind]))
        state.cache.put(key, data)
    return _png(data, cacheable=kind == "lesion" or version == target.version)


def _png(data: bytes, *, status: int = 200, cacheable: bool = False, reason: str | None = None) -> Response:
    headers = {"Cache-Control": "private, max-age=86400" if cacheable else "no-store",
               "X-Lesiondb-Crop": "placeholder" if reason else "image"}
    if reason:
        headers["X-Lesiondb-Crop-Reason"] = reason
    return Response(data, status_code=status, media_type="image/png", headers=headers)


# -- the application -----------------------------------------------------------------------------
class _SecurityHeaders:
    """Adds the privacy headers to every response (pages: no-store; all: CSP, no referrer)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"content-security-policy", CSP.encode()), (b"referrer-policy", b"no-referrer"),
                         (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = headers + [h for h in extra if h[0] not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(engine: Engine, ids: Pseudonymizer | None = None, images: list[str | Path] | tuple = (), *,
               cache_dir: str | Path | None = None, reviewer: str | None = None,
               allowed_hosts: list[str] | None = None, k_similar: int = 8, queue_limit: int = 50,
               library: ImageLibrary | None = None, scan_images_on_start: bool = True) -> Starlette:
    """The web application over ``engine``. ``images``: folders holding the graph's DICOM series or
    DeepLesion ``Images_png`` (found by pseudonym with ``ids``, the graph's key); ``cache_dir``: a
    private folder for rendered crops (None: memory only); ``reviewer``: the name recorded when the
    page sends none; ``allowed_hosts``: the ``Host`` names answered (default: 127.0.0.1, localhost)."""
    state = WebState(engine=engine, library=library or ImageLibrary(images, ids), cache=CropCache(cache_dir),
                     reviewer=reviewer or "", k_similar=k_similar, queue_limit=queue_limit)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        if scan_images_on_start:  # the first crops need the series index: build it while pages load
            threading.Thread(target=state.library.index, name="lesiondb-image-scan", daemon=True).start()
        yield

    routes = [
        Route("/", index),
        Route("/patients/{patient_id}", patient),
        Route("/lesions/{lesion_id}", lesion),
        Route("/proposals", queue),
        Route("/proposals/{item_id}/{action}", decide_proposal, methods=["POST"]),
        Route("/links/{item_id}/{action}", decide_link, methods=["POST"]),
        Route("/crops/{kind}/{item_id}.png", crop),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOCAL_HOSTS),
                             www_redirect=False),
                  Middleware(_SecurityHeaders)]

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("error serving %s", request.url.path)
        msg = str(exc) if isinstance(exc, LesionDBError) else "internal error (see the server's log)"
        return HTMLResponse(ENV.get_template("error.html").render(
            request=request, title="error", message=msg, window=DEFAULT_WINDOW, images=None,
            with_window=lambda w: "/", token="", reviewer=""), status_code=500)

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={LesionDBError: on_error})
    app.state.web = state
    return app
