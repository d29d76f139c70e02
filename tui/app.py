"""`appliance tui`: the daemon at a glance, over its HTTP API. Dashboard (hardware, loaded models,
slots, queue, requests), Models (installed, fits, load/unload) and Remotes; a banner when the daemon is
not answering, and it reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import httpx
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    ProgressBar,
    RichLog,
    Select,
    Sparkline,
    Static,
    TabbedContent,
    TabPane,
)

from client import AsyncDaemonClient, ClientError, ContextFull
from tui.panes import (
    hardware_lines,
    installed_row,
    loaded_row,
    log_row,
    plan_text,
    remote_models,
    remote_row,
    routing_row,
)
from tui.snapshot import Snapshot, banner_text

REFRESH_S = 1.0
HISTORY = 120  # samples in the dashboard's plots: two minutes at one a second


class ApplianceApp(App[None]):
    TITLE = "llm-appliance"
    CSS = """
    TabbedContent, TabbedContent > ContentSwitcher { height: 1fr; }
    #banner { background: $error; color: $text; padding: 0 1; display: none; }
    #banner.down { display: block; }
    #hardware { padding: 0 1; height: auto; }
    #transcript { height: 1fr; }
    #installed { height: 1fr; }
    #remote-table { height: auto; max-height: 50%; }
    #pull-status { height: auto; padding: 0 1; }
    #plan-detail { height: auto; max-height: 12; padding: 0 1; border-top: solid $primary; }
    #pull-progress { padding: 0 1; display: none; }
    #pull-progress.pulling { display: block; }
    Sparkline { height: 2; margin: 0 1; }
    .caption { padding: 0 1; color: $text-muted; }
    #reply { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("d", "show('dashboard')", "Dashboard"),
        Binding("m", "show('models')", "Models"),
        Binding("r", "show('remotes')", "Remotes"),
        Binding("c", "show('chat')", "Chat"),
        Binding("o", "show('logs')", "Logs"),
        Binding("escape", "cancel_chat", "Stop reply / leave the prompt", show=False),
        Binding("l", "load", "Load"),
        Binding("u", "unload", "Unload"),
        Binding("p", "pull", "Pull"),
        Binding("x", "remove", "Remove"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        refresh_s: float = REFRESH_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (the snapshot tests replay recorded answers through it)."""
        super().__init__()
        self.client = AsyncDaemonClient(url, api_key, transport=transport)
        self.refresh_s = refresh_s
        self.connected: bool | None = None
        self.models: list[dict[str, Any]] = []
        self.history: list[dict[str, str]] = []
        self.speeds: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.ttfts: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self._last_log_time: float | None = None  # no refresh yet
        self._model_choices: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="banner")
        with TabbedContent(initial="dashboard"):
            with TabPane("Dashboard", id="dashboard"), Vertical():
                yield Static("connecting...", id="hardware")
                yield Static("tokens/s of finished requests, last 2 minutes", classes="caption")
                yield Sparkline([], id="speed")
                yield Static("time to first token (ms), last 2 minutes", classes="caption")
                yield Sparkline([], id="ttft")
                yield DataTable(id="loaded", cursor_type="row")
            with TabPane("Models", id="models"), Vertical():
                yield DataTable(id="installed", cursor_type="row")
                yield Static("", id="plan-detail")
                yield Static("", id="pull-status")
                yield ProgressBar(id="pull-progress", show_eta=True)
            with TabPane("Remotes", id="remotes"), Vertical():
                yield DataTable(id="remote-table", cursor_type="row")
                yield Static("requests sent to remotes, and why (newest first)", classes="caption")
                yield DataTable(id="routing-table", cursor_type="row")
            with TabPane("Logs", id="logs"):
                yield DataTable(id="log-table", cursor_type="row")
            with TabPane("Chat", id="chat"), Vertical():
                yield Select[str]([], prompt="model (default: the daemon's)", id="chat-model")
                yield RichLog(id="transcript", wrap=True, markup=False)
                yield Static("", id="reply")
                yield Input(
                    placeholder="Say something, Enter sends, Escape stops the reply, /clear starts over",
                    id="prompt",
                )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#loaded", DataTable).add_columns(
            "model", "state", "quant", "context", "slots", "queue", "RAM", "VRAM"
        )
        self.query_one("#installed", DataTable).add_columns(
            "name", "source", "quant", "size", "fits", "state"
        )
        self.query_one("#log-table", DataTable).add_columns(
            "time", "endpoint", "model", "backend", "prompt", "generated", "TTFT ms", "tok/s", "status"
        )
        self.query_one("#remote-table", DataTable).add_columns(
            "name", "kind", "found", "address", "health", "breaker", "models", "load", "probe / TTFT"
        )
        self.query_one("#routing-table", DataTable).add_columns(
            "time", "model", "backend", "reason", "TTFT", "status"
        )
        self.set_interval(self.refresh_s, self.refresh_data)
        self.call_later(self.refresh_data)

    async def refresh_data(self) -> None:
        try:
            snapshot = Snapshot(
                await self.client.status(),
                await self.client.models(),
                await self.client.remotes(),
                await self.client.logs(),
            )
        except ClientError as exc:  # whatever went wrong, the panes keep the last snapshot
            with contextlib.suppress(NoMatches):  # the app is closing
                self._set_connected(False, banner_text(exc, self.client.url))
            return
        with contextlib.suppress(NoMatches):
            self._set_connected(True)
            self._render(snapshot)

    def _render(self, snapshot: Snapshot) -> None:
        """Every pane from one snapshot of the daemon."""
        status, models, remotes = snapshot.status, snapshot.models, snapshot.remotes
        self.query_one("#hardware", Static).update(hardware_lines(status))
        self._fill_loaded(status.get("models") or [])
        self.models = models
        self._fill_installed(models)
        self._fill_remotes(remotes.get("remotes") or [])
        self._fill_logs(snapshot.logs)
        choices = tuple(m["id"] for m in models) + remote_models(remotes.get("remotes") or [])
        if choices != self._model_choices:
            self._model_choices = choices
            self.query_one("#chat-model", Select).set_options((c, c) for c in choices)

    def _set_connected(self, up: bool, message: str = "") -> None:
        banner = self.query_one("#banner", Static)
        banner.update(message)
        banner.set_class(not up, "down")
        self.connected = up
        self.sub_title = self.client.url if up else "disconnected"

    @staticmethod
    def _replace(table: DataTable[str], rows: Sequence[tuple[Any, ...]], keyed: bool = True) -> None:
        """The table's rows, keyed by their first cell when it names them (not log lines: two requests
        can end in the same second)."""
        cursor = table.cursor_row
        table.clear()
        for row in rows:
            table.add_row(*(str(cell) for cell in row), key=str(row[0]) if keyed else None)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))

    def _fill_loaded(self, loaded: list[dict[str, Any]]) -> None:
        self._replace(self.query_one("#loaded", DataTable), [loaded_row(m) for m in loaded])

    def _fill_installed(self, models: list[dict[str, Any]]) -> None:
        self._replace(self.query_one("#installed", DataTable), [installed_row(m) for m in models])
        self._show_plan()

    def _fill_remotes(self, remotes: list[dict[str, Any]]) -> None:
        self._replace(self.query_one("#remote-table", DataTable), [remote_row(r) for r in remotes])

    def _fill_logs(self, logs: list[dict[str, Any]]) -> None:
        """The Logs table (newest first), and one sample a refresh for the dashboard's plots: the mean
        speed and TTFT of the requests that finished since the last refresh (0 when none did). The
        first refresh only sets where the plots start: what finished before the TUI came is history."""
        self._replace(self.query_one("#log-table", DataTable), [log_row(e) for e in reversed(logs)], False)
        routed = [routing_row(e) for e in reversed(logs) if e.get("reason")]
        self._replace(self.query_one("#routing-table", DataTable), routed, False)
        since = self._last_log_time
        self._last_log_time = max([since or 0.0, *(e.get("time", 0) for e in logs)])
        if since is not None:
            new = [e for e in logs if e.get("time", 0) > since]
            speeds = [e["tokens_per_s"] for e in new if e.get("tokens_per_s")]
            ttfts = [e["ttft_ms"] for e in new if e.get("ttft_ms") is not None]
            self.speeds.append(sum(speeds) / len(speeds) if speeds else 0.0)
            self.ttfts.append(sum(ttfts) / len(ttfts) if ttfts else 0.0)
        self.query_one("#speed", Sparkline).data = list(self.speeds)
        self.query_one("#ttft", Sparkline).data = list(self.ttfts)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): Textual's own (themes, keys, quit) and the appliance's."""
        yield from super().get_system_commands(screen)
        for tab in ("dashboard", "models", "remotes", "logs", "chat"):
            yield SystemCommand(f"Show {tab}", f"Switch to the {tab} screen", partial(self.action_show, tab))
        selected = "the model selected in Models"
        yield SystemCommand(
            "Pull a model", "Download owner/name[:QUANT] or ollama:NAME[:TAG]", self.action_pull
        )
        yield SystemCommand("Load the selected model", f"Load {selected}", self.action_load)
        yield SystemCommand("Unload the selected model", f"Unload {selected}", self.action_unload)
        yield SystemCommand(
            "Remove the selected model", f"Delete {selected} (asks first)", self.action_remove
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "installed":
            # A refresh's rows can arrive as the app closes (a test's scenario ends at once): then no
            # pane is left to draw in.
            with contextlib.suppress(NoMatches):
                self._show_plan()

    def _show_plan(self) -> None:
        """The selected model's plan here: the planner's choice, its reasons and the alternatives."""
        name = self._selected_model()
        model = next((m for m in self.models if m.get("id") == name), None)
        detail = self.query_one("#plan-detail", Static)
        detail.update(plan_text(model) if model is not None else "")

    def action_show(self, tab: str) -> None:
        """Switch screens, and put the keyboard on the screen's main widget (the prompt in Chat)."""
        self.query_one(TabbedContent).active = tab
        main = {"dashboard": "#loaded", "models": "#installed", "remotes": "#remote-table",
                "logs": "#log-table", "chat": "#prompt"}[tab]  # fmt: skip
        self.query_one(main).focus()

    def _selected_model(self) -> str | None:
        table = self.query_one("#installed", DataTable)
        if not self.models or table.row_count == 0:
            return None
        return str(table.get_row_at(table.cursor_row)[0])

    async def action_load(self) -> None:
        await self._model_action("load")

    async def action_unload(self) -> None:
        await self._model_action("unload")

    async def _model_action(self, verb: str) -> None:
        name = self._selected_model()
        if name is None:
            return
        self.notify(f"{verb}ing {name}...")
        try:
            await (self.client.load(name) if verb == "load" else self.client.unload(name))
        except ClientError as exc:
            self.notify(f"{verb} {name}: {exc}", severity="error")
            return
        self.notify(f"{name} {verb}ed")
        await self.refresh_data()

    def action_pull(self) -> None:
        def start(ref: str | None) -> None:
            if ref:
                self.run_worker(self._pull(ref), group="pull")

        self.push_screen(PullScreen(), start)

    async def _pull(self, ref: str) -> None:
        """Follow a pull's progress; it runs on the daemon, so leaving this screen does not stop it."""
        status = self.query_one("#pull-status", Static)
        bar = self.query_one("#pull-progress", ProgressBar)
        status.update(f"pulling {ref}...")
        bar.update(total=None, progress=0)
        bar.add_class("pulling")
        try:
            async for event in self.client.pull_stream(ref):
                kind = event.get("status")
                if kind == "downloading":
                    bar.update(total=event.get("total"), progress=event.get("completed", 0))
                    speed = (event.get("bytes_per_s") or 0) / (1 << 20)
                    status.update(f"{ref}: {event.get('file')} at {speed:.1f} MiB/s")
                elif kind == "error":
                    status.update(f"{ref}: {event.get('error')}")
                    return
                elif event.get("message"):
                    status.update(f"{ref}: {event['message']}")
        except ClientError as exc:
            status.update(f"{ref}: {exc}")
            return
        finally:
            bar.remove_class("pulling")
        await self.refresh_data()

    def action_remove(self) -> None:
        name = self._selected_model()
        if name is None:
            return

        async def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                await self.client.remove(name)
            except ClientError as exc:
                self.notify(f"remove {name}: {exc}", severity="error")
                return
            self.notify(f"{name} removed")
            await self.refresh_data()

        self.push_screen(ConfirmScreen(f"Remove {name} from the store? (y/n)"), confirmed)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        if text == "/clear":  # as in `appliance chat`: a long conversation fills the model's context
            self.history.clear()
            self.query_one("#transcript", RichLog).write("(conversation cleared: the model forgets it)")
            return
        self.query_one("#transcript", RichLog).write(f"you: {text}")
        self.history.append({"role": "user", "content": text})
        self.run_worker(self._reply(), exclusive=True, group="chat")

    async def _reply(self) -> None:
        """Stream the reply into view; its TTFT and speed go under it."""
        selected = self.query_one("#chat-model", Select).value
        model = selected if isinstance(selected, str) else None
        reply, started = self.query_one("#reply", Static), time.monotonic()
        parts: list[str] = []
        first: float | None = None
        outcome = ""
        try:
            async for text in self.client.chat_stream(model, self.history):
                first = first or time.monotonic()
                parts.append(text)
                reply.update("".join(parts))
        except asyncio.CancelledError:
            outcome = " (stopped)"
            raise
        except ContextFull as exc:
            outcome = f" (failed: {exc}; /clear starts a new conversation)"
        except ClientError as exc:
            outcome = f" (failed: {exc})"
        finally:
            answer = "".join(parts)
            done = time.monotonic()
            stats = ""
            if first is not None:
                speed = (len(parts) - 1) / (done - first) if len(parts) > 1 and done > first else 0.0
                stats = f"  [TTFT {1000 * (first - started):.0f} ms, {speed:.1f} tok/s]"
            if answer:
                self.history.append({"role": "assistant", "content": answer})
            with contextlib.suppress(NoMatches):  # the app is closing
                self.query_one("#transcript", RichLog).write(f"assistant: {answer}{outcome}{stats}")
                reply.update("")

    def action_cancel_chat(self) -> None:
        """Escape: stop the reply being written, and leave the prompt so letters switch screens again."""
        self.workers.cancel_group(self, "chat")
        self.set_focus(None)

    async def on_unmount(self) -> None:
        await self.client.close()


class PullScreen(ModalScreen[str | None]):
    """Asks what to pull: owner/name[:QUANT] or ollama:NAME[:TAG]."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]
    DEFAULT_CSS = "PullScreen { align: center middle; } PullScreen Input { width: 70; }"

    def compose(self) -> ComposeResult:
        yield Input(placeholder="owner/name[:QUANT] or ollama:NAME[:TAG], Enter to pull", id="pull-ref")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "dismiss(True)", "Yes"), Binding("n,escape", "dismiss(False)", "No")]
    DEFAULT_CSS = (
        "ConfirmScreen { align: center middle; } ConfirmScreen Static { width: 60; border: round $error; }"
    )

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(self.question)
