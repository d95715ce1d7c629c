"""An in-memory stand-in for the Hugging Face Hub, served over real HTTP on 127.0.0.1.

It answers only the calls ``huggingface_hub`` makes to create a model repo, commit small
files inline (``preupload`` always answers ``uploadMode: regular``, so nothing goes through
LFS or Xet), describe a repo or revision, list its tree and resolve (HEAD/GET) a file.
Unknown repos, revisions and files get a 404 with the Hub's ``X-Error-Code`` header, which is
what ``huggingface_hub`` turns into ``RepositoryNotFoundError`` and friends.

Revisions: ``main`` (the newest commit) and any commit sha (40 hex digits).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's bytes (what the Hub reports for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """A model repo: its commits oldest first, each a (sha, {path: bytes}) snapshot."""

    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)

    def resolve(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main":
            return self.commits[-1] if self.commits else None
        return next((c for c in self.commits if c[0] == revision), None)


class HubStandIn:
    """The stand-in server; use as a context manager. ``requests`` logs (method, path)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()

    def commit(self, repo_id: str, files: dict[str, bytes], parent: str | None = None) -> str:
        """Add a commit holding ``files`` over ``parent``'s (default: the newest); its sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo())
            base = repo.resolve(parent or "main")
            snapshot = {**(base[1] if base else {}), **files}
            h = hashlib.sha1(f"{repo_id}\n{len(repo.commits)}\n".encode())
            for path in sorted(snapshot):
                h.update(f"{path}\0{git_blob_oid(snapshot[path])}\n".encode())
            sha = h.hexdigest()
            repo.commits.append((sha, snapshot))
            return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        found = self.repos[repo_id].resolve(revision)
        assert found is not None, f"{repo_id} has no revision {revision}"
        return found[1]


class _Error(Exception):
    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _handler_for(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        # -- plumbing -----------------------------------------------------------------
        def _dispatch(self, method: str) -> None:
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append((method, path))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            segs = [unquote(s) for s in path.strip("/").split("/")]
            try:
                self._route(method, segs, body)
            except _Error as err:
                headers = {**err.headers, **({"X-Error-Code": err.code} if err.code else {}),
                           "X-Error-Message": err.message}
                self._send(err.status, {"error": err.message}, headers)

        def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None,
                  raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            if raw is None:
                self.send_header("Content-Type", "application/json")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _snapshot(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
            repo = hub.repos.get(repo_id)
            if repo is None:
                raise _Error(404, "Repository not found", "RepoNotFound")
            found = repo.resolve(revision)
            if found is None:
                raise _Error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return found

        # -- routes -------------------------------------------------------------------
        def _route(self, method: str, segs: list[str], body: bytes) -> None:
            if method == "POST" and segs == ["api", "validate-yaml"]:
                return self._send(200, {"errors": [], "warnings": []})
            if method == "POST" and segs == ["api", "repos", "create"]:
                return self._create(json.loads(body))
            if len(segs) >= 4 and segs[:2] == ["api", "models"]:
                return self._api(method, f"{segs[2]}/{segs[3]}", segs[4:], body)
            if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
            raise _Error(404, f"no route {method} /{'/'.join(segs)}")

        def _create(self, payload: dict[str, Any]) -> None:
            repo_id = f"{payload['organization']}/{payload['name']}"
            url = f"{hub.url}/{repo_id}"
            with hub.lock:
                if repo_id in hub.repos:
                    return self._send(409, {"error": "You already created this model repo",
                                            "url": url})
                hub.repos[repo_id] = Repo()
            hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"})
            self._send(200, {"url": url, "name": repo_id})

        def _api(self, method: str, repo_id: str, rest: list[str], body: bytes) -> None:
            action, revision = (rest[0], rest[1]) if len(rest) >= 2 else ("revision", "main")
            sha, files = self._snapshot(repo_id, revision)
            if method == "GET" and action == "revision":
                return self._send(200, {
                    "id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                    "siblings": [{"rfilename": p} for p in sorted(files)]})
            if method == "GET" and action == "tree":
                return self._send(200, [{"type": "file", "path": p, "size": len(files[p]),
                                         "oid": git_blob_oid(files[p])} for p in sorted(files)])
            if method == "POST" and action == "preupload":
                wanted = json.loads(body)["files"]
                return self._send(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": git_blob_oid(files[f["path"]]) if f["path"] in files else None}
                    for f in wanted]})
            if method == "POST" and action == "commit":
                return self._commit(repo_id, sha, body)
            raise _Error(404, f"no route {method} {action}")

        def _commit(self, repo_id: str, parent: str, body: bytes) -> None:
            added: dict[str, bytes] = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file" and item["value"].get("encoding") == "base64":
                    added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    raise _Error(400, f"this stand-in only takes inline files, not {item['key']}")
            sha = hub.commit(repo_id, added, parent=parent)
            self._send(200, {"success": True, "commitOid": sha, "pullRequestUrl": None,
                             "commitUrl": f"{hub.url}/{repo_id}/commit/{sha}"})

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            sha, files = self._snapshot(repo_id, revision)
            if filename not in files:
                raise _Error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            data = files[filename]
            self._send(200, raw=data, headers={
                "Content-Type": "application/octet-stream", "X-Repo-Commit": sha,
                "ETag": f'"{git_blob_oid(data)}"'})

    return Handler


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: str) -> None:
    """Send every ``huggingface_hub`` call to ``endpoint`` with a dummy token and a cache
    under ``home``. Patches the module constants that are read at call time (the endpoint
    and the resolve-URL template are fixed when ``huggingface_hub`` is imported)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "dummy")
    monkeypatch.setenv("HF_HOME", home)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", home)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", f"{home}/hub")
    monkeypatch.setattr(constants, "HF_XET_CACHE", f"{home}/xet")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", f"{home}/token")
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", f"{home}/stored_tokens")
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", f"{home}/.agent_harnesses.json")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
