"""Layers across several GPUs: which cards a plan uses, in which order, and how many layers each holds.

llama.cpp's layer split (llama-model.cpp, load_tensors) hands the offloaded positions (the last
n_gpu - 1 repeating layers, then the output layer) to the devices in the order it gets them, in
proportion to ``tensor_split``; each layer's KV cache lives with it. So the GPU that should carry the
output layer and the logits' compute buffer, the one with the most free memory (the main GPU), goes
last. Layer counts passed as ``tensor_split`` reproduce exactly the split the planner chose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from appliance.planner.memory import LoadSettings, MemoryEstimate, device_memory, kv_layer_bytes
from appliance.planner.model_info import ModelInfo


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
