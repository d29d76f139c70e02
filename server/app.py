"""The FastAPI application: state built in the lifespan, thin routers, one error handler."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config import Settings
from appliance.errors import Unauthorized
from appliance.hardware.profile import HardwareProfile
from appliance.manager import ModelManager
from appliance.remotes.pool import RemotePool
from server import openapi
from server.anthropic_routes import router as anthropic_router
from server.errors import appliance_error_body, install_error_handlers
from server.metrics import Metrics, RequestCounter
from server.ollama_routes import router as ollama_router
from server.openai_routes import router as openai_router
from server.pull_routes import router as pull_router
from server.status_routes import router as status_router

log = logging.getLogger(__name__)

_OPEN_PATHS = ("/", "/health")


class BackendHeader:
    """Names who served each response (`X-Appliance-Backend: local | remote:NAME`), and why a request was
    escalated (`X-Appliance-Escalation-Reason`), from what the route recorded in the request's state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state", {})
                headers = [(b"x-appliance-backend", str(state.get("backend", "local")).encode())]
                if state.get("escalation_reason"):
                    headers.append(
                        (b"x-appliance-escalation-reason", str(state["escalation_reason"]).encode())
                    )
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_header)


class ApiKeyGuard:
    """Requires the configured API key (Bearer or x-api-key) on everything but health."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key", b"")
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        if not hmac.compare_digest(given, self.api_key):
            message = "missing API key" if not given else "incorrect API key"
            response = JSONResponse(appliance_error_body(Unauthorized(message)), status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings, manager: ModelManager, hardware: HardwareProfile | None = None) -> FastAPI:
    """The daemon's app. The lifespan starts loading the default model and closes every model at
    shutdown."""

    remotes = RemotePool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        await remotes.start()
        try:
            yield
        finally:
            await remotes.close()
            manager.close()

    app = FastAPI(title="llm-appliance", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.manager = manager
    app.state.remotes = remotes
    app.state.started_at = int(time.time())
    app.state.hardware = hardware
    app.state.metrics = metrics = Metrics(manager, remotes)
    install_error_handlers(app)
    openapi.install(app)
    app.include_router(openai_router)
    app.include_router(status_router)
    app.include_router(pull_router)
    app.include_router(ollama_router)
    app.include_router(anthropic_router)

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

    api_key = settings.server.api_key
    if api_key is not None and api_key.get_secret_value():
        app.add_middleware(ApiKeyGuard, api_key=api_key.get_secret_value())
    app.add_middleware(RequestCounter, metrics=metrics)
    app.add_middleware(BackendHeader)
    return app
