"""The TUI lives through every error reply of a real daemon: a 4xx or 5xx on a refresh becomes the banner
(the panes keep their last snapshot), on an action or a chat a notice or a line in the transcript."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import DataTable, Input, RichLog, Select, Static, TabbedContent

from models.embedded import embedded_model_path
from tests.server.conftest import MODEL_ID, start_daemon, stop_daemon
from tests.tui.test_app import _rows, _until
from tui.app import ApplianceApp

KEY = "sk-tui-errors-test"
BROKEN = "header-cut"


def _banner(app: ApplianceApp) -> str:
    return str(app.query_one("#banner", Static).render())


def test_4xx_and_5xx_replies_become_the_banner_or_a_notice_and_the_app_goes_on(tmp_path: Path) -> None:
    source = embedded_model_path()
    assert source is not None
    store = tmp_path / "data" / "models"
    store.mkdir(parents=True)
    # A truncated model in the store: the daemon lists it, and loading it is a 503 (model_load_failed).
    (store / f"{BROKEN}.gguf").write_bytes(source.read_bytes()[:1000])
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "1024", "--api-key", KEY)

    async def scenario() -> None:
        # 404 on every refresh (a URL past the daemon's root): the banner says what it answered.
        app = ApplianceApp(f"{daemon.url}/no/such/prefix", KEY)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await _until(pilot, lambda: app.connected is False, 30)
            assert "answered an error" in _banner(app) and app.is_running
        # 401 on every refresh: a wrong key.
        app = ApplianceApp(daemon.url, "sk-wrong")
        async with app.run_test(size=(120, 40)) as pilot:
            assert await _until(pilot, lambda: app.connected is False, 30)
            assert "API key is missing or wrong" in _banner(app) and app.is_running
        # The right key: a 503 loading the broken model and a 503 chatting with it; refreshes go on.
        app = ApplianceApp(daemon.url, KEY)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await _until(pilot, lambda: {MODEL_ID, BROKEN} <= {r[0] for r in _rows(app, "#installed")})
            assert app.connected is True
            await pilot.press("m")
            assert app.query_one(TabbedContent).active == "models"
            names = [r[0] for r in _rows(app, "#installed")]
            app.query_one("#installed", DataTable).move_cursor(row=names.index(BROKEN))
            await pilot.press("l")
            assert await _until(
                pilot, lambda: any("truncated GGUF header" in n.message for n in app._notifications), 60
            )
            await pilot.press("c")
            app.query_one("#chat-model", Select).value = BROKEN
            app.query_one("#prompt", Input).focus()
            await pilot.press(*"Hello", "enter")

            def transcript() -> str:  # without spaces: the lines wrap
                lines = app.query_one("#transcript", RichLog).lines
                return "".join("".join(str(line.text) for line in lines).split())

            assert await _until(pilot, lambda: "(failed:" in transcript(), 60)
            assert "truncatedGGUFheader" in transcript()
            await pilot.pause(1.5)  # a refresh or two after the errors: still connected, still running
            assert app.connected is True and app.is_running

    try:
        asyncio.run(scenario())
    finally:
        stop_daemon(daemon)
