"""`appliance plan MODEL`: what would be loaded and why, without loading it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.cli.common import budgets, gpus, settings, to_json
from appliance.config import Settings
from appliance.errors import UserError

# The planner, the GGUF reader (numpy) and the hubs' clients are imported by the functions that use them,
# so that building the command line for any command stays light.
if TYPE_CHECKING:
    from appliance.planner.model_info import ModelInfo
    from appliance.planner.plan import Plan

MIB = 1 << 20
GIB = 1 << 30


class PlanError(Exception):
    """The model cannot be planned (missing, not GGUF, truncated, unknown architecture)."""


def local_candidates(model: str, settings: Settings) -> list[ModelInfo] | None:
    """What ``model`` names on this machine: a .gguf file or a directory of one model's quantizations,
    or an installed name (a bare name: every installed tag). None when it names nothing here."""
    path = Path(model).expanduser()
    if path.exists():
        return candidates(path)
    from appliance.inventory import installed_named

    named = installed_named(settings, model)
    return candidates_of([m.path for m in named]) if named else None


def candidates_for(model: str, settings: Settings) -> list[ModelInfo]:
    """What ``model`` names: what :func:`local_candidates` finds, else a hub repo ``owner/name[:QUANT]``
    (every quantization, read from its remote header) or ``ollama:NAME[:TAG]``."""
    found = local_candidates(model, settings)
    if found is not None:
        return found
    if model.startswith("ollama:") or re.match(r"^[\w.\-]+/[\w.\-]+(:[\w.\-]+)?$", model):
        return _remote_candidates(model)
    raise PlanError(f"no such file or installed model: {model} (`appliance list` shows what is installed)")


def _remote_candidates(ref: str) -> list[ModelInfo]:
    from appliance.pulls import PullError, hf_candidates, ollama_candidate
    from models import hf, ollama
    from models.gguf_header import GGUFError

    try:
        if ref.startswith("ollama:"):
            return [ollama_candidate(ref)[2]]
        _, infos = hf_candidates(*hf.parse_repo_ref(ref))
    except (PullError, hf.HubError, ollama.OllamaError, GGUFError) as exc:
        raise PlanError(str(exc)) from None
    return [info for _, info in infos.values()]


def candidates_of(files: list[Path]) -> list[ModelInfo]:
    from appliance.planner.model_info import read_model_info
    from models.gguf_header import GGUFError

    try:
        return [read_model_info(p) for p in files]
    except GGUFError as exc:
        raise PlanError(str(exc)) from None


def candidates(target: Path) -> list[ModelInfo]:
    """One file, or every quantization of one model in a directory (one file = one choice)."""
    from models.naming import model_id_from_path

    if target.is_dir():
        files = sorted(p for p in target.glob("*.gguf") if "-of-" not in p.name or "-00001-of-" in p.name)
        if not files:
            raise PlanError(f"no .gguf file in {target}")
        ids = {model_id_from_path(p) for p in files}
        if len(ids) > 1:
            raise PlanError(f"{target} holds several models ({', '.join(sorted(ids))}): name one file")
    elif target.exists():
        files = [target]
    else:
        raise PlanError(f"no such file: {target}")
    return candidates_of(files)


def make_plan(settings: Settings, target: str, *, dry_run: bool = True) -> tuple[Plan, dict[str, Any] | None]:
    """The plan for ``target`` on this machine (with its own `[models."ID"]` settings), and llama.cpp's
    own figures from a dry run (only for a local file)."""
    from appliance.drafting import plan_draft
    from appliance.errors import DraftModelError
    from appliance.hardware.detect import detect_hardware
    from appliance.planning import choose_plan, load_options

    hardware = detect_hardware()
    settings = settings.for_model(target, target.partition(":")[0])  # its [models."ID"]: context, KV type
    chosen = choose_plan(candidates_for(target, settings), hardware, settings)
    try:
        chosen = plan_draft(chosen, settings)
    except DraftModelError as exc:
        raise PlanError(exc.message) from None
    figures = None
    if dry_run and chosen.fits and Path(chosen.model.path).is_file():
        from appliance.engine.dry_run import dry_run as llama_dry_run
        from appliance.errors import ModelLoadFailed

        try:
            result = llama_dry_run(Path(chosen.model.path), load_options(chosen, hardware, settings.model))
        except ModelLoadFailed as exc:
            raise PlanError(exc.message) from None
        figures = {
            "kv_bytes": result.kv_bytes,
            "compute_reserved_bytes": result.compute_bytes,
            "output_bytes": result.output_bytes,
        }
    return chosen, figures


def measured(settings: Settings, chosen: Plan) -> dict[str, Any] | None:
    """What `appliance eval` kept for the planned file (None: nothing, or not a file here)."""
    from appliance.evaluation.results import load_results
    from models.gguf_header import GGUFError

    path = Path(chosen.model.path)
    try:
        return load_results(settings.dirs.data, path) if path.is_file() else None
    except (GGUFError, OSError):
        return None


def cold_start(chosen: Plan, settings: Settings) -> dict[str, Any] | None:
    """How long reading the planned file takes with nothing cached, from the storage it is on (for a
    hub repo, the store it would be pulled into); None where that storage's speed is unknown."""
    from appliance.hardware.storage import KIND_NAMES, detect_storage

    where = Path(chosen.model.path)
    if not where.is_file():
        where = next((p for p in (settings.dirs.models, *settings.dirs.models.parents) if p.exists()), where)
    storage = detect_storage(where)
    if storage is None:
        return None
    return {
        "storage": storage.kind,
        "storage_name": KIND_NAMES[storage.kind],
        "device": storage.device,
        "read_bytes_per_s": storage.read_bytes_per_s,
        "file_bytes": chosen.model.file_bytes,
        "seconds": round(storage.cold_start_s(chosen.model.file_bytes), 1),
    }


