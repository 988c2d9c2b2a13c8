"""A fake Hugging Face Hub on 127.0.0.1: the API that huggingface_hub uses to list and download files.

It serves `GET /api/models/{repo}[/revision/{rev}]` (with `?blobs=true` sizes and LFS sha256s),
`GET /api/models/{repo}/tree/{rev}`, and `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with the headers
huggingface_hub reads (ETag, X-Linked-Etag, X-Linked-Size, X-Repo-Commit, Content-Length) and byte ranges.
Errors carry the hub's `X-Error-Code` (RepoNotFound, EntryNotFound, RevisionNotFound, GatedRepo). A test
can cut a download half way, make the next requests fail, serve content that differs from the published
sha256, gate a repo behind a token, and send LFS files through a redirect to another host ("the CDN").
Every request is logged with its Range and Authorization headers.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


def sha256_hex(data: bytes) -> str:
    """The sha256 of some bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (the ETag of a small, non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeFile:
    """One file of a fake repo; `served` (when set) replaces the bytes actually sent."""

    path: str
    data: bytes
    lfs: bool = True
    served: bytes | None = None
    etag_header: str | None = None  # sent instead of the real ETag (to test a hostile hub)

    @property
    def body(self) -> bytes:
        """The bytes the server sends."""
        return self.data if self.served is None else self.served

    @property
    def etag(self) -> str:
        """What the hub publishes as the file's identity: sha256 for LFS files, the git id otherwise."""
        if self.etag_header is not None:
            return self.etag_header
        return sha256_hex(self.data) if self.lfs else git_blob_id(self.data)


@dataclass
class FakeRepo:
    """A model repository at one commit."""

    repo_id: str
    files: dict[str, FakeFile]
    commit: str = ""
    gated: bool = False

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(self.repo_id.encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the hub received."""

    method: str
    path: str
    range: str | None
    authorization: str | None
    host: str | None


@dataclass
class _Cut:
    at: int
    then_status: int | None
    then_times: int | None  # None: until heal()
    done: bool = False


@dataclass
class FakeHub:
    """The server's state: repos, rules for misbehaving, and the request log."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    token: str = "hf_fake_token"
    redirect_lfs: bool = False  # answer LFS files with a 302 to http://localhost:PORT/cdn/... as the hub does
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _cuts: dict[tuple[str, str], _Cut] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: FakeRepo) -> FakeRepo:
        """Publish a repo."""
        self.repos[repo.repo_id] = repo
        return repo

    def cut(
        self, repo: str, path: str, *, at: int, then_status: int | None = None, then_times: int | None = None
    ) -> None:
        """Drop the connection of the next GET of a file after byte `at` of the file.

        With then_status, later GETs of it answer that status: `then_times` of them, or all until `heal()`.
        """
        self._cuts[(repo, path)] = _Cut(at, then_status, then_times)

    def heal(self) -> None:
        """Serve every file normally again."""
        self._cuts.clear()

    def log(self, method: str | None = None, contains: str = "") -> list[Request]:
        """Logged requests, optionally of one method and whose path contains some text."""
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def clear_log(self) -> None:
        """Forget the requests so far."""
        with self._lock:
            self.requests.clear()

    def start(self) -> FakeHub:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="fake-hf-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextmanager
def running_hub(*repos: FakeRepo, **options: Any) -> Iterator[FakeHub]:
    """A started hub serving these repos; stopped on exit."""
    hub = FakeHub(**options)
    for repo in repos:
        hub.add(repo)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (a connection there is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_CDN = re.compile(r"^/cdn/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    """Speaks the subset of the hub's HTTP API described in the module docstring."""

    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        """Stay quiet."""

    def do_GET(self) -> None:
        """Answer a GET."""
        self._route(body=True)

    def do_HEAD(self) -> None:
        """Answer a HEAD."""
        self._route(body=False)

    # -- routing ----------------------------------------------------------------------------------------

    def _route(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.hub._lock:
            self.hub.requests.append(
                Request(
                    self.command,
                    path,
                    self.headers.get("Range"),
                    self.headers.get("Authorization"),
                    self.headers.get("Host"),
                )
            )
        if match := _API.match(path):
            self._api(match.group(1), match.group(2), match.group(3), body=body)
        elif match := _RESOLVE.match(path):
            self._resolve(match.group(1), match.group(2), match.group(3), body=body)
        elif match := _CDN.match(path):
            self._cdn(match.group(1), match.group(2), match.group(3), body=body)
        else:
            self._error(404, "NotFound", "no such route", body=body)

    def _repo(self, repo_id: str, revision: str | None, *, body: bool) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", body=body)
            return None
        if revision is not None and revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", "Invalid rev id", body=body, commit=None)
            return None
        return repo

    # -- /api/models ------------------------------------------------------------------------------------

    def _api(self, repo_id: str, kind: str | None, revision: str | None, *, body: bool) -> None:
        repo = self._repo(repo_id, revision, body=body)
        if repo is None:
            return
        if kind == "tree":
            entries = [self._tree_entry(f) for f in sorted(repo.files.values(), key=lambda f: f.path)]
            self._json(entries, body=body)
            return
        info = {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": repo.commit,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": ["gguf"],
            "library_name": "gguf",
            "siblings": [self._sibling(f) for f in sorted(repo.files.values(), key=lambda f: f.path)],
        }
        self._json(info, body=body)

    @staticmethod
    def _sibling(f: FakeFile) -> dict[str, Any]:
        sibling: dict[str, Any] = {"rfilename": f.path, "size": len(f.data), "blobId": git_blob_id(f.data)}
        if f.lfs:
            sibling["lfs"] = {"sha256": sha256_hex(f.data), "size": len(f.data), "pointerSize": 134}
        return sibling

    @staticmethod
    def _tree_entry(f: FakeFile) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": git_blob_id(f.data),
            "size": len(f.data),
            "path": f.path,
        }
        if f.lfs:
            entry["lfs"] = {"oid": sha256_hex(f.data), "size": len(f.data), "pointerSize": 134}
        return entry

    # -- /{repo}/resolve/{revision}/{file} --------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str, *, body: bool) -> None:
        repo = self._repo(repo_id, revision, body=body)
        if repo is None:
            return
        if repo.gated and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            status = 403 if self.headers.get("Authorization") else 401
            self._error(
                status, "GatedRepo", "Access to this model is restricted", body=body, commit=repo.commit
            )
            return
        f = repo.files.get(path)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", body=body, commit=repo.commit)
            return
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{f.etag}"'}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.etag}"', "X-Linked-Size": str(len(f.data))}
        if f.lfs and self.hub.redirect_lfs:
            location = f"http://localhost:{self.hub.port}/cdn/{repo.repo_id}/{repo.commit}/{f.path}"
            self.send_response(302)
            for key, value in {**headers, "Location": location, "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self._file(repo, f, headers, body=body)

    def _cdn(self, repo_id: str, commit: str, path: str, *, body: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        f = repo.files.get(path) if repo is not None and repo.commit == commit else None
        if repo is None or f is None:
            self._error(404, "NotFound", "no such object", body=body)
            return
        self._file(repo, f, {"ETag": f'"{f.etag}"'}, body=body)

    def _file(self, repo: FakeRepo, f: FakeFile, headers: dict[str, str], *, body: bool) -> None:
        """Send a file (or the requested range of it), honouring any cut rule."""
        data = f.body
        cut = self.hub._cuts.get((repo.repo_id, f.path)) if body else None
        if cut is not None and cut.done and cut.then_status is not None and cut.then_times != 0:
            if cut.then_times is not None:
                cut.then_times -= 1
            self._error(cut.then_status, "ServerError", "the server is having a bad day", body=body)
            return
        start, end = 0, len(data) - 1
        status = 200
        if (requested := self.headers.get("Range")) is not None:
            match = _RANGE.match(requested)
            if match is None or int(match.group(1)) >= len(data):
                self._error(416, "RangeNotSatisfiable", "bad range", body=body)
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), end) if match.group(2) else end
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        self.send_response(status)
        for key, value in {
            **headers,
            "Content-Length": str(end - start + 1),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }.items():
            self.send_header(key, value)
        self.end_headers()
        if not body:
            return
        if cut is not None and not cut.done:
            cut.done = True
            self.wfile.write(data[start : max(start, cut.at)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data[start : end + 1])

    # -- answers ----------------------------------------------------------------------------------------

    def _json(self, value: Any, *, body: bool) -> None:
        payload = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str, *, body: bool, commit: str | None = None) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)
