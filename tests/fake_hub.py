"""A local HTTP server that answers ``huggingface_hub``'s file requests as the Hub does.

``hf_hub_download`` asks ``HEAD {endpoint}/{repo}/resolve/{revision}/{file}`` for the commit
(``X-Repo-Commit``), the content id (``ETag``) and the size, then GETs the file. Point it here
with ``HF_ENDPOINT=server.url`` (read when huggingface_hub is imported: use a subprocess).
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """Serves ``repos[repo][revision] = {filename: bytes}``; logs ``(method, path)``."""

    def __init__(self, repos: dict[str, dict[str, dict[str, bytes]]]):
        self.repos = repos
        self.log: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, head=True)

            def do_GET(self) -> None:
                hub._answer(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @staticmethod
    def commit(repo: str, revision: str) -> str:
        return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()

    def _answer(self, request: BaseHTTPRequestHandler, head: bool) -> None:
        self.log.append((request.command, request.path))
        match = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", request.path.split("?")[0])
        repo, revision, filename = match.groups() if match else (None, None, None)
        revisions = self.repos.get(repo)
        if revisions is None:
            return self._error(request, 401, "RepoNotFound")
        if revision not in revisions:
            return self._error(request, 404, "RevisionNotFound")
        data = revisions[revision].get(filename)
        if data is None:
            return self._error(request, 404, "EntryNotFound")
        request.send_response(200)
        request.send_header("X-Repo-Commit", self.commit(repo, revision))
        request.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Content-Type", "application/octet-stream")
        request.end_headers()
        if not head:
            request.wfile.write(data)

    @staticmethod
    def _error(request: BaseHTTPRequestHandler, status: int, code: str) -> None:
        request.send_response(status)
        request.send_header("X-Error-Code", code)
        request.send_header("Content-Length", "0")
        request.end_headers()

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