def cold_start_line(load: dict[str, Any]) -> str:
    """The plan's line for ``cold_start``'s figures."""
    return (
        f"  cold start ~{load['seconds']:.0f} s: {load['file_bytes'] / GIB:.1f} GiB read from "
        f"{load['storage_name']} ({load['device']}) at ~{load['read_bytes_per_s'] // 1_000_000} MB/s; "
        "faster while the file is still in the page cache"
    )


def plan_json(chosen: Plan, figures: dict[str, Any] | None, results: dict[str, Any] | None = None,
              load: dict[str, Any] | None = None) -> str:  # fmt: skip
    data = chosen.to_json()
    if load is not None:
        data["cold_start"] = load
    if figures is not None:
        data["llama_cpp"] = figures
    if results is not None:
        data["measured"] = results
    return to_json(data)


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def plan_text(chosen: Plan, figures: dict[str, Any] | None, results: dict[str, Any] | None = None,
              load: dict[str, Any] | None = None) -> str:  # fmt: skip
    m, s, mem = chosen.model, chosen.settings, chosen.memory
    gpus = f"{len(s.split)} GPUs" if len(s.split) > 1 else "GPU"
    where = (
        "CPU"
        if not s.gpu_backend
        else (gpus if s.n_gpu_layers < 0 else f"{s.n_gpu_layers} layers on the {gpus}")
    )
    lines = [
        f"{m.name} ({Path(m.path).name}): {m.quant}, context {s.n_ctx}, KV {s.kv_type}, {where}"
        + ("" if chosen.fits else " — DOES NOT FIT"),
        f"  memory   weights {_mib(mem.weights_bytes)}, KV {_mib(mem.kv_bytes)}, "
        f"compute {_mib(mem.compute_bytes)} -> {_mib(mem.ram_bytes)} RAM, {_mib(mem.vram_bytes)} VRAM",
        f"  budget   {_mib(chosen.budget.ram_bytes)} RAM, {_mib(chosen.budget.vram_bytes)} VRAM",
    ]
    if len(mem.devices) > 1:
        for device in chosen.devices_json():
            output = ", with the output layer" if device["output_layer"] else ""
            lines.append(
                f"  GPU {device['index']}    {device['name']}: {device['layers']} layers{output}; weights "
                f"{_mib(device['weights_bytes'])}, KV {_mib(device['kv_bytes'])}, compute "
                f"{_mib(device['compute_bytes'])} -> {_mib(device['vram_bytes'])} VRAM of "
                f"{_mib(device['budget_bytes'])}"
            )
    if figures is not None:
        compute = ", ".join(
            f"{name} {_mib(size)}" for name, size in figures["compute_reserved_bytes"].items()
        )
        lines.append(
            f"  llama.cpp dry run: KV {_mib(figures['kv_bytes'])}, compute buffers reserved {compute}"
        )
    if load is not None:
        lines.append(cold_start_line(load))
    if results:
        from appliance.evaluation.results import results_summary

        lines.append(f"  measured {results_summary(results)}")
    lines.append("  why")
    lines.extend(f"    - {reason}" for reason in chosen.reasons)
    if len(chosen.alternatives) > 1:
        lines.append("  alternatives")
        for o in chosen.alternatives:
            lines.append(
                f"    {o.model.quant:8} context {o.settings.n_ctx:>6}  {_mib(o.memory.ram_bytes):>10} RAM "
                f"{_mib(o.memory.vram_bytes):>10} VRAM  {'fits' if o.fits else 'does not fit'}"
            )
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `plan`."""
    plan = commands.add_parser(
        "plan",
        parents=[common, budget_flags],
        help="show what would be loaded and why, without loading it",
        description="Plan a model for this machine: quantization, context, GPU layers, memory, and why.",
    )
    plan.add_argument(
        "model",
        metavar="MODEL",
        help="a .gguf file, a directory of one model's quantizations, an installed name, "
        "a hub repo owner/name[:QUANT] or ollama:NAME[:TAG]",
    )
    plan.add_argument("--ctx", type=int, help="context length in tokens (default: 4096, less if needed)")
    plan.add_argument("--parallel", type=int, help="sequences served at once")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--no-dry-run", action="store_true", help="skip llama.cpp's dry-run check")
    plan.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan; the exit status (1 when the model does not fit)."""
    loaded = settings(
        args,
        model={"n_ctx": args.ctx, "n_parallel": args.parallel, "gpus": gpus(args)},
        planner=budgets(args),
    )
    try:
        chosen, figures = make_plan(loaded, args.model, dry_run=not args.no_dry_run)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    results, load = measured(loaded, chosen), cold_start(chosen, loaded)
    print(
        plan_json(chosen, figures, results, load) if args.json else plan_text(chosen, figures, results, load)
    )
    if not chosen.fits:
        raise UserError(chosen.reasons[0])
    return 0
