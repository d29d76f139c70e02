"""The daemon the TUI tests share: started once, where a test only reads from it or chats with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.conftest import Daemon, start_daemon, stop_daemon


@pytest.fixture(scope="session")
def tui_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One slot and 2,048 tokens of context. The tests that restart their daemon, change its store or
    its keys start their own; a start costs seconds, and these tests need none of that."""
    daemon = start_daemon(tmp_path_factory.mktemp("tui-daemon"), "--parallel", "1", "--ctx", "2048")
    yield daemon
    stop_daemon(daemon)
