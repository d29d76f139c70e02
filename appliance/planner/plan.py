"""Choose what to load: quantization, GPU layers, context and KV type, with a reason for each choice.

A pure function over plain data (``plan(candidates, hardware, request)``): no I/O, so it is tested with a
table of machines and models.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from appliance.hardware.profile import GpuInfo, HardwareProfile
from appliance.planner.memory import (
    MIB,
    LoadSettings,
    MemoryEstimate,
    cpu_has_amx,
    cpu_repack_types,
    estimate,
)
from appliance.planner.model_info import ModelInfo
from appliance.planner.split import (
    GpuBudget,
    choose_split,
    device_fits,
    gpu_sets,
    selected_gpus,
    split_budgets,
    split_reason,
    unknown_gpus,
)

GIB = 1 << 30
USEFUL_CTX = 4096


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for, and the budget policy."""

    # The KV cache's total tokens, shared equally by the parallel slots (llama-server's -c). None:
    # USEFUL_CTX per slot (or the trained context if smaller), reduced if needed.
    n_ctx: int | None = None
    n_parallel: int = 1
    n_batch: int = 2048
    n_ubatch: int = 512
    flash_attn: str = "auto"  # auto | on | off
    n_gpu_layers: int | None = None  # None: the planner decides
    max_ram_bytes: int | None = None  # explicit caps: used as they are, no margin taken off
    max_vram_bytes: int | None = None
    ram_margin_bytes: int | None = None  # None: 10% of RAM, between 256 MiB and 2 GiB
    vram_margin_bytes: int = 512 * MIB
    quality_floor_bpw: float = 3.3  # below this (Q2_K, IQ2...) only if nothing better fits, and said
    kv_type: str | None = None  # f16 | q8_0 | q4_0; None: f16, q8_0 when that is what fits
    gpus: tuple[int, ...] | None = None  # the GPUs (indices of `appliance hw`) it may use; None: every one


@dataclass(frozen=True)
class Budget:
    ram_bytes: int
    vram_bytes: int
    reasons: tuple[str, ...]
    # An explicit --max-ram holds for everything the plan adds, reclaimable file pages included.
    ram_cap_bytes: int | None = None
    # Each discrete GPU the plan may use, the main GPU (most free memory) first; vram_bytes is their sum.
    gpus: tuple[GpuBudget, ...] = ()

    def gpu_budgets(self) -> dict[int, int]:
        """The VRAM budget of each GPU, by index."""
        return {g.index: g.vram_bytes for g in self.gpus}


@dataclass(frozen=True)
class Option:
    """One way to load one candidate."""

    model: ModelInfo
    settings: LoadSettings
    memory: MemoryEstimate
    fits: bool


@dataclass(frozen=True)
class Plan:
    model: ModelInfo
    settings: LoadSettings
    memory: MemoryEstimate
    budget: Budget
    fits: bool
    reasons: tuple[str, ...]
    alternatives: tuple[Option, ...] = field(default=())
    # The draft model loaded beside it (appliance.planner.draft), its memory counted in ``memory``.
    draft: Option | None = None

    def to_json(self) -> dict[str, Any]:
        """The plan JSON of INTERFACES.md."""
        return {
            "model": self.model.name,
            "file": self.model.path,
            "quant": self.model.quant,
            "n_ctx": self.settings.n_ctx,
            "n_batch": self.settings.n_batch,
            "n_ubatch": self.settings.n_ubatch,
            "n_parallel": self.settings.n_parallel,
            "n_gpu_layers": self.settings.n_gpu_layers,
            "n_layers": self.model.n_layer,
            "flash_attn": self.settings.flash_attn,
            "kv_type": self.settings.kv_type,
            "memory": {
                "weights_bytes": self.memory.weights_bytes,
                "kv_bytes": self.memory.kv_bytes,
                "compute_bytes": self.memory.compute_bytes,
                "ram_bytes": self.memory.ram_bytes,
                "vram_bytes": self.memory.vram_bytes,
            },
            "devices": self.devices_json(),
            "budget": {"ram_bytes": self.budget.ram_bytes, "vram_bytes": self.budget.vram_bytes},
            "fits": self.fits,
            "reasons": list(self.reasons),
            "draft": None if self.draft is None else self.draft_json(),
            "alternatives": [
                {
                    "quant": o.model.quant,
                    "file": o.model.path,
                    "n_ctx": o.settings.n_ctx,
                    "n_gpu_layers": o.settings.n_gpu_layers,
                    "kv_type": o.settings.kv_type,
                    "ram_bytes": o.memory.ram_bytes,
                    "vram_bytes": o.memory.vram_bytes,
                    "fits": o.fits,
                }
                for o in self.alternatives
            ],
        }

    def draft_json(self) -> dict[str, Any]:
        """The draft model and its own share of ``memory``."""
        assert self.draft is not None
        d = self.draft
        return {
            "model": d.model.name,
            "file": d.model.path,
            "quant": d.model.quant,
            "n_gpu_layers": d.settings.n_gpu_layers if d.settings.gpu_backend else 0,
            "weights_bytes": d.memory.weights_bytes,
            "kv_bytes": d.memory.kv_bytes,
            "ram_bytes": d.memory.ram_bytes,
            "vram_bytes": d.memory.vram_bytes,
        }

    def devices_json(self) -> list[dict[str, Any]]:
        """Memory per GPU, in the order llama.cpp gets them (the last holds the output layer)."""
        names = {g.index: g.name for g in self.budget.gpus}
        budgets = self.budget.gpu_budgets()
        return [
            {
                "index": d.gpu,
                "name": names.get(d.gpu, "") if d.gpu is not None else "",
                "layers": d.layers,
                "output_layer": i == len(self.memory.devices) - 1,
                "weights_bytes": d.weights_bytes,
                "kv_bytes": d.kv_bytes,
                "compute_bytes": d.compute_bytes,
                "runtime_bytes": d.runtime_bytes,
                "vram_bytes": d.vram_bytes,
                "budget_bytes": budgets.get(d.gpu, self.budget.vram_bytes) if d.gpu is not None else None,
            }
            for i, d in enumerate(self.memory.devices)
        ]


def gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def budget_for(hardware: HardwareProfile, request: PlanRequest) -> Budget:
    """How much RAM and VRAM a plan may use, and why."""
    reasons = []
    memory = hardware.memory
    available = memory.available_bytes
    if memory.limit_bytes is not None and memory.limit_bytes < memory.total_bytes:
        reasons.append(f"container memory limit {gib(memory.limit_bytes)}")
    total = min(memory.total_bytes, memory.limit_bytes or memory.total_bytes)
    margin = request.ram_margin_bytes
    if margin is None:
        margin = min(max(total // 10, 256 * MIB), 2 * GIB)
    ram = max(available - margin, 0)
    reasons.append(
        f"RAM budget {gib(ram)}: {gib(available)} available minus {gib(margin)} kept for the system"
    )
    if request.max_ram_bytes is not None and request.max_ram_bytes < ram:
        ram = request.max_ram_bytes
        reasons.append(f"RAM capped at {gib(ram)} (--max-ram)")
    selected = selected_gpus(hardware, request.gpus)
    if len(selected) > 1:  # discrete GPUs of one backend: a layer split
        budgets, why = split_budgets(selected, request.vram_margin_bytes, request.max_vram_bytes)
        total = sum(g.vram_bytes for g in budgets)
        return Budget(ram, total, (*reasons, *why), request.max_ram_bytes, budgets)
    gpu = selected[0] if selected else None
    vram = 0
    if gpu is not None and gpu.unified_memory:
        vram = min(gpu.free_bytes, ram)
        reasons.append(
            f"{gpu.name}: unified memory, GPU working set up to {gib(gpu.free_bytes)} of the RAM budget"
        )
    elif gpu is not None:
        vram = max(gpu.free_bytes - request.vram_margin_bytes, 0)
        reasons.append(
            f"VRAM budget {gib(vram)}: {gib(gpu.free_bytes)} free on {gpu.name} minus "
            f"{gib(request.vram_margin_bytes)} kept free"
        )
    if gpu is not None and request.max_vram_bytes is not None and request.max_vram_bytes < vram:
        vram = request.max_vram_bytes
        reasons.append(f"VRAM capped at {gib(vram)} (--max-vram)")
    gpus = (GpuBudget(gpu.index, gpu.name, vram),) if gpu is not None and not gpu.unified_memory else ()
    return Budget(ram, vram, tuple(reasons), request.max_ram_bytes, gpus)


def main_gpu(hardware: HardwareProfile, request: PlanRequest = PlanRequest()) -> GpuInfo | None:
    """The GPU with the most free memory that the llama.cpp build can use (among ``request.gpus``)."""
    gpus = selected_gpus(hardware, request.gpus)
    return max(gpus, key=lambda g: g.free_bytes) if gpus else None


def fits_budget(memory: MemoryEstimate, budget: Budget, unified: bool) -> bool:
    # File pages the kernel can reclaim (ram_bytes - ram_required_bytes) do not have to fit the
    # detected budget; an explicit cap covers them too.
    if budget.ram_cap_bytes is not None and memory.ram_bytes > budget.ram_cap_bytes:
        return False
    if unified:  # one pool: everything counts as RAM, and the GPU's share is capped by its working set
        return memory.ram_required_bytes <= min(budget.ram_bytes, budget.vram_bytes or budget.ram_bytes)
    return memory.ram_required_bytes <= budget.ram_bytes and gpu_fits(memory, budget)


def remaining(budget: Budget, used: list[MemoryEstimate]) -> Budget:
    """What ``budget`` leaves beside models already loaded that use ``used``: on the host, in all, and on
    each GPU (a loaded model's GPU named by no index counts against the main GPU, as it did when alone)."""
    cap = budget.ram_cap_bytes
    gpus = []
    for i, g in enumerate(budget.gpus):
        taken = sum(
            d.vram_bytes for m in used for d in m.devices if d.gpu == g.index or (d.gpu is None and i == 0)
        )
        gpus.append(replace(g, vram_bytes=g.vram_bytes - taken))
    return Budget(
        ram_bytes=budget.ram_bytes - sum(m.ram_required_bytes for m in used),
        vram_bytes=budget.vram_bytes - sum(m.vram_bytes for m in used),
        reasons=(),
        ram_cap_bytes=None if cap is None else cap - sum(m.ram_bytes for m in used),
        gpus=tuple(gpus),
    )


def gpu_fits(memory: MemoryEstimate, budget: Budget) -> bool:
    """Whether the GPU side fits: the total, and each GPU its own budget."""
    return memory.vram_bytes <= budget.vram_bytes and device_fits(memory, budget.gpu_budgets())


def _contexts(model: ModelInfo, request: PlanRequest, *, short: bool) -> list[int]:
    """Contexts to try, largest first. An explicit request is kept as it is; otherwise the useful
    context first (``short`` False), then smaller ones down to 512 as a last resort (``short`` True)."""
    if request.n_ctx is not None:
        return [] if short else [request.n_ctx]
    slots = request.n_parallel
    useful = min(USEFUL_CTX, model.n_ctx_train)
    if not short:
        return [useful * slots]
    out = []
    n_ctx = useful // 2
    while n_ctx >= 512:
        out.append(n_ctx * slots)
        n_ctx //= 2
    return out


def _option(model: ModelInfo, settings: LoadSettings, budget: Budget) -> Option:
    if len(settings.gpus) > 1:
        settings = choose_split(model, settings, budget.gpu_budgets())
    memory = estimate(model, settings)
    return Option(model, settings, memory, fits_budget(memory, budget, settings.unified_memory))


def _kv_types(settings: LoadSettings) -> list[str]:
    if settings.kv_fixed:
        return [settings.kv_type]
    return ["f16", "q8_0"] if settings.flash_attn else ["f16"]  # a quantized V cache needs flash attention


def _fixed_layers(
    model: ModelInfo, base: LoadSettings, budget: Budget, contexts: list[int], gpu_layers: int
) -> Option | None:
    """The first (context, KV type) that fits with ``gpu_layers`` on the GPU; with several GPUs, on as
    few of them as hold it (a split costs speed and a CUDA context on each)."""
    sets = gpu_sets(budget.gpus) if len(base.gpus) > 1 and gpu_layers != 0 else [base.gpus]
    for n_ctx in contexts:
        for kv in _kv_types(base):
            for gpus in sets:
                settings = replace(base, n_ctx=n_ctx, kv_type=kv, n_gpu_layers=gpu_layers, gpus=gpus)
                option = _option(model, settings, budget)
                if option.fits:
                    return option
    return None


def _most_layers(model: ModelInfo, base: LoadSettings, budget: Budget, contexts: list[int]) -> Option | None:
    """The most GPU layers that fit (at least one repeating block), at the first context that allows it."""
    for n_ctx in contexts:
        for kv in _kv_types(base):
            settings = replace(base, n_ctx=n_ctx, kv_type=kv)
            low, high, best = 2, model.n_layer, None
            while low <= high:
                mid = (low + high) // 2
                option = _option(model, replace(settings, n_gpu_layers=mid), budget)
                if gpu_fits(option.memory, budget) and option.fits:
                    best, low = option, mid + 1
                elif gpu_fits(option.memory, budget):
                    break  # the host side is what does not fit: more layers on the GPU will not help RAM
                else:
                    high = mid - 1
            if best is not None:
                return best
    return None


def _search(
    tier: list[ModelInfo], base: LoadSettings, budget: Budget, request: PlanRequest, has_gpu: bool
) -> tuple[Option, str] | None:
    """Best quality fully on the GPU, else split, else on the CPU; useful contexts before short ones."""
    cpu = replace(base, gpu_backend=None, gpus=())
    for short in (False, True):
        if has_gpu and request.n_gpu_layers is None:
            for model in tier:
                found = _fixed_layers(model, base, budget, _contexts(model, request, short=short), -1)
                if found:
                    return found, "fully on the GPU"
            for model in tier:
                found = _most_layers(model, base, budget, _contexts(model, request, short=short))
                if found:
                    return found, "split between GPU and CPU"
        elif has_gpu and request.n_gpu_layers != 0:
            layers = request.n_gpu_layers if request.n_gpu_layers is not None else -1
            for model in tier:
                found = _fixed_layers(model, base, budget, _contexts(model, request, short=short), layers)
                if found:
                    return found, f"with {layers} layers on the GPU (requested)"
            continue
        for model in tier:
            found = _fixed_layers(model, cpu, budget, _contexts(model, request, short=short), 0)
            if found:
                return found, "on the CPU" if not has_gpu else "on the CPU (nothing fits the GPU)"
    return None


AUTO_PARALLEL = (4, 2)  # slots tried when the request leaves n_parallel to the planner


def plan_auto_parallel(
    candidates: list[ModelInfo], hardware: HardwareProfile, request: PlanRequest = PlanRequest()
) -> Plan:
    """``plan`` with the number of slots chosen too: as many as memory allows (4, else 2, else 1)
    without giving up anything the one-slot plan has (quantization, context per slot, KV type, GPU
    layers). An explicit context is the total, so more slots would shrink each: then one slot."""
    single = plan(candidates, hardware, replace(request, n_parallel=1))
    if not single.fits or request.n_ctx is not None:
        return single
    base = single.settings
    for slots in AUTO_PARALLEL:
        wider = plan([single.model], hardware, replace(request, n_parallel=slots))
        s = wider.settings
        same = (s.kv_type, s.n_gpu_layers, s.gpu_backend, s.gpus) == (
            base.kv_type,
            base.n_gpu_layers,
            base.gpu_backend,
            base.gpus,
        )
        if wider.fits and same and s.n_ctx == base.n_ctx * slots:
            reason = (
                f"{slots} parallel slots: memory holds their KV cache without giving up quality or context"
            )
            reasons = (*wider.reasons[:1], reason, *wider.reasons[1:])
            return replace(wider, reasons=reasons, alternatives=single.alternatives)
    return single


def plan(
    candidates: list[ModelInfo], hardware: HardwareProfile, request: PlanRequest = PlanRequest()
) -> Plan:
    """Choose the best candidate (one file per quantization) and how to load it on ``hardware``."""
    if not candidates:
        raise ValueError("no candidate model to plan for")
    budget = budget_for(hardware, request)
    gpu = main_gpu(hardware, request)
    base = LoadSettings(
        n_ctx=USEFUL_CTX,
        n_batch=request.n_batch,
        n_ubatch=min(request.n_ubatch, request.n_batch),
        n_parallel=request.n_parallel,
        flash_attn=request.flash_attn != "off",
        gpu_backend=gpu.backend if gpu else None,
        unified_memory=bool(gpu and gpu.unified_memory),
        cpu_repack_types=cpu_repack_types(hardware.cpu.features),
        cpu_amx=cpu_has_amx(hardware.cpu.features),
        kv_type=request.kv_type or "f16",
        kv_fixed=request.kv_type is not None,
        gpus=gpu_sets(budget.gpus)[-1] if budget.gpus else (),
    )
    refused = unknown_gpus(hardware, request.gpus)
    if refused is not None:
        option = _option(candidates[0], replace(base, gpu_backend=None, gpus=()), budget)
        return Plan(option.model, option.settings, option.memory, budget, False, (refused,), ())
    if base.kv_type != "f16" and not base.flash_attn:
        option = _option(candidates[0], base, budget)
        reason = f"a {base.kv_type} KV cache needs flash attention, which model.flash_attn turns off"
        return Plan(option.model, option.settings, option.memory, budget, False, (reason,), ())
    ranked = sorted(candidates, key=lambda m: m.bits_per_weight, reverse=True)
    per_slot = request.n_ctx // request.n_parallel if request.n_ctx is not None else None
    if request.n_ctx is not None and per_slot is not None and all(per_slot > m.n_ctx_train for m in ranked):
        option = _option(ranked[0], replace(base, n_ctx=request.n_ctx), budget)
        slots = f" per slot ({request.n_parallel} slots)" if request.n_parallel > 1 else ""
        reason = (
            f"a context of {per_slot} tokens{slots} exceeds what {ranked[0].name} was trained for "
            f"({ranked[0].n_ctx_train})"
        )
        return Plan(option.model, option.settings, option.memory, budget, False, (reason,), ())
    ranked = [m for m in ranked if per_slot is None or per_slot <= m.n_ctx_train]
    above_floor = [m for m in ranked if m.bits_per_weight >= request.quality_floor_bpw]
    below_floor = [m for m in ranked if m.bits_per_weight < request.quality_floor_bpw]
    reasons: list[str] = []
    found = _search(above_floor, base, budget, request, gpu is not None) if above_floor else None
    if found is None and below_floor:
        found = _search(below_floor, base, budget, request, gpu is not None)
        if found is not None and above_floor:
            reasons.append(
                f"{found[0].model.quant} is below the quality floor ({request.quality_floor_bpw:g} bits per "
                "weight): no better quantization fits"
            )
    alternatives = tuple(_alternative(m, base, budget, request, gpu is not None) for m in ranked)
    if found is None:
        smallest = min(alternatives, key=lambda o: o.memory.ram_bytes + o.memory.vram_bytes)
        need = smallest.memory.ram_bytes + smallest.memory.vram_bytes
        vram = f" + {gib(budget.vram_bytes)} VRAM" if gpu and not gpu.unified_memory else ""
        reasons.append(
            f"does not fit: the smallest option ({smallest.model.quant}, context {smallest.settings.n_ctx}) "
            f"needs {gib(need)}; the budget is {gib(budget.ram_bytes)} RAM{vram}"
        )
        reasons.extend(budget.reasons)
        return Plan(
            smallest.model, smallest.settings, smallest.memory, budget, False, tuple(reasons), alternatives
        )

    chosen, mode = found
    settings = chosen.settings
    reasons.insert(0, _summary(chosen, mode, len(candidates)))
    if len(settings.split) > 1:
        reasons.append(split_reason(chosen.memory, budget.gpus))
    if (
        request.n_ctx is None
        and settings.n_ctx < min(USEFUL_CTX, chosen.model.n_ctx_train) * request.n_parallel
    ):
        reasons.append(f"context reduced to {settings.n_ctx} tokens to fit")
    if settings.n_parallel > 1:
        reasons.append(
            f"{settings.n_parallel} parallel slots of {settings.n_ctx // settings.n_parallel} tokens each"
        )
    if settings.kv_fixed:
        reasons.append(f"KV cache {settings.kv_type} (configured)")
    elif settings.kv_type != "f16":
        reasons.append(f"KV cache quantized to {settings.kv_type} to fit")
    if chosen.model.n_swa and any(chosen.model.swa_layers):
        reasons.append(
            f"sliding-window layers keep KV for {chosen.model.n_swa} tokens, not the whole context"
        )
    reasons.append("flash attention on" if settings.flash_attn else "flash attention off (requested)")
    reasons.extend(budget.reasons)
    return Plan(chosen.model, settings, chosen.memory, budget, True, tuple(reasons), alternatives)


def _summary(option: Option, mode: str, n_candidates: int) -> str:
    m, s, mem = option.model, option.settings, option.memory
    where = mode
    if len(s.split) > 1:
        where = where.replace("the GPU", f"{len(s.split)} GPUs").replace(
            "GPU and", f"{len(s.split)} GPUs and"
        )
    if s.n_gpu_layers > 0 and s.gpu_backend:
        gpus = "GPUs" if len(s.split) > 1 else "GPU"
        where = f"{where} ({s.n_gpu_layers} of {m.n_layer + 1} layers on the {gpus})"
    quality = f"best of {n_candidates} quantizations that fits" if n_candidates > 1 else "the only file"
    vram = f", {gib(mem.vram_bytes)} VRAM" if mem.vram_bytes else ""
    return (
        f"{m.quant} ({m.bits_per_weight:.1f} bits/weight, {quality}) {where}, context {s.n_ctx}: "
        f"{gib(mem.ram_bytes)} RAM{vram}"
    )


def _alternative(
    model: ModelInfo, base: LoadSettings, budget: Budget, request: PlanRequest, has_gpu: bool
) -> Option:
    """The best way to load ``model`` alone, or its default settings (not fitting) if none fits."""
    found = _search([model], base, budget, request, has_gpu)
    if found is not None:
        return found[0]
    n_ctx = request.n_ctx or min(USEFUL_CTX, model.n_ctx_train)
    return _option(model, replace(base, n_ctx=n_ctx, n_gpu_layers=-1 if has_gpu else 0), budget)
