"""A small local HTTP stand-in for the Hugging Face Hub endpoints that huggingface_hub calls.

The tests drive huggingface_hub's real upload and download code (create_repo, upload_folder,
snapshot_download, hf_hub_download) against this server instead of the network. It keeps
repositories in memory as git-like commits so a test can assert exactly what was uploaded.

Routes, as huggingface_hub 2.4 calls them:

- ``POST /api/repos/create``                               create a repo (409 when it exists)
- ``POST /api/validate-yaml``                              card metadata check (``create_commit`` path)
- ``POST /api/models/{repo}/branch/{branch}``              create a branch (409 when it exists)
- ``POST /api/models/{repo}/preupload/{rev}``              upload mode per file: always "regular",
                                                           so contents travel inline in the commit
                                                           and no LFS/Xet storage is needed
- ``POST /api/models/{repo}/commit/{rev}``                 NDJSON commit (header, file, deletedFile)
- ``GET  /api/models/{repo}[/revision/{rev}]``             repo info (commit sha, file list)
- ``GET  /api/models/{repo}/tree/{rev}``                   recursive file listing (snapshot_download)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``                file metadata and bytes (hf_hub_download)

Every request is recorded (method, path, headers) so tests can check what the client sent.
With ``required_token`` set, requests without that bearer token get 401 as on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REQUEST_TIMEOUT_S = 10.0


def git_blob_sha1(content: bytes) -> str:
    """The id git gives a file's content (what the Hub returns as a regular file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # oid -> files
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit oid
    commit_messages: list[str] = field(default_factory=list)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None

    def files(self, revision: str = "main") -> dict[str, bytes]:
        oid = self.resolve(revision)
        if oid is None:
            raise KeyError(f"{self.repo_id} has no revision {revision!r}")
        return self.commits[oid]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class HubStandIn:
    """In-memory Hub on 127.0.0.1 (a free port), served from a daemon thread."""

    def __init__(self, required_token: str | None = None) -> None:
        self.required_token = required_token  # when set, other credentials get 401 like the Hub's
        self.repos: dict[str, Repo] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        stand_in = self

        class Handler(_HubHandler):
            hub = stand_in

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.timeout = REQUEST_TIMEOUT_S
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hub-stand-in", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=REQUEST_TIMEOUT_S)

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- repository operations (called by the handler under the lock) ------------------

    def create_repo(self, repo_id: str, private: bool) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            repo = Repo(repo_id=repo_id, private=private)
            initial = self._new_oid(repo_id, "initial", {})
            repo.commits[initial] = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            repo.branches["main"] = initial
            self.repos[repo_id] = repo
            return True

    def commit(self, repo: Repo, revision: str, message: str, operations: list[dict]) -> str:
        with self._lock:
            if revision not in repo.branches:  # commits go to branches only
                raise KeyError(revision)
            parent = repo.branches[revision]
            files = dict(repo.commits[parent])
            for operation in operations:
                value = operation["value"]
                if operation["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif operation["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif operation["key"] == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: data for path, data in files.items() if not path.startswith(prefix)}
                else:
                    raise ValueError(f"stand-in does not support commit operation {operation['key']!r}")
            oid = self._new_oid(repo.repo_id, message, files, parent)
            repo.commits[oid] = files
            repo.branches[revision] = oid
            repo.commit_messages.append(message)
            return oid

    @staticmethod
    def _new_oid(repo_id: str, message: str, files: dict[str, bytes], parent: str = "") -> str:
        digest = hashlib.sha1(f"{repo_id}\n{parent}\n{message}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + files[path])
        return digest.hexdigest()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def all_stored_bytes(self) -> bytes:
        """Every byte of every stored file in every commit (for "no secret anywhere" checks)."""
        return b"\n".join(
            data for repo in self.repos.values() for files in repo.commits.values() for data in files.values()
        )


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubStandIn
    timeout = REQUEST_TIMEOUT_S  # per-connection socket timeout: a stuck client cannot pin a thread

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        return

    # -- plumbing --------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(
        self,
        status: int,
        payload: object = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        if body is None:
            body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._reply(status, {"error": message}, headers=headers)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = self._read_body() if self.command == "POST" else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.hub.record(RecordedRequest(self.command, self.path, headers, body))
        path = unquote(url.path)
        query = parse_qs(url.query)
        if (
            self.hub.required_token is not None
            and headers.get("authorization") != f"Bearer {self.hub.required_token}"
        ):
            self._error(401, "Invalid credentials in Authorization header")
            return
        for route in _ROUTES:
            if route.method == self.command and (match := route.match(path)) is not None:
                route.handler(self, match, query, body)
                return
        self._error(404, f"stand-in has no route {self.command} {path}")

    do_GET = do_POST = do_HEAD = _handle

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", code="RepoNotFound")
        return repo

    # -- routes ----------------------------------------------------------------------------

    def create_repo(self, match: dict, query: dict, body: bytes) -> None:
        payload = json.loads(body)
        repo_id = (
            f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        )
        created = self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        if not created:  # the Hub's 409 body still carries the url (create_repo(exist_ok=True) reads it)
            self._reply(
                409, {"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"}
            )
            return
        self._reply(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def validate_yaml(self, match: dict, query: dict, body: bytes) -> None:
        content = json.loads(body)["content"]
        errors = []
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---")[1])
            except yaml.YAMLError as error:
                errors.append({"message": str(error)})
        self._reply(400 if errors else 200, {"errors": errors, "warnings": []})

    def create_branch(self, match: dict, query: dict, body: bytes) -> None:
        repo = self._repo(match["repo"])
        if repo is None:
            return
        if match["rev"] in repo.branches:
            self._error(409, f"Branch {match['rev']} already exists")
            return
        repo.branches[match["rev"]] = repo.branches["main"]
        self._reply(200, {})

    def preupload(self, match: dict, query: dict, body: bytes) -> None:
        repo = self._repo(match["repo"])
        if repo is None:
            return
        files = json.loads(body)["files"]
        self._reply(
            200,
            {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
        )

    def commit(self, match: dict, query: dict, body: bytes) -> None:
        repo = self._repo(match["repo"])
        if repo is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        operations = [line for line in lines if line["key"] != "header"]
        try:
            oid = self.hub.commit(repo, match["rev"], header["summary"], operations)
        except KeyError:
            self._error(404, f"Revision {match['rev']} not found", code="RevisionNotFound")
            return
        self._reply(
            200,
            {
                "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            },
        )

    def repo_info(self, match: dict, query: dict, body: bytes) -> None:
        repo = self._repo(match["repo"])
        if repo is None:
            return
        oid = repo.resolve(match.get("rev") or "main")
        if oid is None:
            self._error(404, f"Revision {match['rev']} not found", code="RevisionNotFound")
            return
        siblings = [{"rfilename": path} for path in sorted(repo.commits[oid])]
        self._reply(
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": oid,
                "private": repo.private,
                "siblings": siblings,
            },
        )

    def tree(self, match: dict, query: dict, body: bytes) -> None:
        repo = self._repo(match["repo"])
        if repo is None:
            return
        oid = repo.resolve(match["rev"])
        if oid is None:
            self._error(404, f"Revision {match['rev']} not found", code="RevisionNotFound")
            return
        entries = [
            {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
            for path, data in sorted(repo.commits[oid].items())
        ]
        self._reply(200, entries)

    def resolve(self, match: dict, query: dict, body: bytes) -> None:
        repo = self._repo(match["repo"])
        if repo is None:
            return
        oid = repo.resolve(match["rev"])
        if oid is None:
            self._error(404, f"Revision {match['rev']} not found", code="RevisionNotFound")
            return
        data = repo.commits[oid].get(match["path"])
        if data is None:
            self._error(404, f"Entry {match['path']} not found", code="EntryNotFound")
            return
        etag = f'"{git_blob_sha1(data)}"'
        self._reply(
            200,
            headers={"X-Repo-Commit": oid, "ETag": etag, "Content-Type": "application/octet-stream"},
            body=data,
        )


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: str  # segments; {repo} takes two segments, {path} takes the rest
    handler: object

    def match(self, path: str) -> dict | None:
        parts = path.strip("/").split("/")
        want = self.pattern.strip("/").split("/")
        found: dict[str, str] = {}
        i = 0
        for j, segment in enumerate(want):
            if segment == "{repo}":
                if i + 2 > len(parts):
                    return None
                found["repo"] = "/".join(parts[i : i + 2])
                i += 2
            elif segment == "{path}":
                if j != len(want) - 1 or i >= len(parts):
                    return None
                found["path"] = "/".join(parts[i:])
                i = len(parts)
            elif segment.startswith("{"):
                if i >= len(parts):
                    return None
                found[segment.strip("{}")] = parts[i]
                i += 1
            else:
                if i >= len(parts) or parts[i] != segment:
                    return None
                i += 1
        return found if i == len(parts) else None


_ROUTES = [
    _Route("POST", "/api/repos/create", _HubHandler.create_repo),
    _Route("POST", "/api/validate-yaml", _HubHandler.validate_yaml),
    _Route("POST", "/api/models/{repo}/branch/{rev}", _HubHandler.create_branch),
    _Route("POST", "/api/models/{repo}/preupload/{rev}", _HubHandler.preupload),
    _Route("POST", "/api/models/{repo}/commit/{rev}", _HubHandler.commit),
    _Route("GET", "/api/models/{repo}/revision/{rev}", _HubHandler.repo_info),
    _Route("GET", "/api/models/{repo}/tree/{rev}", _HubHandler.tree),
    _Route("GET", "/api/models/{repo}", _HubHandler.repo_info),
    _Route("HEAD", "/{repo}/resolve/{rev}/{path}", _HubHandler.resolve),
    _Route("GET", "/{repo}/resolve/{rev}/{path}", _HubHandler.resolve),
]
