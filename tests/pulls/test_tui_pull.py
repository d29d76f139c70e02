"""The TUI's Models screen: a pull from the fake Hub with live progress, then remove with confirmation."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, ProgressBar, Static, TabbedContent

from tests.pulls.fakehub import FakeHub
from tests.server.conftest import start_daemon, stop_daemon
from tests.tui.test_app import _rows, _until, drive
from tui.app import ApplianceApp, PullScreen

PULLED = "smollm2-135m-instruct:q4_1"


def test_pull_with_progress_then_remove(hub: FakeHub, tmp_path: Path) -> None:
    hub.knobs.bytes_per_s = 60e6  # a couple of seconds: progress is seen moving
    daemon = start_daemon(tmp_path, "--parallel", "1", "--ctx", "2048",
                          env={"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")})  # fmt: skip

    async def scenario(app: ApplianceApp, pilot: Pilot[None]) -> None:
        await pilot.press("m")
        assert app.query_one(TabbedContent).active == "models"
        await pilot.press("p")
        assert isinstance(app.screen, PullScreen)
        app.screen.query_one(Input).focus()
        await pilot.press(*"acme/SmolLM2-135M-Instruct-GGUF", "enter")
        bar = app.query_one("#pull-progress", ProgressBar)
        assert await _until(pilot, lambda: 0 < (bar.progress or 0) < (bar.total or 0))  # moving
        await pilot.press("d")  # leaving the screen does not stop it
        assert await _until(pilot, lambda: any(r[0] == PULLED for r in _rows(app, "#installed")))
        await pilot.press("m")
        assert "pulled" in str(app.query_one("#pull-status", Static).render())
        names = [r[0] for r in _rows(app, "#installed")]
        app.query_one("#installed", DataTable).move_cursor(row=names.index(PULLED))
        await pilot.press("x", "n")  # asked, and declined
        await pilot.pause(1.5)
        assert PULLED in [r[0] for r in _rows(app, "#installed")]
        await pilot.press("x", "y")
        assert await _until(pilot, lambda: PULLED not in [r[0] for r in _rows(app, "#installed")])

    try:
        drive(daemon, scenario)
    finally:
        stop_daemon(daemon)
