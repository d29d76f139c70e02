"""One daemon per state directory: an OS lock on ``Settings.dirs.lock_file``, held while the daemon runs.

Two daemons on the same store would each unload, pull and delete models under the other. The lock is
``flock``'s: the kernel drops it when the process ends, however it ends (SIGKILL, a crash, a power cut
on reboot), so a dead daemon never leaves a stale lock behind; the file itself stays, holding the last
holder's pid for the message. Commands that only read the store (list, plan, hw) do not take it.
On Windows, which has no flock, there is no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class StateLocked(Exception):
    """Another process holds the lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another appliance daemon ({who}) is running on this state directory ({path.parent}); "
            "stop it first"
        )
        self.pid = pid


class StateLock:
    """The held lock; ``release()`` (or the process ending) lets the next daemon start."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> StateLock:
        """Take the lock at ``path`` at once, or raise StateLocked naming the daemon that holds it."""
        if fcntl is None:
            return cls(None)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StateLocked(path, int(holder) if holder.isdigit() else None) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
