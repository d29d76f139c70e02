"""Pulls over HTTP, for the TUI and scripts: `POST /appliance/v1/models/pull` streams progress as NDJSON
(Ollama's /api/pull style), `GET /appliance/v1/models/pulls` lists pulls, `DELETE
/appliance/v1/models/{name}` removes a stored model.

A pull runs in its own thread on the daemon, not in the request: a client that goes away (a TUI leaving
its screen) leaves it running, and a second request for the same model follows the same pull.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from appliance.errors import InvalidRequest, ModelNotFound
from appliance.inventory import store
from appliance.manager import ModelManager
from appliance.pulls import PullError, PullErrorKind, PullEvent, pull
from models.catalog import from_manifest
from models.store import StoreError
from server.compat_schemas import PullRequest
from server.openapi import BODY, PROTECTED, doc
from server.response_schemas import Pulls, Removed, from_dataclass
from server.schemas import read_body

router = APIRouter(prefix="/appliance/v1")
# Built from PullEvent, which writes the lines: the two cannot drift apart.
PullEventOut = from_dataclass(
    PullEvent, "PullEventOut", "One progress line of a pull (NDJSON), or the last one when not streamed."
)


class PullJob:
    """One pull in a thread; its events are kept and fanned out to whoever follows it."""

    def __init__(self, ref: str, loop: asyncio.AbstractEventLoop) -> None:
        self.ref = ref
        self.started_at = time.time()
        self.events: list[dict[str, Any]] = []
        self.state = "running"  # running | done | failed
        self._loop = loop
        self._followers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._lock = threading.Lock()

    def emit(self, event: PullEvent) -> None:  # on the pull's thread
        self._publish(event.to_json())

    def finish(self, state: str, last: dict[str, Any] | None = None) -> None:
        if last is not None:
            self._publish(last)
        with self._lock:
            self.state = state
            followers = list(self._followers)
        for queue in followers:
            self._loop.call_soon_threadsafe(queue.put_nowait, None)

    def _publish(self, data: dict[str, Any]) -> None:
        with self._lock:
            # Keep what a late follower needs: every status line, and only the latest progress.
            if (
                data.get("status") == "downloading"
                and self.events
                and self.events[-1].get("status") == "downloading"
            ):
                self.events[-1] = data
            else:
                self.events.append(data)
            followers = list(self._followers)
        for queue in followers:
            self._loop.call_soon_threadsafe(queue.put_nowait, data)

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        with self._lock:
            history = list(self.events)
            running = self.state == "running"
            if running:
                self._followers.add(queue)
        try:
            for data in history:
                yield data
            while running:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            with self._lock:
                self._followers.discard(queue)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            last = self.events[-1] if self.events else None
            return {"model": self.ref, "state": self.state, "started_at": int(self.started_at), "last": last}


def _jobs(request: Request) -> dict[str, PullJob]:
    jobs: dict[str, PullJob] | None = getattr(request.app.state, "pulls", None)
    if jobs is None:
        jobs = request.app.state.pulls = {}
    return jobs


def start_pull(request: Request, ref: str) -> PullJob:
    """The running pull of ``ref``, or a new one (also used by Ollama's /api/pull)."""
    jobs = _jobs(request)
    job = jobs.get(ref)
    if job is not None and job.state == "running":
        return job
    job = jobs[ref] = PullJob(ref, asyncio.get_running_loop())
    manager: ModelManager = request.app.state.manager
    settings, hardware = request.app.state.settings, request.app.state.hardware
    loop = asyncio.get_running_loop()

    def run() -> None:
        try:
            target = store(settings)
            manifest = pull(ref, settings, hardware, target, job.emit)
        except PullError as exc:
            job.finish("failed", PullEvent.failed(exc).to_json())
            return
        except Exception as exc:  # a bug: report it on the stream rather than leave followers hanging
            job.finish("failed", PullEvent.failed(PullError(f"pull failed: {exc}")).to_json())
            return
        loop.call_soon_threadsafe(manager.add_model, from_manifest(target, manifest))
        job.finish("done")

    threading.Thread(target=run, name=f"pull {ref}", daemon=True).start()
    return job


@router.post(
    "/models/pull", **doc("openai", body=PullRequest, ok=PullEventOut, stream="ndjson", errors=(*BODY, 404))
)
async def pull_model(request: Request) -> Response:
    """Body ``{"model": "owner/name[:QUANT]" | "ollama:NAME[:TAG]", "stream": true}``."""
    body = await read_body(request, PullRequest)
    ref, stream = body.model, body.stream
    job = start_pull(request, ref)
    if stream:

        async def lines() -> AsyncIterator[bytes]:
            async for data in job.follow():
                yield json.dumps(data).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    last: dict[str, Any] = {}
    async for data in job.follow():
        last = data
    if last.get("status") == "error":
        failure = ModelNotFound if failed_kind(last) == "not_found" else InvalidRequest
        raise failure(last["error"], param="model")
    return JSONResponse(last)


def failed_kind(last: dict[str, Any]) -> PullErrorKind | None:
    """The kind of failure the last event of a pull reports (PullEvent's ``kind``), None for a pull that
    did not fail; the pull APIs choose their status by it."""
    if last.get("status") != "error":
        return None
    return "not_found" if last.get("kind") == "not_found" else "failed"


@router.get("/models/pulls", **doc("openai", ok=Pulls))
async def pulls(request: Request) -> dict[str, Any]:
    return {"pulls": [job.describe() for job in _jobs(request).values()]}


@router.delete("/models/{name:path}", **doc("openai", ok=Removed, errors=(*PROTECTED, 400, 404)))
async def remove_model(name: str, request: Request) -> dict[str, Any]:
    """Remove a stored model (unloading it first). Models of other tools and the embedded one stay."""
    return {"model": await remove_stored(request.app.state.manager, name), "removed": True}


async def remove_stored(manager: ModelManager, name: str) -> str:
    """Unload and delete the stored model ``name``; its id. ModelNotFound, or InvalidRequest for a model
    that is not the store's to delete."""
    model = manager.resolve(name)
    stored = store(manager.settings)
    if model.external or model.source in ("embedded", "argument"):
        raise InvalidRequest(f"{model.id} is not in the store ({model.source}); it cannot be removed here")
    await manager.remove_model(model.id)
    try:
        if stored.get(model.id) is not None:
            stored.remove(model.id)
        else:
            model.path.unlink(missing_ok=True)
    except (StoreError, OSError) as exc:
        raise InvalidRequest(f"cannot remove {model.id}: {exc}") from None
    return model.id
