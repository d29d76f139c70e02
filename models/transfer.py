"""Downloads that survive interruption and are verified before anything can use them.

huggingface_hub (2.x) keeps a partial download as ``<blob>.incomplete`` in its cache and resumes it
within a call, but what it leaves behind after the process is killed is not verified against the file's
sha256 before being renamed into the cache, and our store keeps its own layout; so transfers are done
here, over plain HTTP with ``Range``:

- bytes go to ``partial_dir/<key>.part`` (the key is the expected sha256, else a hash of the URL), so a
  later run, in another process, finds and continues them;
- a resumed transfer asks for ``Range: bytes=N-``; a server that answers 200 instead restarts the file;
- the sha256 of the whole file (the resumed prefix too) is checked before an atomic rename to ``dest``;
  a mismatch deletes the partial file, so a retry starts clean;
- free disk space is checked first, and a disk filling up mid-way is reported as such.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from models.errors import NotFound

_CHUNK = 1 << 20
_DISK_MARGIN = 64 << 20
_PROGRESS_EVERY_S = 0.2


@dataclass(frozen=True)
class Progress:
    file: str
    completed: int  # bytes on disk so far, resumed bytes included
    total: int | None
    bytes_per_s: float
    eta_s: float | None


class TransferError(Exception):
    """A download failed; the message is one readable line."""


class RemoteError(TransferError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RemoteNotFound(RemoteError, NotFound):
    """The server answered 404 for the file."""


def answered(message: str, status: int) -> RemoteError:
    """The error for an HTTP answer ``status`` that is not the file: RemoteNotFound for a 404."""
    return (RemoteNotFound if status == 404 else RemoteError)(message, status)


class ChecksumMismatch(TransferError):
    pass


class DiskFull(TransferError):
    pass


class Cancelled(TransferError):
    pass


def free_bytes(path: Path) -> int:
    """Free space where ``path`` (or its nearest existing parent) lives."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _key(url: str, sha256: str | None) -> str:
    return sha256 or hashlib.sha256(url.encode()).hexdigest()[:32]


def resumable_bytes(url: str, partial_dir: Path, sha256: str | None) -> int:
    """Bytes of ``url`` already downloaded into ``partial_dir`` by an earlier, interrupted pull."""
    part = partial_dir / f"{_key(url, sha256)}.part"
    return part.stat().st_size if part.is_file() else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _same_host(a: str, b: str) -> bool:
    return urlsplit(a).netloc == urlsplit(b).netloc


def _open(client: httpx.Client, url: str, headers: dict[str, str], start: int) -> tuple[httpx.Response, bool]:
    """GET from ``start``, following redirects by hand so Authorization never leaves the first host
    (the Hub redirects to a CDN). Returns the response and whether it resumes (206)."""
    current = url
    for _ in range(10):
        send = dict(headers) if _same_host(current, url) else {k: v for k, v in headers.items()
                                                                if k.lower() != "authorization"}  # fmt: skip
        if start:
            send["Range"] = f"bytes={start}-"
        response = client.send(client.build_request("GET", current, headers=send), stream=True)
        if response.status_code in (301, 302, 303, 307, 308) and "location" in response.headers:
            current = str(response.url.join(response.headers["location"]))
            response.close()
            continue
        if response.status_code == 416 and start:  # asked past the end: the partial file is stale
            response.close()
            return _open(client, url, headers, 0)
        if response.status_code not in (200, 206):
            response.close()
            reason = {401: "unauthorized (a token is needed)", 403: "forbidden", 404: "not found"}
            why = reason.get(response.status_code, "")
            raise answered(f"{url} answered {response.status_code} {why}".rstrip(), response.status_code)
        return response, response.status_code == 206 and start > 0
    raise RemoteError(f"{url}: too many redirects")


def download(
    url: str,
    dest: Path,
    *,
    partial_dir: Path,
    sha256: str | None = None,
    size: int | None = None,
    headers: Mapping[str, str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    client: httpx.Client | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (see the module docstring); returns ``dest``."""
    complete = dest.is_file() and (size is None or dest.stat().st_size == size)
    if complete and (sha256 is None or _sha256(dest) == sha256):
        return dest
    partial_dir.mkdir(parents=True, exist_ok=True)
    part = partial_dir / f"{_key(url, sha256)}.part"
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None:
        needed = size - have + _DISK_MARGIN
        free = min(free_bytes(partial_dir), free_bytes(dest.parent))
        if free < needed:
            left, free_mib = (size - have) >> 20, free >> 20
            raise DiskFull(f"not enough disk space for {dest.name}: {left} MiB needed, {free_mib} MiB free")
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
    try:
        _fetch(http, url, part, dest.name, dict(headers or {}), size, on_progress, cancel)
    finally:
        if own_client:
            http.close()
    got = part.stat().st_size
    if size is not None and got != size:
        raise RemoteError(f"{dest.name}: the server sent {got} bytes of {size}; run again to resume")
    if sha256 is not None:
        actual = _sha256(part)
        if actual != sha256:
            part.unlink()
            raise ChecksumMismatch(f"{dest.name}: sha256 {actual[:12]}... does not match {sha256[:12]}...; "
                                   "the download was discarded")  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    return dest


def _fetch(
    http: httpx.Client,
    url: str,
    part: Path,
    name: str,
    headers: dict[str, str],
    size: int | None,
    on_progress: Callable[[Progress], None] | None,
    cancel: threading.Event | None,
) -> None:
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return
    try:
        response, resumed = _open(http, url, headers, have)
    except httpx.HTTPError as exc:
        host = urlsplit(url).netloc
        raise RemoteError(f"cannot reach {host}: {type(exc).__name__} {exc}".strip()) from None
    if not resumed:
        have = 0
    total = size
    if total is None and "content-length" in response.headers:
        total = have + int(response.headers["content-length"])
    started, last_report, done_at_start = time.monotonic(), 0.0, have
    try:
        with part.open("ab" if resumed else "wb") as out:
            for chunk in response.iter_bytes(_CHUNK):
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"{name}: cancelled; run again to resume")
                out.write(chunk)
                have += len(chunk)
                now = time.monotonic()
                if on_progress is not None and (now - last_report >= _PROGRESS_EVERY_S or have == total):
                    last_report = now
                    rate = (have - done_at_start) / max(now - started, 1e-6)
                    eta = (total - have) / rate if total is not None and rate > 0 else None
                    on_progress(Progress(name, have, total, rate, eta))
    except httpx.HTTPError as exc:
        why = type(exc).__name__
        raise RemoteError(f"{name}: the transfer broke off ({why}); run again to resume") from None
    except OSError as exc:  # from a write, or from the flush when the file closes
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # What is on disk is kept: it is a verified prefix by the time it is used (the whole file's sha256
        # is checked), the model needs that space anyway, and a pull of gigabytes should not start over.
        kept = f"{part.stat().st_size >> 20} MiB of it kept in {part.parent} to resume"
        raise DiskFull(f"the disk filled up while downloading {name} ({kept}; delete them to free the "
                       "space); free some space and run again to resume") from None  # fmt: skip
    finally:
        response.close()
    if on_progress is not None:
        rate = (have - done_at_start) / max(time.monotonic() - started, 1e-6)
        on_progress(Progress(name, have, total, rate, 0.0))
