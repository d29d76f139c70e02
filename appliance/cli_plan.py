"""`appliance plan MODEL`: what would be loaded and why, without loading it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from appliance.config import Settings
from appliance.hardware.detect import detect_hardware
from appliance.planner.model_info import ModelInfo, read_model_info
from appliance.planner.plan import Plan
from appliance.planning import choose_plan, load_options
from models.gguf_header import GGUFError
from models.naming import model_id_from_path

MIB = 1 << 20


class PlanError(Exception):
    """The model cannot be planned (missing, not GGUF, truncated, unknown architecture)."""


def local_candidates(model: str) -> list[ModelInfo] | None:
    """What ``model`` names on this machine: a .gguf file or a directory of one model's quantizations,
    or an installed name (a bare name: every installed tag). None when it names nothing here."""
    path = Path(model).expanduser()
    if path.exists():
        return candidates(path)
    from appliance.inventory import installed_named

    named = installed_named(model)
    return candidates_of([m.path for m in named]) if named else None


def candidates_for(model: str) -> list[ModelInfo]:
    """What ``model`` names: what :func:`local_candidates` finds, else a hub repo ``owner/name[:QUANT]``
    (every quantization, read from its remote header) or ``ollama:NAME[:TAG]``."""
    found = local_candidates(model)
    if found is not None:
        return found
    if model.startswith("ollama:") or re.match(r"^[\w.\-]+/[\w.\-]+(:[\w.\-]+)?$", model):
        return _remote_candidates(model)
    raise PlanError(f"no such file or installed model: {model} (`appliance list` shows what is installed)")


def _remote_candidates(ref: str) -> list[ModelInfo]:
    from appliance.pulls import PullError, hf_candidates, ollama_candidate
    from models import hf, ollama

    try:
        if ref.startswith("ollama:"):
            return [ollama_candidate(ref)[2]]
        _, infos = hf_candidates(*hf.parse_repo_ref(ref))
    except (PullError, hf.HubError, ollama.OllamaError, GGUFError) as exc:
        raise PlanError(str(exc)) from None
    return [info for _, info in infos.values()]


def candidates_of(files: list[Path]) -> list[ModelInfo]:
    try:
        return [read_model_info(p) for p in files]
    except GGUFError as exc:
        raise PlanError(str(exc)) from None


def candidates(target: Path) -> list[ModelInfo]:
    """One file, or every quantization of one model in a directory (one file = one choice)."""
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
    """The plan for ``target`` on this machine, and llama.cpp's own figures from a dry run (only for
    a local file)."""
    hardware = detect_hardware()
    chosen = choose_plan(candidates_for(target), hardware, settings)
    figures = None
    if dry_run and chosen.fits and Path(chosen.model.path).is_file():
        from appliance.engine.llama import dry_run as llama_dry_run
        from appliance.errors import ModelLoadFailed

        try:
            result = llama_dry_run(
                Path(chosen.model.path), load_options(chosen, hardware, settings.model.n_threads)
            )
        except ModelLoadFailed as exc:
            raise PlanError(exc.message) from None
        figures = {
            "kv_bytes": result.kv_bytes,
            "compute_reserved_bytes": result.compute_bytes,
            "output_bytes": result.output_bytes,
        }
    return chosen, figures


def plan_json(chosen: Plan, figures: dict[str, Any] | None) -> str:
    data = chosen.to_json()
    if figures is not None:
        data["llama_cpp"] = figures
    return json.dumps(data, indent=2)


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def plan_text(chosen: Plan, figures: dict[str, Any] | None) -> str:
    m, s, mem = chosen.model, chosen.settings, chosen.memory
    where = (
        "CPU"
        if not s.gpu_backend
        else ("GPU" if s.n_gpu_layers < 0 else f"{s.n_gpu_layers} layers on the GPU")
    )
    lines = [
        f"{m.name} ({Path(m.path).name}): {m.quant}, context {s.n_ctx}, KV {s.kv_type}, {where}"
        + ("" if chosen.fits else " — DOES NOT FIT"),
        f"  memory   weights {_mib(mem.weights_bytes)}, KV {_mib(mem.kv_bytes)}, "
        f"compute {_mib(mem.compute_bytes)} -> {_mib(mem.ram_bytes)} RAM, {_mib(mem.vram_bytes)} VRAM",
        f"  budget   {_mib(chosen.budget.ram_bytes)} RAM, {_mib(chosen.budget.vram_bytes)} VRAM",
    ]
    if figures is not None:
        compute = ", ".join(
            f"{name} {_mib(size)}" for name, size in figures["compute_reserved_bytes"].items()
        )
        lines.append(
            f"  llama.cpp dry run: KV {_mib(figures['kv_bytes'])}, compute buffers reserved {compute}"
        )
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
