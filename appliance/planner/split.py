"""Layers across several GPUs: which cards a plan uses, in which order, and how many layers each holds.

llama.cpp's layer split (llama-model.cpp, load_tensors) hands the offloaded positions (the last
n_gpu - 1 repeating layers, then the output layer) to the devices in the order it gets them, in
proportion to ``tensor_split``; each layer's KV cache lives with it. So the GPU that should carry the
output layer and the logits' compute buffer, the one with the most free memory (the main GPU), goes
last. Layer counts passed as ``tensor_split`` reproduce exactly the split the planner chose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from appliance.hardware.profile import GpuInfo, HardwareProfile
from appliance.planner.memory import LoadSettings, MemoryEstimate, device_memory, kv_layer_bytes
from appliance.planner.model_info import ModelInfo

GIB = 1 << 30


@dataclass(frozen=True)
class GpuBudget:
    """The memory a plan may use on one GPU."""

    index: int  # as `appliance hw` lists it
    name: str
    vram_bytes: int


def gpu_sets(gpus: tuple[GpuBudget, ...]) -> list[tuple[int, ...]]:
    """The sets of GPUs worth trying for a model that fits wholly on GPUs, fewest first: the main GPU
    (the largest budget) alone, then with the next largest, and so on. Each set is in llama.cpp's order:
    the others by index, the main GPU last (it gets the output layer)."""
    ranked = sorted(gpus, key=lambda g: (-g.vram_bytes, g.index))
    out = []
    for n in range(1, len(ranked) + 1):
        main, others = ranked[0], sorted(g.index for g in ranked[1:n])
        out.append((*others, main.index))
    return out


def _usage(model: ModelInfo, settings: LoadSettings, kv_layers: list[int]) -> list[int]:
    return [d.vram_bytes for d in device_memory(model, settings, kv_layers)]


def choose_split(model: ModelInfo, settings: LoadSettings, budgets: dict[int, int]) -> LoadSettings:
    """``settings`` with the layers of its GPUs (``settings.gpus``) split so that each GPU's memory fits
    its budget (``budgets`` by GPU index), if any split does: first in proportion to what each GPU has
    left after its fixed costs (runtime, compute buffer, the output layer on the last), then moved one
    at a time from a GPU over its budget to the one with the most room. One GPU: no split."""
    if len(settings.gpus) < 2 or settings.gpu_backend is None or settings.n_gpu_layers == 0:
        return replace(settings, split=())
    n_layer = model.n_layer
    n_gpu = n_layer + 1 if settings.n_gpu_layers < 0 else min(settings.n_gpu_layers, n_layer + 1)
    k = len(settings.gpus)
    kv_layers = kv_layer_bytes(model, settings)
    limits = [budgets[g] for g in settings.gpus]
    positions = range(n_layer + 1 - n_gpu, n_layer)  # the repeating layers offloaded
    layer_cost = [model.layer_bytes[il] + kv_layers[il] for il in positions]
    # Fixed costs: what each GPU holds with no repeating layer (the last still has the output layer).
    fixed = _usage(model, replace(settings, split=(0,) * (k - 1) + (n_gpu,)), kv_layers)
    fixed[-1] -= sum(layer_cost)
    room = [max(limit - cost, 0) for limit, cost in zip(limits, fixed, strict=True)]
    repeating = n_gpu - 1
    total_room = sum(room)
    shares = [repeating * r / total_room for r in room] if total_room > 0 else [repeating / k] * k
    counts = [int(s) for s in shares]
    for i in sorted(range(k), key=lambda i: shares[i] - counts[i], reverse=True)[: repeating - sum(counts)]:
        counts[i] += 1
    counts[-1] += 1  # the output layer
    for _ in range(n_gpu * k):
        current = replace(settings, split=tuple(counts))
        used = _usage(model, current, kv_layers)
        over = [u - limit for u, limit in zip(used, limits, strict=True)]
        worst = max(range(k), key=lambda i: over[i])
        if over[worst] <= 0:
            return current
        donors = counts[worst] - (1 if worst == k - 1 else 0)
        roomiest = min(range(k), key=lambda i: over[i])
        if donors <= 0 or roomiest == worst or -over[roomiest] < max(layer_cost, default=0):
            return current  # no GPU has room for another layer: this split does not fit
        counts[worst] -= 1
        counts[roomiest] += 1
    return replace(settings, split=tuple(counts))


def device_fits(memory: MemoryEstimate, budgets: dict[int, int]) -> bool:
    """Whether each GPU of ``memory`` stays within its budget (GPUs not named by index: not checked here)."""
    return all(d.gpu is None or d.vram_bytes <= budgets.get(d.gpu, 0) for d in memory.devices)


def selected_gpus(hardware: HardwareProfile, indices: tuple[int, ...] | None = None) -> tuple[GpuInfo, ...]:
    """The GPUs a plan may use: those the llama.cpp build can use, restricted to ``indices`` (--gpus).
    Several only where they are discrete GPUs of one backend (a layer split); else the main GPU alone."""
    gpus = hardware.usable_gpus
    if indices is not None:
        gpus = tuple(g for g in gpus if g.index in indices)
    if not gpus:
        return ()
    # Where llama.cpp's registry names the GPUs, one it does not name is one it cannot see (hidden by
    # CUDA_VISIBLE_DEVICES, say): the engine could not place layers on it.
    if any(g.device for g in gpus):
        gpus = tuple(g for g in gpus if g.device)
    main = max(gpus, key=lambda g: g.free_bytes)
    if main.unified_memory:
        return (main,)
    return tuple(g for g in gpus if g.backend == main.backend and not g.unified_memory)


def unknown_gpus(hardware: HardwareProfile, indices: tuple[int, ...] | None) -> str | None:
    """Why ``indices`` (--gpus) cannot be used as given (an index no usable GPU has), or None."""
    if indices is None:
        return None
    usable = {g.index for g in hardware.usable_gpus}
    missing = [i for i in indices if i not in usable]
    if not missing and indices:
        return None
    have = ", ".join(str(i) for i in sorted(usable)) or "none"
    named = ", ".join(str(i) for i in missing) if missing else "no GPU"
    return (
        f"GPU {named} cannot be used (--gpus / model.gpus): the GPUs this llama.cpp build can use are "
        f"{have} (see appliance hw)"
    )


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def split_budgets(
    gpus: tuple[GpuInfo, ...], margin_bytes: int, cap_bytes: int | None
) -> tuple[tuple[GpuBudget, ...], list[str]]:
    """Several discrete GPUs' budgets, the main GPU first, and why: each its free memory minus the
    margin; an explicit --max-vram caps their sum, each GPU keeping its share."""
    ranked = sorted(gpus, key=lambda g: (-g.free_bytes, g.index))
    each = [max(g.free_bytes - margin_bytes, 0) for g in ranked]
    reasons = [
        f"VRAM budget {_gib(sum(each))} on {len(ranked)} GPUs: "
        + ", ".join(f"{_gib(b)} on GPU {g.index} ({g.name})" for g, b in zip(ranked, each, strict=True))
        + f", each its free memory minus {_gib(margin_bytes)} kept free"
    ]
    if cap_bytes is not None and cap_bytes < sum(each):
        total = sum(each)
        each = [b * cap_bytes // total for b in each]
        reasons.append(f"VRAM capped at {_gib(cap_bytes)} (--max-vram), shared by the GPUs in proportion")
    return tuple(GpuBudget(g.index, g.name, b) for g, b in zip(ranked, each, strict=True)), reasons


def split_reason(memory: MemoryEstimate, gpus: tuple[GpuBudget, ...]) -> str:
    """The reason a plan gives for its split: the layers and memory of each GPU."""
    names = {g.index: g.name for g in gpus}
    parts = [
        f"{d.layers} on GPU {d.gpu} ({names.get(d.gpu or 0, '')}, {_gib(d.vram_bytes)})"
        for d in memory.devices
    ]
    return (
        f"layers split across {len(parts)} GPUs: {', '.join(parts)}; in proportion to what each has "
        "free after its reserve, the GPU with the most free memory last, holding the output layer and "
        "the logits' compute buffer"
    )
