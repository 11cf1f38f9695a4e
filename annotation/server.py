"""The collection app: a Starlette application over a campaign database, served by uvicorn.

Participant side: ``/`` (the page), ``/api/session`` (start or resume: ``PROLIFIC_PID`` or
``worker``, with ``STUDY_ID``/``SESSION_ID``; the current trial or the end), ``/api/answer``
(one vote; the next trial back, and the completion URL only once the last vote is committed),
``/api/image-error`` (the page could not load a trial's images), ``/images/{token}`` (the
images of a participant's trials under per-participant tokens, nothing else). Admin side, with
``Authorization: Bearer <token>``: ``/api/admin/progress``, ``/api/admin/workers`` (quality),
``/api/admin/export`` (CSV), ``POST /api/admin/release`` (``{"worker": ...}``: free a
participant who returned the study).

Every request is outside input: a bad one gets a 4xx with ``{"error": ...}``, never a 5xx.

Run it with ``nights annotate serve CAMPAIGN.sqlite [--workers N]`` (or :func:`serve`).
"""

from __future__ import annotations

import hmac
import io
import json
import mimetypes
import os
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .campaign import MAX_RT_MS, CampaignStore
from .errors import ParticipantError

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_BODY = 4096
MAX_TRIAL = 1_000_000
_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")  # participant, study and session ids, matched whole
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16)
IMAGE_HEADERS = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}


class BadRequest(Exception):
    """A request refused before it reaches the campaign; ``status`` is the 4xx."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _refuse_constant(name: str):
    raise BadRequest(f"{name} is not a JSON number (trial and rt_ms are finite numbers)")


async def _json_body(request: Request) -> dict:
    """The request's JSON object, read no further than MAX_BODY bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes", 413)
    try:
        data = json.loads(bytes(body), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _participant(value) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise BadRequest("worker must be the participant id: 1-64 letters, digits or _.@-")
    return value


def _trial_number(value) -> int:
    if type(value) is not int or not 0 <= value < MAX_TRIAL:
        raise BadRequest("trial must be the trial number the session gave (a whole number)")
    return value


def _response_time(value) -> float | None:
    if value is None:
        return None
    # NaN fails the comparison and infinity exceeds it; ints are compared without float().
    if type(value) not in (int, float) or not 0 <= value <= MAX_RT_MS:
        raise BadRequest(f"rt_ms must be a number of milliseconds from 0 to {MAX_RT_MS}")
    return float(value)


def create_app(campaign: str | Path) -> Starlette:
    store = CampaignStore(campaign)
    token = store.settings["admin_token"].encode()

    def handled(handler):
        """Turns the refusals of the request checks and of the campaign into 4xx answers."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as error:
                close = {"Connection": "close"} if error.status == 413 else {}
                return _error(error.status, str(error), **close)  # 413: stop reading the body
            except ParticipantError as error:
                return _error(error.status, str(error))

        return endpoint

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def session(request: Request) -> Response:
        query = request.query_params
        worker = query.get("PROLIFIC_PID") or query.get("worker")
        if not worker or not _ID.fullmatch(worker):
            raise BadRequest(
                "a participant id (PROLIFIC_PID or worker) of 1-64 letters, "
                "digits or _.@- is required",
                400,
            )
        extra = [query.get("STUDY_ID"), query.get("SESSION_ID")]
        if any(value is not None and not _ID.fullmatch(value) for value in extra):
            raise BadRequest("STUDY_ID and SESSION_ID are 1-64 letters, digits or _.@-", 400)
        return JSONResponse(store.start(worker, *extra))

    async def answer(request: Request) -> Response:
        data = await _json_body(request)
        if not isinstance(data.get("answer"), str):
            raise BadRequest("answer must be a string")
        return JSONResponse(
            store.answer(
                _participant(data.get("worker")),
                _trial_number(data.get("trial")),
                data["answer"],
                _response_time(data.get("rt_ms")),
            )
        )

    async def image_error(request: Request) -> Response:
        data = await _json_body(request)
        detail = data.get("detail", "")
        store.report_image_failure(
            _participant(data.get("worker")),
            _trial_number(data.get("trial")),
            detail if isinstance(detail, str) else "",
        )
        return JSONResponse({"recorded": True})

    async def image(request: Request) -> Response:
        name = request.path_params["token"]
        file = store.image(name) if _TOKEN.fullmatch(name) else None
        if file is None:
            return _error(404, "no such image")
        try:
            content = await run_in_threadpool(file.read_bytes)
        except OSError:
            return _error(404, "no such image")
        # No ETag or Last-Modified: they would tell two URLs of one file apart from others.
        return Response(
            content,
            media_type=mimetypes.guess_type(file.name)[0] or "application/octet-stream",
            headers=IMAGE_HEADERS,
        )

    def admin(handler):
        async def guarded(request: Request) -> Response:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not given or not hmac.compare_digest(given.encode(), token):
                return _error(401, "admin token required")
            return await handler(request)

        return guarded

    async def progress(request: Request) -> Response:
        return JSONResponse(store.progress())

    async def workers(request: Request) -> Response:
        from .aggregate import worker_quality

        votes = store.votes()
        if votes.empty:
            return JSONResponse({})
        quality = worker_quality(votes[votes["kind"] != "jnd"])
        return Response(
            quality.reset_index().to_json(orient="records"), media_type="application/json"
        )

    async def export(request: Request) -> Response:
        buffer = io.StringIO()
        store.votes().to_csv(buffer, index=False)
        return Response(buffer.getvalue(), media_type="text/csv")

    async def release(request: Request) -> Response:
        worker = _participant((await _json_body(request)).get("worker"))
        return JSONResponse({"worker": worker, "freed": store.release(worker)})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/session", handled(session)),
            Route("/api/answer", handled(answer), methods=["POST"]),
            Route("/api/image-error", handled(image_error), methods=["POST"]),
            Route("/images/{token}", image),
            Route("/api/admin/progress", admin(progress)),
            Route("/api/admin/workers", admin(workers)),
            Route("/api/admin/export", admin(export)),
            Route("/api/admin/release", admin(handled(release)), methods=["POST"]),
        ]
    )


def app_from_environment() -> Starlette:
    """The app of the campaign named by ``NIGHTS_CAMPAIGN``: what each worker process builds."""
    return create_app(os.environ["NIGHTS_CAMPAIGN"])


def serve(
    campaign: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1
) -> None:
    """Serves the campaign; ``workers > 1`` starts that many processes, each with its own
    connection: SQLite's locking (assignment in ``BEGIN IMMEDIATE``, one row per vote) keeps
    them from over-assigning or double counting, as the lock does between threads."""
    import uvicorn

    app = create_app(campaign)  # a missing or broken campaign fails here, before any worker
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    os.environ["NIGHTS_CAMPAIGN"] = str(Path(campaign).resolve())
    uvicorn.run(
        "annotation.server:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="warning",
    )
