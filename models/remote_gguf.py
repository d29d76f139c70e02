"""A GGUF header read over HTTP with range requests: the metadata and tensor table of a remote file
(a few hundred KB; a few MB for large vocabularies) without downloading its weights."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from models.gguf_header import GGUFHeader, read_header
from models.transfer import RemoteError, answered

_FIRST_CHUNK = 256 * 1024
_MAX_HEADER = 256 * 1024 * 1024  # no real header is this big: stop rather than fetch a whole file


class _RangeReader:
    """``read(n)`` over ranged GETs, fetching ahead in chunks that double as the header grows."""

    def __init__(self, client: httpx.Client, url: str, headers: Mapping[str, str], chunk: int) -> None:
        self.client, self.url, self.headers = client, url, dict(headers)
        self.buffer = bytearray()
        self.offset = 0
        self.chunk = chunk
        self.fetched = 0
        self.size: int | None = None

    def _more(self, at_least: int) -> None:
        while len(self.buffer) < at_least:
            start = len(self.buffer)
            if (self.size is not None and start >= self.size) or start >= _MAX_HEADER:
                raise RemoteError(f"{self.url}: the GGUF header does not end where the file does")
            end = start + max(self.chunk, at_least - start) - 1
            try:
                ranged = {**self.headers, "Range": f"bytes={start}-{end}"}
                response = self.client.get(self.url, headers=ranged)
            except httpx.HTTPError as exc:
                raise RemoteError(f"cannot read {self.url}: {type(exc).__name__} {exc}".strip()) from None
            if response.status_code not in (200, 206):
                raise answered(f"{self.url} answered {response.status_code}", response.status_code)
            data = response.content
            if response.status_code == 200:  # no range support: the whole file came; keep what we need
                data = data[start:]
                self.size = start + len(data)
            elif "content-range" in response.headers:
                total = response.headers["content-range"].rpartition("/")[2]
                self.size = int(total) if total.isdigit() else None
            if not data:
                raise RemoteError(f"{self.url}: the file ends inside its GGUF header")
            self.fetched += len(data)
            self.buffer += data
            self.chunk *= 2

    def read(self, n: int) -> bytes:
        self._more(self.offset + n)
        out = bytes(self.buffer[self.offset : self.offset + n])
        self.offset += n
        return out


def read_remote_header(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
    chunk_bytes: int = _FIRST_CHUNK,
) -> tuple[GGUFHeader, int]:
    """The GGUF header at ``url`` and how many bytes were fetched to read it."""
    own = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0))
    try:
        reader = _RangeReader(http, url, headers or {}, chunk_bytes)
        return read_header(reader.read), reader.fetched
    finally:
        if own:
            http.close()
