"""The FastAPI application: state built in the lifespan, thin routers, one error handler."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config import Settings
from appliance.hardware.profile import HardwareProfile
from appliance.manager import ModelManager
from appliance.remotes.pool import RemotePool
from appliance.units import parse_size
from server import openapi
from server.anthropic_routes import router as anthropic_router
from server.disconnects import CancelOnDisconnect
from server.errors import install_error_handlers
from server.lifecycle import DrainGuard, Lifecycle
from server.llama_server_routes import router as llama_server_router
from server.metrics import Metrics, RequestCounter
from server.ollama_create_routes import router as ollama_create_router
from server.ollama_routes import router as ollama_router
from server.openai_routes import router as openai_router
from server.pull_routes import router as pull_router
from server.record import record_of
from server.reload import router as reload_router
from server.rerank_routes import router as rerank_router
from server.responses_routes import router as responses_router
from server.responses_store import ResponseStore
from server.security import Access, Guard
from server.status_routes import router as status_router

log = logging.getLogger(__name__)


class BackendHeader:
    """Names who served each response (`X-Appliance-Backend: local | remote:NAME`), and why a request was
    escalated (`X-Appliance-Escalation-Reason`), from the request's record."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                record = record_of(scope)
                headers = [(b"x-appliance-backend", record.backend.encode())]
                if record.backend != "local" and record.reason:
                    headers.append((b"x-appliance-escalation-reason", record.reason.encode()))
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(settings: Settings, manager: ModelManager, hardware: HardwareProfile | None = None) -> FastAPI:
    """The daemon's app. The lifespan starts loading the default model and closes every model at
    shutdown."""

    remotes = RemotePool(settings)
    lifecycle = Lifecycle(manager)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        await remotes.start()
        try:
            yield
        finally:
            await lifecycle.drained()
            await remotes.close()
            manager.close()

    app = FastAPI(title="llm-appliance", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.manager = manager
    app.state.remotes = remotes
    app.state.started_at = int(time.time())
    app.state.hardware = hardware
    app.state.metrics = metrics = Metrics(manager, remotes)
    app.state.lifecycle = lifecycle
    app.state.responses = ResponseStore(settings.server.responses_kept,
                                        parse_size(settings.server.responses_kept_size))  # fmt: skip
    # Called in order with the new Settings after a reload (SIGHUP) replaced app.state.settings.
    app.state.reloaders = [manager.reconfigure, remotes.reconfigure]
    app.state.load_settings = None  # how to read the configuration again; set by `appliance serve`
    install_error_handlers(app)
    openapi.install(app)
    app.include_router(openai_router)
    app.include_router(status_router)
    app.include_router(pull_router)
    app.include_router(ollama_router)
    app.include_router(ollama_create_router)
    app.include_router(anthropic_router)
    app.include_router(responses_router)
    app.include_router(reload_router)
    app.include_router(llama_server_router)
    app.include_router(rerank_router)

    @app.get("/metrics", response_class=PlainTextResponse, **openapi.doc("openai", ok_media="text/plain"))
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=PlainTextResponse, **openapi.doc("openai", ok_media="text/plain", errors=()))
    async def root() -> Response:
        """What Ollama's clients check to see a server is up (Ollama answers "Ollama is running")."""
        return Response("llm-appliance is running", media_type="text/plain")

    @app.get("/health", **openapi.health_doc())
    async def health() -> JSONResponse:
        status, code = manager.health()
        body: dict[str, Any] = {"status": status, "models": [b.describe() for b in manager]}
        return JSONResponse(body, status_code=code)

    access = Access.start(settings)
    app.state.access = access
    app.state.reloaders.append(access.reload)
    app.add_middleware(Guard, access=access)
    app.add_middleware(RequestCounter, metrics=metrics)
    app.add_middleware(BackendHeader)
    app.add_middleware(CancelOnDisconnect)  # it reads the connection for everything inside it
    app.add_middleware(DrainGuard, lifecycle=lifecycle)  # outermost: it sees every request first
    return app
