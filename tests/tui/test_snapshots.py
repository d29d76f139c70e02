"""Each screen's look, pinned with pytest-textual-snapshot (SVGs under __snapshots__/).

The app is fed the answers a real daemon gave (tests/tui/recorded/scene.json, written by
`python -m tests.tui.record_scene`): a live daemon's numbers and times change on every run, a snapshot's
must not. The Pilot tests in test_app.py drive the same app against live daemons. After a deliberate
change of look, redraw with `pytest tests/tui --snapshot-update` and review the SVGs in the diff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from tui.app import ApplianceApp

SCENE: dict[str, Any] = json.loads((Path(__file__).with_name("recorded") / "scene.json").read_text())
SIZE = (120, 40)
URL = "http://127.0.0.1:11435"

Snap = Callable[..., bool]


def _recorded(request: httpx.Request) -> httpx.Response:
    """The daemon's recorded answer to one of the routes the TUI polls."""
    if request.method == "GET" and request.url.path in SCENE:
        return httpx.Response(200, json=SCENE[request.url.path])
    return httpx.Response(404, json={"error": {"message": f"not recorded: {request.url.path}"}})


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """The Logs screen shows local times: the same ones on every machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


def _app(url: str = URL, transport: httpx.AsyncBaseTransport | None = None) -> ApplianceApp:
    """The app on the recorded scene, refreshing once; its plots hold the recorded requests' figures."""
    app = ApplianceApp(url, refresh_s=3600, transport=transport or httpx.MockTransport(_recorded))
    for entry in SCENE["/appliance/v1/logs"]["requests"]:
        app.speeds.append(entry.get("tokens_per_s") or 0.0)
        app.ttfts.append(entry.get("ttft_ms") or 0.0)
    return app


def _after_refresh(then: Callable[[Pilot[None]], Awaitable[None]] | None = None) -> Any:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ApplianceApp)
        for _ in range(200):
            if app.connected is not None:
                break
            await pilot.pause(0.05)
        assert app.connected is not None, "the app never asked the daemon"
        if app.connected:  # the whole refresh went through (a failure in it would end the app)
            logs = SCENE["/appliance/v1/logs"]["requests"]
            assert app.query_one("#log-table", DataTable).row_count == len(logs)
        if then is not None:
            await then(pilot)
        await pilot.pause()

    return run_before


def test_dashboard(snap_compare: Snap) -> None:
    assert snap_compare(_app(), terminal_size=SIZE, run_before=_after_refresh())


def test_models_with_the_selected_models_plan(snap_compare: Snap) -> None:
    async def select_second(pilot: Pilot[None]) -> None:
        await pilot.press("m")
        table = pilot.app.query_one("#installed", DataTable)
        table.move_cursor(row=1)

    assert snap_compare(_app(), terminal_size=SIZE, run_before=_after_refresh(select_second))


def test_remotes(snap_compare: Snap) -> None:
    assert snap_compare(_app(), press=["r"], terminal_size=SIZE, run_before=_after_refresh())


def test_logs(snap_compare: Snap) -> None:
    assert snap_compare(_app(), press=["o"], terminal_size=SIZE, run_before=_after_refresh())


def test_chat_with_local_and_remote_models_to_choose(snap_compare: Snap) -> None:
    async def open_the_choice(pilot: Pilot[None]) -> None:
        await pilot.press("c")
        await pilot.click("#chat-model")

    assert snap_compare(_app(), terminal_size=SIZE, run_before=_after_refresh(open_the_choice))


def test_pull_asks_what_to_pull(snap_compare: Snap) -> None:
    async def ask(pilot: Pilot[None]) -> None:
        await pilot.press("m", "p")
        await pilot.press(*"bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M")

    assert snap_compare(_app(), terminal_size=SIZE, run_before=_after_refresh(ask))


def test_remove_asks_first(snap_compare: Snap) -> None:
    async def ask(pilot: Pilot[None]) -> None:
        await pilot.press("m", "down", "x")

    assert snap_compare(_app(), terminal_size=SIZE, run_before=_after_refresh(ask))


def test_the_banner_when_the_daemon_is_not_answering(snap_compare: Snap) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    app = _app(transport=httpx.MockTransport(refuse))
    assert snap_compare(app, terminal_size=SIZE, run_before=_after_refresh())
