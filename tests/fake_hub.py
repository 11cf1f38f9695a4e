"""A small Hugging Face Hub on 127.0.0.1, in memory, for the push and Hub-id tests.

It speaks the parts of the Hub's HTTP API that ``huggingface_hub`` (with
``HF_HUB_DISABLE_XET=1``: the Git LFS transfer, not Xet), ``datasets`` and FiftyOne use:
``whoami-v2``, repository creation and info, branches, the tree and ``paths-info`` listings,
``resolve`` downloads (with Range), ``preupload``, the LFS batch API with basic PUT uploads, and
ndjson commits. Repositories are versioned: each commit is a snapshot, a branch points at one.
Clients reach it by ``HF_ENDPOINT``; as ``huggingface_hub`` reads that at import, tests run
their Hub clients in subprocesses (see :func:`hub_env`).

Example::

    with FakeHub(tokens={"secret": "alice"}) as hub:
        hub.add_repo("model", "alice/taken", {"config.json": b"{}"})
        subprocess.run([...], env=hub_env(hub, token="secret"))
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_LFS_SUFFIXES = (".parquet", ".png", ".jpg", ".jpeg", ".arrow", ".zip", ".bin", ".safetensors")
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
)


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


@dataclass
class Repo:
    kind: str
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The server; ``repos`` and ``log`` (method, path) are open for assertions."""

    def __init__(
        self,
        models: dict[str, dict[str, dict[str, bytes]]] | None = None,
        tokens: dict[str, str] | None = None,
        model_names_block_datasets: bool = True,
    ):
        """``models[repo][revision] = {filename: bytes}``: public model repositories, each
        revision a branch; ``tokens``: token -> user name."""
        self.tokens = dict(tokens or {})
        self.model_names_block_datasets = model_names_block_datasets
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        for repo_id, revisions in (models or {}).items():
            repo = self.add_repo("model", repo_id, revisions.get("main", {}))
            for revision, files in revisions.items():
                if revision != "main":
                    repo.branches[revision] = repo.branches["main"]
                    self._commit(repo, revision, self._blobs(files))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, kind: str, repo_id: str, files: dict[str, bytes], private=False) -> Repo:
        repo = self._create(kind, repo_id, private)
        self._commit(repo, "main", self._blobs(files))
        return repo

    @staticmethod
    def _blobs(files: dict[str, bytes]) -> dict[str, Blob]:
        return {path: Blob(data, path.endswith(_LFS_SUFFIXES)) for path, data in files.items()}

    def files(self, kind: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(kind, repo_id)]
        return {path: blob.data for path, blob in repo.commits[repo.resolve(revision)].items()}

    def _create(self, kind: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(kind, repo_id, private)
        self.repos[(kind, repo_id)] = repo
        self._commit(repo, "main", {".gitattributes": Blob(_GITATTRIBUTES, False)}, base={})
        return repo

    def _commit(self, repo: Repo, branch: str, changes: dict, base=None, deleted=()) -> str:
        files = dict(repo.commits[repo.branches[branch]]) if base is None else dict(base)
        for path in deleted:
            files = {p: b for p, b in files.items() if p != path and not p.startswith(path + "/")}
        files.update(changes)
        self._counter += 1
        sha = hashlib.sha1(f"{repo.repo_id}{self._counter}{sorted(files)}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        return sha


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, *args) -> None:
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            with self.hub.lock:
                status, headers, payload = self._route(method, segments, query, body)
        except _HubError as error:
            status, payload = error.status, json.dumps({"error": error.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
        self.hub.log.append((method, url.path))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    # -- routing --

    def _route(self, method, parts, query, body):
        if parts[:2] == ["api", "whoami-v2"]:
            user = self._user(required=True)
            return _json({"type": "user", "name": user, "auth": {"type": "access_token"}})
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body)["content"])
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in _TYPES:
            repo = self._repo(_TYPES[parts[1]], f"{parts[2]}/{parts[3]}")
            return self._repo_api(method, repo, parts[4:], query, body)
        if parts[0] == "lfs-upload" and method == "PUT":
            data = body
            if hashlib.sha256(data).hexdigest() != parts[1]:
                raise _HubError(400, "sha256 mismatch")
            self.hub.lfs[parts[1]] = data
            return _json({})
        kind = "dataset" if parts[0] == "datasets" else "space" if parts[0] == "spaces" else "model"
        rest = parts[1:] if kind != "model" else parts
        if (
            len(rest) >= 2
            and rest[1].endswith(".git")
            and rest[2:] == ["info", "lfs", "objects", "batch"]
        ):
            repo = self._repo(kind, f"{rest[0]}/{rest[1][:-4]}", write=True)
            return self._lfs_batch(json.loads(body))
        if len(rest) >= 5 and rest[2] == "resolve":
            repo = self._repo(kind, f"{rest[0]}/{rest[1]}")
            return self._resolve(repo, rest[3], "/".join(rest[4:]))
        raise _HubError(404, f"no route for {method} /{'/'.join(parts)}")

    @staticmethod
    def _validate_yaml(content: str):
        import yaml

        head = content.split("---", 2)[1] if content.startswith("---") else ""
        try:
            metadata = yaml.safe_load(head) or {}
            if not isinstance(metadata, dict):
                raise yaml.YAMLError("the metadata is not a mapping")
        except yaml.YAMLError as error:
            errors = [{"message": f"YAML: {error}"}]
            return (
                400,
                {"Content-Type": "application/json"},
                json.dumps({"errors": errors}).encode(),
            )
        return _json({"errors": [], "warnings": []})

    def _user(self, required=False) -> str | None:
        header = self.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        user = self.hub.tokens.get(token) if token else None
        if required and user is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, kind: str, repo_id: str, write=False) -> Repo:
        repo = self.hub.repos.get((kind, repo_id))
        user = self._user(required=write)
        if repo is None or (repo.private and user != repo_id.split("/")[0]):
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if write and user != repo_id.split("/")[0]:
            raise _HubError(403, "You don't have the rights to write to this repository")
        return repo

    def _create_repo(self, payload: dict):
        user = self._user(required=True)
        owner = payload.get("organization") or user
        if owner != user:
            raise _HubError(403, f"You don't have the rights to create repos under {owner}")
        kind = payload.get("type") or "model"
        repo_id = f"{owner}/{payload['name']}"
        url = f"{self.hub.url}/{_PREFIX[kind]}{repo_id}"
        if (kind, repo_id) in self.hub.repos:  # the Hub names the repo in its 409 answer
            message = f"You already created this {kind} repo"
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            return 409, headers, json.dumps({"error": message, "url": url}).encode()
        if self.hub.model_names_block_datasets and ("model", repo_id) in self.hub.repos:
            raise _HubError(409, "A repository with this name already exists")
        visibility = payload.get("visibility", "public")
        self.hub._create(kind, repo_id, private=visibility == "private" or payload.get("private"))
        return _json({"url": url, "name": repo_id})

    def _repo_api(self, method, repo: Repo, rest: list[str], query, body):
        if not rest or rest[0] == "revision":
            revision = rest[1] if rest else "main"
            return _json(self._info(repo, self._commit_of(repo, revision)))
        action = rest[0]
        if action == "refs":
            branches = [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                for b, c in repo.branches.items()
            ]
            return _json({"branches": branches, "tags": [], "converts": []})
        if action == "tree":
            commit = self._commit_of(repo, rest[1])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return _json(self._tree(repo.commits[commit], "/".join(rest[2:]), recursive))
        if action == "paths-info" and method == "POST":
            commit = self._commit_of(repo, rest[1])
            wanted = parse_qs(body.decode()).get("paths", [])
            if not wanted and body.startswith(b"{"):
                wanted = json.loads(body).get("paths", [])
            return _json(self._paths_info(repo.commits[commit], wanted))
        if action == "preupload" and method == "POST":
            self._repo(repo.kind, repo.repo_id, write=True)
            files = repo.commits[self._commit_of(repo, rest[1])]
            answer = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs"
                    if f["path"].endswith(_LFS_SUFFIXES) or f["size"] > 10 << 20
                    else "regular",
                    "shouldIgnore": False,
                    "oid": files[f["path"]].git_oid if f["path"] in files else None,
                }
                for f in json.loads(body)["files"]
            ]
            return _json({"files": answer, "commitOid": repo.branches.get("main")})
        if action == "commit" and method == "POST":
            self._repo(repo.kind, repo.repo_id, write=True)
            return self._apply_commit(repo, rest[1], body)
        if action == "branch" and method == "POST":
            self._repo(repo.kind, repo.repo_id, write=True)
            branch = "/".join(rest[1:])
            if branch in repo.branches:
                raise _HubError(409, "Reference already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[branch] = self._commit_of(repo, start)
            return _json({})
        raise _HubError(404, f"no route for {action}")

    def _commit_of(self, repo: Repo, revision: str) -> str:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _info(self, repo: Repo, commit: str) -> dict:
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": path} for path in sorted(repo.commits[commit])],
        }

    @staticmethod
    def _entry(path: str, blob: Blob | None) -> dict:
        if blob is None:
            oid = hashlib.sha1(path.encode()).hexdigest()
            return {"type": "directory", "oid": oid, "size": 0, "path": path}
        entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 132}
        return entry

    def _tree(self, files: dict[str, Blob], folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in files):
            raise _HubError(404, f"{folder} does not exist", "EntryNotFound")
        entries: dict[str, dict] = {}
        for path, blob in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                directory = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(directory, self._entry(directory, None))
            if recursive or len(parts) == 1:
                entries[path] = self._entry(path, blob)
        return list(entries.values())

    def _paths_info(self, files: dict[str, Blob], wanted: list[str]) -> list[dict]:
        found = []
        for path in wanted:
            path = path.strip("/")
            if path in files:
                found.append(self._entry(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                found.append(self._entry(path, None))
        return found

    def _resolve(self, repo: Repo, revision: str, path: str):
        commit = self._commit_of(repo, revision)
        blob = repo.commits[commit].get(path)
        if blob is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        headers["ETag"] = f'"{blob.sha256 if blob.lfs else blob.git_oid}"'
        if blob.lfs:
            headers["X-Linked-Etag"] = headers["ETag"]
            headers["X-Linked-Size"] = str(len(blob.data))
        data, status = blob.data, 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = min(len(data) - 1, int(last)) if first and last else len(data) - 1
            if start >= len(data):
                raise _HubError(416, "Range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        return status, headers, data

    def _lfs_batch(self, payload: dict):
        objects = []
        for item in payload["objects"]:
            entry = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.hub.lfs:
                href = f"{self.hub.url}/lfs-upload/{item['oid']}"
                entry["authenticated"] = True
                entry["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(entry)
        return _json({"transfer": "basic", "objects": objects})

    def _apply_commit(self, repo: Repo, revision: str, body: bytes):
        if revision not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        changes, deleted = {}, []
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                changes[value["path"]] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    raise _HubError(400, f"LFS object {value['oid']} was not uploaded")
                changes[value["path"]] = Blob(self.hub.lfs[value["oid"]], True)
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"].strip("/"))
        sha = self.hub._commit(repo, revision, changes, deleted=deleted)
        url = f"{self.hub.url}/{_PREFIX[repo.kind]}{repo.repo_id}/commit/{sha}"
        return _json({"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})


def _json(payload, status: int = 200):
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def hub_env(hub: FakeHub, home, token: str | None = None, offline: bool = False) -> dict:
    """The environment of a subprocess that talks to ``hub`` only, with its caches in ``home``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_"))
    }
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home / "hf_home"),
        HF_DATASETS_CACHE=str(home / "hf_datasets"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1" if offline else "0",
    )
    if token:
        env["HF_TOKEN"] = token
    return env
