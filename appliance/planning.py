"""Glue between the pure planner and the world: settings, files, hardware and llama.cpp's dry run."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from appliance.config import ModelSettings, Settings
from appliance.engine.params import LoadOptions
from appliance.hardware.profile import HardwareProfile
from appliance.planner.model_info import ModelInfo
from appliance.planner.plan import Plan, PlanRequest, plan, plan_auto_parallel
from appliance.units import parse_size

log = logging.getLogger(__name__)


def plan_request(settings: Settings) -> PlanRequest:
    """The planner's request from the merged settings (config file, environment, CLI flags)."""
    planner, model = settings.planner, settings.model

    def size(value: str | None) -> int | None:
        return parse_size(value) if value is not None else None

    return PlanRequest(
        n_ctx=model.n_ctx,
        n_parallel=model.n_parallel or 1,
        n_batch=model.n_batch,
        n_ubatch=model.n_ubatch,
        flash_attn=model.flash_attn,
        n_gpu_layers=model.n_gpu_layers,
        max_ram_bytes=size(planner.max_ram),
        max_vram_bytes=size(planner.max_vram),
        ram_margin_bytes=size(planner.ram_margin),
        vram_margin_bytes=parse_size(planner.vram_margin),
        quality_floor_bpw=planner.quality_floor_bpw,
        kv_type=model.kv_type,
        gpus=tuple(model.gpus) if model.gpus is not None else None,
    )


def choose_plan(candidates: list[ModelInfo], hardware: HardwareProfile, settings: Settings) -> Plan:
    """The plan for the settings; the planner picks the number of slots unless they are configured."""
    request = plan_request(settings)
    if settings.model.n_parallel is None:
        return plan_auto_parallel(candidates, hardware, request)
    return plan(candidates, hardware, request)


def widened(
    info: ModelInfo, hardware: HardwareProfile, settings: Settings, plan: Plan, per_slot: int
) -> Plan:
    """``plan`` again with ``per_slot`` tokens of context in each of its slots (as many slots)."""
    slots = plan.settings.n_parallel
    model = settings.model.model_copy(update={"n_ctx": per_slot * slots, "n_parallel": slots})
    return choose_plan([info], hardware, settings.model_copy(update={"model": model}))


def largest_context(
    info: ModelInfo, hardware: HardwareProfile, settings: Settings, plan: Plan, most: int
) -> int:
    """The largest context per slot, below ``most``, that ``plan``'s slots can have on ``hardware``
    (at least what they have now), found by bisection: each try is a pure plan."""
    low, high = plan.settings.n_ctx // plan.settings.n_parallel, most  # low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        if widened(info, hardware, settings, plan, middle).fits:
            low = middle
        else:
            high = middle
    return low


def load_options(plan: Plan, hardware: HardwareProfile, model: ModelSettings) -> LoadOptions:
    """llama.cpp settings that carry out ``plan``, with ``model``'s threads and repacking."""
    s = plan.settings
    cpu = hardware.cpu
    # On big.LITTLE boards (RK3588) only the big cores: llama.cpp splits each matrix evenly across its
    # threads, so a thread on a LITTLE core holds the others back.
    big_little = cpu.cores_performance is not None and cpu.cores_performance < cpu.cores_physical
    threads = model.n_threads or (cpu.cores_performance if big_little else None) or cpu.cores_physical
    return LoadOptions(
        n_ctx=s.n_ctx,
        n_batch=s.n_batch,
        n_ubatch=s.n_ubatch,
        n_threads=threads,
        n_threads_batch=threads if big_little else max(threads, cpu.cores_logical),
        n_gpu_layers=s.n_gpu_layers if s.gpu_backend else 0,
        flash_attn="on" if s.flash_attn else "off",
        n_seq_max=s.n_parallel,
        kv_type=s.kv_type,
        repack=model.cpu_repack,
        **gpu_placement(plan, hardware),
    )


def gpu_placement(plan: Plan, hardware: HardwareProfile) -> dict[str, Any]:
    """LoadOptions' devices, tensor_split and main_gpu for ``plan``'s GPUs: llama.cpp's names for them in
    the plan's order (the main GPU last, with the output layer) and each one's layer count as its share.
    Nothing where the plan is on the CPU or names a GPU llama.cpp's registry did not list (llama.cpp
    then chooses, as it always has for one GPU)."""
    s = plan.settings
    if not s.gpu_backend or s.n_gpu_layers == 0 or not s.gpus:
        return {}
    names = {g.index: g.device for g in hardware.gpus}
    devices = tuple(names.get(i) for i in s.gpus)
    if not all(devices):
        return {}
    split = tuple(float(n) for n in s.split) if len(s.split) > 1 else ()
    return {"devices": devices, "tensor_split": split, "main_gpu": len(devices) - 1}


def fallback_ladder(options: LoadOptions, model: ModelInfo) -> list[LoadOptions]:
    """What to try, in order, if a load still fails for memory: the plan, then half the context
    (down to 1024), then a q8_0 KV cache, then half the GPU layers, then the CPU alone."""
    ladder = [options]
    current = options
    n_ctx = current.n_ctx or 4096
    while n_ctx // 2 >= 1024:
        n_ctx //= 2
        current = replace(current, n_ctx=n_ctx)
        ladder.append(current)
    if current.kv_type == "f16" and current.flash_attn != "off":
        current = replace(current, kv_type="q8_0")
        ladder.append(current)
    layers = current.n_gpu_layers if current.n_gpu_layers >= 0 else model.n_layer + 1
    while layers > 1:
        layers //= 2
        current = replace(current, n_gpu_layers=layers)
        ladder.append(current)
    if current.n_gpu_layers != 0:
        ladder.append(replace(current, n_gpu_layers=0, devices=(), tensor_split=(), main_gpu=0))
    return ladder


def describe_options(options: LoadOptions) -> str:
    where = ""
    if options.n_gpu_layers != 0 and len(options.devices) > 1:
        shares = ", ".join(f"{d} {s:g}" for d, s in zip(options.devices, options.tensor_split, strict=False))
        where = f" split across {shares}"
    elif options.n_gpu_layers != 0 and options.devices:
        where = f" on {options.devices[0]}"
    return (
        f"context {options.n_ctx}, KV {options.kv_type}, "
        f"{'all' if options.n_gpu_layers < 0 else options.n_gpu_layers} GPU layers{where}"
    )


def fit_label(plan: Plan) -> str:
    """``full`` (fits, wholly on the GPU if there is one), ``partial`` (fits split between GPU and CPU)
    or ``no``: the `fits` of `appliance list`."""
    if not plan.fits:
        return "no"
    s = plan.settings
    all_on_gpu = bool(s.gpu_backend) and (s.n_gpu_layers < 0 or s.n_gpu_layers > plan.model.n_layer)
    has_gpu = plan.budget.vram_bytes > 0
    return "partial" if has_gpu and not all_on_gpu else "full"
