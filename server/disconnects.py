"""Cancelling a request whose client went away before its answer started.

A whole (non-streamed) answer is sent only once it is generated, and nothing in a handler reads from the
client meanwhile: a client that left would have its answer generated for nobody, holding a slot (and a
request still queued would wait for one). This middleware goes on listening to the connection once the
body is read and cancels the handler when the client disconnects before the response starts; the
cancellation reaches the engine through the job's stream (appliance.engine.jobs.JobStream stops its job
when its reader is cancelled). A streamed answer has started by then, and Starlette stops it itself when
its client leaves. Every dialect's routes get this in one place.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.record import record_of


class CancelOnDisconnect:
    """Outermost middleware: it reads the connection's messages for the app and watches for the end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        messages: asyncio.Queue[Message] = asyncio.Queue()
        started = gone = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, messages.get, watched_send))

        async def listen() -> None:
            nonlocal gone
            while True:
                message = await receive()
                messages.put_nowait(message)  # the app reads everything as before, the end included
                if message["type"] == "http.disconnect":
                    if not started and not handler.done():
                        gone = True
                        record_of(scope).client_gone = True  # counted as 499
                        handler.cancel()
                    return

        listener = asyncio.ensure_future(listen())
        try:
            await handler
        except asyncio.CancelledError:
            if gone and handler.done():  # ended because its client left: there is nobody to answer
                return
            handler.cancel()  # this task is cancelled (the server stops): so is the handler
            raise
        finally:
            listener.cancel()
