"""sd_notify: the daemon's word to systemd (Type=notify units) over $NOTIFY_SOCKET, as sd_notify(3)
sends it; nothing where no manager listens, and never an exception. The daemon's own READY=1 and
STOPPING=1: tests/integration/test_shutdown.py."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from server.lifecycle import sd_notify


def test_sends_the_state_to_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert sd_notify("READY=1") is True
        assert manager.recv(64) == b"READY=1"


def test_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd's user managers name theirs in the abstract namespace at times: "@/org/freedesktop/...".
    name = f"llm-appliance-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("STOPPING=1") is True
        assert manager.recv(64) == b"STOPPING=1"


def test_no_manager_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify("READY=1") is False
    assert "could not tell systemd READY=1" in caplog.text
