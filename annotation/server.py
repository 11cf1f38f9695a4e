"""The collection app: a Starlette application over a campaign database, served by uvicorn.

Participant side: ``/`` (the page), ``/api/session`` (start or resume: ``PROLIFIC_PID`` or
``worker``, with ``STUDY_ID``/``SESSION_ID``), ``/api/answer`` (one vote; the completion URL
comes back only once the last vote is committed), ``/images/{path}`` (files under the
campaign's image root only). Admin side, with ``Authorization: Bearer <token>``:
``/api/admin/progress``, ``/api/admin/workers`` (quality), ``/api/admin/export`` (CSV).

Run it with ``nights annotate serve CAMPAIGN.sqlite [--workers N]`` (or :func:`serve`).
"""

from __future__ import annotations

import hmac
import io
import json
import os
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .campaign import CampaignStore

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_BODY = 4096
_WORKER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(campaign: str | Path) -> Starlette:
    store = CampaignStore(campaign)
    image_root = Path(store.settings["image_root"] or ".").resolve()
    token = store.settings["admin_token"]

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def session(request: Request) -> Response:
        worker = request.query_params.get("PROLIFIC_PID") or request.query_params.get("worker")
        if not worker or not _WORKER.match(worker):
            return _error(
                400,
                "a participant id (PROLIFIC_PID or worker) of 1-64 letters, "
                "digits or _.@- is required",
            )
        state = store.start(
            worker, request.query_params.get("STUDY_ID"), request.query_params.get("SESSION_ID")
        )
        return JSONResponse(state)

    async def answer(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(body)
            worker, trial, choice = data["worker"], int(data["trial"]), str(data["answer"])
            rt_ms = None if data.get("rt_ms") is None else float(data["rt_ms"])
        except (ValueError, KeyError, TypeError):
            return _error(422, "expected JSON {worker, trial, answer, rt_ms}")
        if not isinstance(worker, str) or not _WORKER.match(worker):
            return _error(422, "bad participant id")
        try:
            return JSONResponse(store.answer(worker, trial, choice, rt_ms))
        except KeyError as error:
            return _error(404, str(error.args[0]))
        except ValueError as error:
            return _error(422, str(error))

    async def image(request: Request) -> Response:
        path = (image_root / request.path_params["path"]).resolve()
        if not path.is_relative_to(image_root) or not path.is_file():
            return _error(404, "no such image")
        return FileResponse(path, headers={"Cache-Control": "max-age=86400"})

    def admin(handler):
        async def guarded(request: Request) -> Response:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not given or not hmac.compare_digest(given, token):
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

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/session", session),
            Route("/api/answer", answer, methods=["POST"]),
            Route("/images/{path:path}", image),
            Route("/api/admin/progress", admin(progress)),
            Route("/api/admin/workers", admin(workers)),
            Route("/api/admin/export", admin(export)),
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
