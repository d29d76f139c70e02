"""The Textual app driven by its Pilot against a real daemon on a loopback port."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent

from models.embedded import embedded_model_path
from tests.server.conftest import MODEL_ID, Daemon, start_daemon, stop_daemon
from tui.app import ApplianceApp

SECOND = "second-model"


def _rows(app: ApplianceApp, table_id: str) -> list[list[str]]:
    table = app.query_one(table_id, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def drive(daemon: Daemon, scenario: Callable[[ApplianceApp, Pilot[None]], Awaitable[None]]) -> None:
    """Run ``scenario`` with the app attached to ``daemon`` in a 120x40 test terminal."""

    async def run() -> None:
        app = ApplianceApp(daemon.url)
        async with app.run_test(size=(120, 40)) as pilot:
            await scenario(app, pilot)

    asyncio.run(run())


def _state(app: ApplianceApp, name: str) -> str | None:
    return next((r[-1] for r in _rows(app, "#installed") if r[0] == name), None)


async def _until(pilot: object, condition: object, timeout: float = 60) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await pilot.pause(0.2)  # type: ignore[attr-defined]
    return False


def test_dashboard_models_load_unload_and_reconnect(tmp_path: Path) -> None:
    store = tmp_path / "data" / "models"
    store.mkdir(parents=True)
    source = embedded_model_path()
    assert source is not None
    shutil.copyfile(source, store / f"{SECOND}.Q4_1.gguf")
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048")
    port = int(daemon.url.rsplit(":", 1)[1])

    async def scenario() -> None:
        nonlocal daemon
        app = ApplianceApp(daemon.url)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await _until(pilot, lambda: any(r[0] == MODEL_ID for r in _rows(app, "#loaded")))
            hardware = str(app.query_one("#hardware", Static).render())
            assert "CPU" in hardware and "RAM" in hardware
            await pilot.press("m")
            assert app.query_one(TabbedContent).active == "models"
            assert await _until(pilot, lambda: {r[0] for r in _rows(app, "#installed")} >= {MODEL_ID, SECOND})
            names = [r[0] for r in _rows(app, "#installed")]
            table = app.query_one("#installed", DataTable)
            table.move_cursor(row=names.index(SECOND))
            # The selected model's plan, with the planner's reasons, shows under the table.
            assert await _until(pilot, lambda: SECOND in str(app.query_one("#plan-detail", Static).render()))
            detail = str(app.query_one("#plan-detail", Static).render())
            assert "Q4_1" in detail and "fits" in detail and "RAM budget" in detail
            await pilot.press("l")
            assert await _until(
                pilot, lambda: any(r[0] == SECOND and r[-1] == "ready" for r in _rows(app, "#installed"))
            )
            await pilot.press("u")
            assert await _until(
                pilot, lambda: any(r[0] == SECOND and r[-1] == "unloaded" for r in _rows(app, "#installed"))
            )
            # The daemon goes away: a banner says so, and the app keeps running.
            stop_daemon(daemon)
            assert await _until(pilot, lambda: app.connected is False, 20)
            banner = app.query_one("#banner", Static)
            assert banner.has_class("down") and "not answering" in str(banner.render())
            # It comes back on the same port: the app reconnects by itself.
            daemon = await asyncio.to_thread(
                start_daemon, tmp_path, "--parallel", "1", "--ctx", "2048", port=port
            )
            assert await _until(pilot, lambda: app.connected is True, 60)
            assert not app.query_one("#banner", Static).has_class("down")

    try:
        asyncio.run(scenario())
    finally:
        stop_daemon(daemon)


def test_chat_streams_a_reply_with_its_speed_and_escape_stops_a_long_one(tui_daemon: Daemon) -> None:
    from textual.widgets import Input, RichLog

    def transcript(app: ApplianceApp) -> str:
        return "\n".join(str(line.text) for line in app.query_one("#transcript", RichLog).lines)

    async def scenario(app: ApplianceApp, pilot: Pilot[None]) -> None:
        await pilot.press("c")
        assert app.query_one(TabbedContent).active == "chat"
        app.query_one("#prompt", Input).focus()
        await pilot.press(*"Say hello", "enter")
        assert await _until(pilot, lambda: "tok/s" in transcript(app), 120)
        assert "you: Say hello" in transcript(app) and "assistant: " in transcript(app)
        assert [m["role"] for m in app.history] == ["user", "assistant"]
        # The request shows in Logs, and its speed in the dashboard's plot (Escape leaves the prompt).
        await pilot.press("escape", "o")
        assert app.query_one(TabbedContent).active == "logs"
        assert await _until(
            pilot, lambda: any(r[1] == "/v1/chat/completions" for r in _rows(app, "#log-table"))
        )
        assert await _until(pilot, lambda: max(app.speeds) > 0)
        await pilot.press("c")
        prompt = app.query_one("#prompt", Input)
        prompt.focus()
        # A conversation past the model's context fails, saying how to start over; /clear does.
        prompt.value = "word " * 2100
        await pilot.press("enter")

        def said(words: str) -> bool:  # across the transcript's wrapped lines
            return words.replace(" ", "") in "".join(transcript(app).split())

        assert await _until(pilot, lambda: said("/clear starts a new conversation"), 60)
        assert said("leaves none to generate")
        await pilot.press(*"/clear", "enter")
        assert await _until(pilot, lambda: "(conversation cleared" in transcript(app))
        assert app.history == []
        # Escape stops a reply in the middle (a tiny model may finish first: then ask again).
        for _ in range(3):
            answers = transcript(app).count("assistant: ")
            await pilot.press(*"Write a long story about a dragon and a lighthouse.", "enter")

            def streaming_or_done(before: int = answers) -> bool:
                reply = str(app.query_one("#reply", Static).render())
                return bool(reply) or transcript(app).count("assistant: ") > before

            assert await _until(pilot, streaming_or_done)
            if str(app.query_one("#reply", Static).render()):
                await pilot.press("escape")
                assert await _until(pilot, lambda: "(stopped)" in transcript(app))
                break
        assert "(stopped)" in transcript(app)

    drive(tui_daemon, scenario)


def test_the_command_palette_offers_the_appliance_s_commands(tui_daemon: Daemon) -> None:
    async def scenario(app: ApplianceApp, pilot: Pilot[None]) -> None:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert {"Pull a model", "Show models", "Load the selected model", "Quit"} <= set(titles)
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Show logs")
        command.callback()
        await pilot.pause(0.2)
        assert app.query_one(TabbedContent).active == "logs"

    drive(tui_daemon, scenario)
