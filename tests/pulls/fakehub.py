"""A local server speaking the parts of the Hugging Face Hub and Ollama registry HTTP APIs that pulls use,
serving real files from a directory. Shapes follow the real services:

- Hub: ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true`` adds each sibling's ``size``,
  ``blobId`` and ``lfs: {sha256, size, pointerSize}``), ``HEAD/GET /{repo}/resolve/{rev}/{file}`` answering
  302 to a CDN path with ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size``, and the CDN serving
  ``Range`` requests (206, ``Content-Range``). Errors carry ``X-Error-Code`` (RepoNotFound, GatedRepo)
  as huggingface_hub expects; a private repo answers 401 without the right Bearer token.
- Ollama registry: ``GET /v2/{ns}/{name}/manifests/{tag}`` (Docker manifest v2 JSON) and
  ``GET /v2/{ns}/{name}/blobs/{digest}`` redirecting (307) to a CDN path with ranges.

Knobs for tests: ``cut_after`` (end a transfer abruptly after N bytes, once), ``corrupt`` (flip a byte in
what is served), ``ignore_range``, ``file_status`` (a listed file whose resolve answers that status, as
the Hub's EntryNotFound 404 or a 5xx); ``served`` counts bytes per file and ``ranges`` records Range
headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

COMMIT = "3f1c2a9b7d5e4f60718293a4b5c6d7e8f9012345"


@dataclass
class Repo:
    files: dict[str, Path]  # name in the repo -> file
    private_token: str | None = None
    gated: bool = False


@dataclass
class OllamaEntry:
    manifest: bytes
    blobs: dict[str, bytes | Path]  # digest -> content


@dataclass
class Knobs:
    cut_after: int | None = None  # bytes; applies to the next CDN transfer only
    corrupt: bool = False
    ignore_range: bool = False
    bytes_per_s: float | None = None  # slow transfers down (to kill a pull in the middle)
    file_status: dict[str, int] = field(default_factory=dict)  # file name -> the status resolve answers
    served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ranges: list[tuple[str, str | None]] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.ollama: dict[str, OllamaEntry] = {}  # "ns/name:tag"
        self.knobs = Knobs()
        self._sha: dict[Path, str] = {}
        self.app = self._build()
        self.url = ""

    def add_repo(self, repo: str, files: dict[str, Path], **kwargs: Any) -> None:
        self.repos[repo] = Repo(files, **kwargs)

    def add_ollama(self, name: str, gguf: Path, template: str, params: dict[str, Any], license: str) -> None:
        """``ns/name:tag`` with the layers Ollama's library models have."""
        layers, blobs = [], {}
        model_digest = "sha256:" + self.sha(gguf)
        blobs[model_digest] = gguf
        layers.append({"mediaType": "application/vnd.ollama.image.model", "digest": model_digest,
                       "size": gguf.stat().st_size})  # fmt: skip
        for media, text in (("template", template), ("license", license), ("params", json.dumps(params))):
            data = text.encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            layers.append({"mediaType": f"application/vnd.ollama.image.{media}", "digest": digest,
                           "size": len(data)})  # fmt: skip
        config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "Q4_1",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        blobs[config_digest] = config
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": layers,
        }  # fmt: skip
        self.ollama[name] = OllamaEntry(json.dumps(manifest).encode(), blobs)

    def sha(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = sha256_of(path)
        return self._sha[path]

    # -- the app ----------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()
        hub = self

        def repo_or_error(repo: str, request: Request) -> Repo | Response:
            entry = hub.repos.get(repo)
            auth = request.headers.get("authorization", "")
            if entry is None or (entry.private_token and auth != f"Bearer {entry.private_token}"):
                status = 401 if entry is not None else 404
                return JSONResponse({"error": "Repository Not Found"}, status_code=status,
                                    headers={"X-Error-Code": "RepoNotFound",
                                             "X-Error-Message": "Repository not found"})  # fmt: skip
            if entry.gated and not auth:
                return JSONResponse({"error": "Access to this repo is restricted"}, status_code=401,
                                    headers={"X-Error-Code": "GatedRepo"})  # fmt: skip
            return entry

        @app.get("/api/models/{owner}/{name}")
        @app.get("/api/models/{owner}/{name}/revision/{rev}")
        async def model_info(owner: str, name: str, request: Request, rev: str = "main") -> Response:
            repo = f"{owner}/{name}"
            entry = repo_or_error(repo, request)
            if isinstance(entry, Response):
                return entry
            blobs = request.query_params.get("blobs") in ("True", "true", "1")
            siblings = []
            for filename, path in sorted(entry.files.items()):
                sibling: dict[str, Any] = {"rfilename": filename}
                if blobs:
                    size = path.stat().st_size
                    sha = hub.sha(path)
                    sibling.update(size=size, blobId=sha[:40],
                                   lfs={"sha256": sha, "size": size, "pointerSize": 135})  # fmt: skip
                siblings.append(sibling)
            return JSONResponse({"_id": "66f0c0ffee", "id": repo, "modelId": repo, "author": owner,
                                 "sha": COMMIT, "private": bool(entry.private_token), "gated": entry.gated,
                                 "disabled": False, "tags": ["gguf"], "siblings": siblings,
                                 "lastModified": "2026-11-01T00:00:00.000Z"})  # fmt: skip

        @app.api_route("/{owner}/{name}/resolve/{rev}/{filename:path}", methods=["GET", "HEAD"])
        async def resolve(owner: str, name: str, rev: str, filename: str, request: Request) -> Response:
            entry = repo_or_error(f"{owner}/{name}", request)
            if isinstance(entry, Response):
                return entry
            path = entry.files.get(filename)
            status = 404 if path is None else hub.knobs.file_status.get(filename)
            if status == 404:
                return JSONResponse({"error": "Entry not found"}, status_code=404,
                                    headers={"X-Error-Code": "EntryNotFound"})  # fmt: skip
            if path is None or status is not None:
                return JSONResponse({"error": "Internal Error"}, status_code=status or 500)
            sha = hub.sha(path)
            size = str(path.stat().st_size)
            # To another host name, as the Hub's redirect to its CDN is (huggingface_hub reads a file's
            # metadata from this response and does not follow it off the Hub; Authorization stays here).
            port = request.url.port
            cdn = f"http://localhost:{port}/cdn/{owner}/{name}/{filename}"
            return RedirectResponse(cdn, status_code=302, headers={
                "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": size,
                "ETag": f'"{sha[:40]}"'})  # fmt: skip

        @app.api_route("/cdn/{owner}/{name}/{filename:path}", methods=["GET", "HEAD"])
        async def cdn(owner: str, name: str, filename: str, request: Request) -> Response:
            entry = hub.repos[f"{owner}/{name}"]
            return hub._serve(entry.files[filename], request)

        @app.get("/v2/{ns}/{name}/manifests/{tag}")
        async def manifest(ns: str, name: str, tag: str) -> Response:
            entry = hub.ollama.get(f"{ns}/{name}:{tag}")
            if entry is None:
                return JSONResponse({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                    status_code=404)  # fmt: skip
            return Response(entry.manifest, media_type="application/vnd.docker.distribution.manifest.v2+json")

        @app.get("/v2/{ns}/{name}/blobs/{digest}")
        async def blob(ns: str, name: str, digest: str) -> Response:
            for entry in hub.ollama.values():
                if digest in entry.blobs:
                    return RedirectResponse(f"/cdn-blobs/{digest}", status_code=307)
            return JSONResponse({"errors": [{"code": "BLOB_UNKNOWN"}]}, status_code=404)

        @app.get("/cdn-blobs/{digest}")
        async def cdn_blob(digest: str, request: Request) -> Response:
            content = next(e.blobs[digest] for e in hub.ollama.values() if digest in e.blobs)
            if isinstance(content, Path):
                return hub._serve(content, request)
            return Response(content)

        return app

    def _serve(self, path: Path, request: Request) -> Response:
        size = path.stat().st_size
        header = request.headers.get("range")
        self.knobs.ranges.append((path.name, header))
        start, end, status = 0, size - 1, 200
        if header and not self.knobs.ignore_range and header.startswith("bytes="):
            first, _, last = header[6:].partition("-")
            start, end, status = int(first), min(int(last) if last else size - 1, size - 1), 206
            if start >= size:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        etag = f'"{self.sha(path)}"'
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1), "ETag": etag}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        cut, self.knobs.cut_after = self.knobs.cut_after, None
        knobs = self.knobs

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            with path.open("rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(256 * 1024, left))
                    if knobs.corrupt and sent == 0:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    if cut is not None and sent + len(chunk) > cut:
                        chunk = chunk[: max(cut - sent, 0)]
                        knobs.served[path.name] += len(chunk)
                        yield chunk
                        raise ConnectionAbortedError("simulated network drop")
                    left -= len(chunk)
                    sent += len(chunk)
                    knobs.served[path.name] += len(chunk)
                    yield chunk
                    if knobs.bytes_per_s:
                        await asyncio.sleep(len(chunk) / knobs.bytes_per_s)

        return StreamingResponse(body(), status_code=status, headers=headers,
                                 media_type="application/octet-stream")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run ``hub`` on a free loopback port in a thread for the duration of the generator."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hub.app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    hub.url = f"http://127.0.0.1:{port}"
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(10)
