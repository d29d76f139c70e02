"""Reading what the batching engine wrote to its jobs' streams, for tests that drive the engine directly."""

from __future__ import annotations

import asyncio

from appliance.backend import Finished, TextDelta
from appliance.engine.jobs import DONE, JobStream


def replies(loop: asyncio.AbstractEventLoop, streams: list[JobStream]) -> list[str]:
    """Each stream's text, its events read on ``loop`` up to DONE (each ends with Finished)."""

    async def texts() -> list[str]:
        out = []
        for stream in streams:
            parts = []
            while (item := await stream._events.get()) is not DONE:
                if isinstance(item, TextDelta):
                    parts.append(item.text)
                else:
                    assert isinstance(item, Finished), item
            out.append("".join(parts))
        return out

    return loop.run_until_complete(texts())
