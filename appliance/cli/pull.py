"""`appliance pull REF`: the choice and why, then a progress bar (bytes, speed, ETA) on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from appliance.cli.common import budgets, gpus, settings, to_json
from appliance.config import Settings
from appliance.errors import UserError

if TYPE_CHECKING:
    from appliance.pulls import PullEvent


class ProgressPrinter:
    """Prints events as lines, and download progress as one line redrawn in place (a terminal) or a line
    every few seconds (a log)."""

    def __init__(self, stream: object = sys.stderr) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last = 0.0
        self._drawn = False

    def __call__(self, event: PullEvent) -> None:
        if event.status == "downloading":
            self._bar(event)
            return
        if event.status == "success" and event.manifest is not None and not event.message:
            return
        self._end_bar()
        prefix = {"warning": "warning: ", "candidate": "  "}.get(event.status, "")
        self._write(f"{prefix}{event.message}\n")

    def _bar(self, event: PullEvent) -> None:
        now = time.monotonic()
        done = event.total is not None and event.completed == event.total
        if not done and now - self._last < (0.1 if self.tty else 5.0):
            return
        self._last = now
        total = event.total or 0
        share = event.completed / total if total and event.completed is not None else 0.0
        width = 30
        bar = "#" * int(share * width)
        speed = f"{(event.bytes_per_s or 0) / (1 << 20):.1f} MiB/s"
        eta = f"ETA {int(event.eta_s) // 60}:{int(event.eta_s) % 60:02d}" if event.eta_s is not None else ""
        line = (
            f"{event.file} [{bar:<{width}}] {share:6.1%} {(event.completed or 0) / (1 << 20):.0f}/"
            f"{total / (1 << 20):.0f} MiB {speed} {eta}"
        )
        if self.tty:
            self._write(f"\r{line}\x1b[K")
            self._drawn = True
        else:
            self._write(line + "\n")

    def _end_bar(self) -> None:
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)  # type: ignore[attr-defined]
        self.stream.flush()  # type: ignore[attr-defined]


def run_pull(settings: Settings, ref: str, as_json: bool) -> str:
    """Pull and return what to print on stdout; PullError for the user."""
    from appliance.hardware.detect import detect_hardware
    from appliance.inventory import store
    from appliance.pulls import PullError, pull  # the hubs' clients: only when pulling

    printer = ProgressPrinter()
    try:
        manifest = pull(ref, settings, detect_hardware(), store(settings), printer)
    except KeyboardInterrupt:
        printer._end_bar()
        raise PullError("interrupted: run the same command again to resume where it stopped") from None
    finally:
        printer._end_bar()
    if as_json:
        return to_json(manifest.to_json())
    return f"{manifest.ref}: ready (`appliance serve {manifest.ref}`, or name it in requests)"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `pull`."""
    pull = commands.add_parser(
        "pull",
        parents=[common, budget_flags],
        help="download a model: the quantization that fits this machine",
        description="Pull a GGUF model from Hugging Face (owner/name[:QUANT]; honours HF_ENDPOINT and "
        "HF_TOKEN) or Ollama's registry (ollama:NAME[:TAG]). Without QUANT, the planner reads each "
        "quantization's header remotely and picks the best that fits, before downloading. Resumable.",
    )
    pull.add_argument("ref", metavar="REF", help="owner/name[:QUANT] or ollama:NAME[:TAG]")
    pull.add_argument("--ctx", type=int, help="plan for this context length (default: 4096)")
    pull.add_argument("--json", action="store_true", help="print the stored manifest as JSON at the end")
    pull.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Pull, printing progress; the exit status."""
    from appliance.pulls import PullError

    loaded = settings(args, model={"n_ctx": args.ctx, "gpus": gpus(args)}, planner=budgets(args))
    try:
        print(run_pull(loaded, args.ref, args.json))
    except PullError as exc:
        raise UserError(str(exc)) from None
    return 0
