"""The configured draft model (`model.draft_model`), found and checked, then planned beside the served
model (appliance.planner.draft): the glue between the settings, the files and the pure planner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from appliance.config import Settings
from appliance.engine.params import DraftSpec, LoadOptions
from appliance.errors import DraftModelError
from appliance.planner.draft import draft_mismatch, with_draft
from appliance.planner.model_info import ModelInfo, read_model_info
from appliance.planner.plan import Plan
from models.gguf_header import GGUFError


def draft_path(name: str, settings: Settings) -> Path:
    """The file ``name`` (a .gguf path or an installed model's name) stands for."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from appliance.inventory import installed_named

    named = installed_named(settings, name)
    if not named:
        raise DraftModelError(
            f"draft model {name}: no such file or installed model (`appliance list` shows what is installed)"
        )
    return min(
        named, key=lambda m: m.path.stat().st_size
    ).path  # of several tags, the smallest drafts fastest


def read_draft(name: str, settings: Settings) -> ModelInfo:
    """The header of the draft model ``name``."""
    path = draft_path(name, settings)
    try:
        return read_model_info(path)
    except (GGUFError, OSError) as exc:
        raise DraftModelError(f"draft model {name}: {exc}") from None


def plan_draft(plan: Plan, settings: Settings) -> Plan:
    """``plan`` with the settings' draft model (`model.draft_model`, the model's own first) beside its model
    where it fits (appliance.planner.draft); ``plan`` itself where none is configured. DraftModelError
    where the draft cannot be read or has another vocabulary."""
    name = settings.model.draft_model
    if not name:
        return plan
    draft = read_draft(name, settings)
    problem = draft_mismatch(plan.model, draft)
    if problem:
        raise DraftModelError(f"draft model {name} cannot draft for {plan.model.name}: {problem}")
    return with_draft(plan, draft, settings.model.draft_gpu_layers)


def draft_spec(plan: Plan, options: LoadOptions, p_min: float) -> DraftSpec | None:
    """How to load ``plan``'s draft model beside a model loaded with ``options`` (its threads, context,
    slots, batch and KV type; its own GPU layers, on the model's main GPU); None without a draft."""
    if plan.draft is None:
        return None
    s = plan.draft.settings
    layers = s.n_gpu_layers if s.gpu_backend else 0
    devices = options.devices[-1:] if layers else ()
    draft_options = replace(options, n_gpu_layers=layers, devices=devices, tensor_split=(), main_gpu=0)
    return DraftSpec(Path(plan.draft.model.path), draft_options, p_min)
