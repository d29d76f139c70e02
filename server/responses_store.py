"""The responses kept for `previous_response_id` and `GET /v1/responses/{id}`: in the daemon's memory
only (a restart forgets them), bounded in count and in bytes, the oldest dropped first.

Each kept response holds its whole conversation (the earlier responses' items, its input, its output),
so a recent response can always be continued even after its ancestors were dropped. The lists share
their items, but each is counted as if it held copies: the bound holds whatever is shared."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kept:
    response: dict[str, Any]
    """The response object, as it was answered."""
    conversation: list[dict[str, Any]]
    """Every item so far: the previous responses', this one's input, its output (no instructions)."""
    size_bytes: int


class ResponseStore:
    """At most ``max_count`` responses and ``max_bytes`` of them (as JSON); the oldest go first."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> bool:
        """Keep ``response`` (by its id) with its ``conversation``; False when it is larger than the
        whole bound, or nothing may be kept."""
        size_bytes = len(json.dumps(response)) + len(json.dumps(conversation))
        if self.max_count == 0 or size_bytes > self.max_bytes:
            log.warning("response %s not kept: %d bytes, over server.responses_kept_size (%d)",
                        response["id"], size_bytes, self.max_bytes)  # fmt: skip
            return False
        self.delete(response["id"])
        while self._kept and (
            len(self._kept) >= self.max_count or self.size_bytes + size_bytes > self.max_bytes
        ):
            _, oldest = self._kept.popitem(last=False)
            self.size_bytes -= oldest.size_bytes
        self._kept[response["id"]] = Kept(response, conversation, size_bytes)
        self.size_bytes += size_bytes
        return True

    def get(self, response_id: str) -> Kept | None:
        return self._kept.get(response_id)

    def delete(self, response_id: str) -> bool:
        """Forget a response; whether it was kept."""
        kept = self._kept.pop(response_id, None)
        if kept is None:
            return False
        self.size_bytes -= kept.size_bytes
        return True
