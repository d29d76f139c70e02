"""A draft model in the plan (speculative decoding, appliance.engine.draft_model): whether it can draft for
the planned model (the same vocabulary), and its memory beside the model's.

The draft gets the model's context and slots (one sequence per slot, as long as the model's) and its KV
type; its layers go to the model's main GPU when the model is wholly on the GPU, else to the CPU. Where
the pair does not fit the budget, the draft is left out with a reason: the model the user serves keeps
its plan, and the draft, an optimisation, gives way. Pure functions over plain data, like the planner.
"""

from __future__ import annotations

from dataclasses import replace

from appliance.planner.memory import (
    GPU_HOST_RUNTIME_BYTES,
    DeviceMemory,
    LoadSettings,
    MemoryEstimate,
    estimate,
)
from appliance.planner.model_info import ModelInfo
from appliance.planner.plan import Option, Plan, fits_budget, gib

# llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE: vocabularies may differ by this many (added) tokens.
VOCAB_SIZE_SLACK = 128


def draft_mismatch(target: ModelInfo, draft: ModelInfo) -> str | None:
    """Why ``draft`` cannot guess tokens for ``target`` (its tokens would mean other text), as llama.cpp's
    common_speculative_are_compatible judges from the header: the tokenizer's kind, the pre-tokenizer,
    the vocabulary's size (within VOCAB_SIZE_SLACK) and the BOS and EOS ids. None where it can (the
    token texts themselves are compared once both are loaded)."""
    if draft.tokenizer != target.tokenizer:
        return f"its tokenizer is {draft.tokenizer or 'unknown'}, the model's {target.tokenizer or 'unknown'}"
    if draft.tokenizer_pre != target.tokenizer_pre:
        theirs, ours = draft.tokenizer_pre or "none", target.tokenizer_pre or "none"
        return f"its pre-tokenizer is {theirs}, the model's {ours}"
    if abs(draft.n_vocab - target.n_vocab) > VOCAB_SIZE_SLACK:
        return f"its vocabulary has {draft.n_vocab} tokens, the model's {target.n_vocab}"
    for what, draft_id, target_id in (
        ("BOS", draft.bos_token, target.bos_token),
        ("EOS", draft.eos_token, target.eos_token),
    ):
        if draft_id != target_id:
            return f"its {what} token is {draft_id}, the model's {target_id}"
    return None


def draft_settings(plan: Plan, n_gpu_layers: int) -> LoadSettings:
    """How the draft is loaded beside ``plan``: its context, slots, batch and KV type, with
    ``n_gpu_layers`` on the model's main GPU (the last of its GPUs), or on the CPU for 0."""
    s = plan.settings
    if n_gpu_layers == 0 or s.gpu_backend is None:
        return replace(
            s, n_gpu_layers=0, gpu_backend=None, unified_memory=False, gpus=(), split=(), kv_fixed=True
        )
    return replace(s, n_gpu_layers=n_gpu_layers, gpus=s.gpus[-1:], split=(), kv_fixed=True)


def draft_memory(draft: ModelInfo, settings: LoadSettings, beside: MemoryEstimate) -> MemoryEstimate:
    """What loading ``draft`` with ``settings`` adds to a process whose model uses ``beside``: its own
    estimate, less the GPU runtime (the CUDA context and libraries) where the model has one already."""
    memory = estimate(draft, settings)
    if memory.runtime_gpu and beside.runtime_gpu:
        shared = GPU_HOST_RUNTIME_BYTES.get(settings.gpu_backend or "", 0)
        devices = tuple(replace(d, runtime_bytes=0) for d in memory.devices)
        memory = replace(memory, runtime_gpu=0, runtime_host=memory.runtime_host - shared, devices=devices)
    return memory


def combined(a: MemoryEstimate, b: MemoryEstimate) -> MemoryEstimate:
    """Two loads' memory as one process's: every figure summed, each GPU's with the same GPU's."""
    devices = list(a.devices)
    for extra in b.devices:
        at = next((i for i, d in enumerate(devices) if d.gpu == extra.gpu), None)
        if at is None:
            devices.append(extra)
        else:
            d = devices[at]
            devices[at] = DeviceMemory(
                d.gpu,
                d.layers,
                d.weights_bytes + extra.weights_bytes,
                d.kv_bytes + extra.kv_bytes,
                d.compute_bytes + extra.compute_bytes,
                d.runtime_bytes + extra.runtime_bytes,
            )
    return MemoryEstimate(
        a.weights_host + b.weights_host,
        a.weights_gpu + b.weights_gpu,
        a.kv_host + b.kv_host,
        a.kv_gpu + b.kv_gpu,
        a.compute_host + b.compute_host,
        a.compute_gpu + b.compute_gpu,
        a.runtime_host + b.runtime_host,
        a.runtime_gpu + b.runtime_gpu,
        a.file_cache_host + b.file_cache_host,
        tuple(devices),
    )


def with_draft(plan: Plan, draft: ModelInfo, n_gpu_layers: int | None = None) -> Plan:
    """``plan`` with ``draft`` loaded beside its model, its memory counted and a reason saying so; or, where
    the pair does not fit the budget, ``plan`` as it was with a reason saying the draft is left out.
    ``n_gpu_layers`` is the draft's (None: all on the GPU where the model is wholly there and they fit,
    else none). A plan that does not fit is returned as it is."""
    if not plan.fits:
        return plan
    s = plan.settings
    if n_gpu_layers is not None:
        tries = [n_gpu_layers]
    elif s.gpu_backend is not None and s.n_gpu_layers < 0:
        tries = [-1, 0]
    else:
        tries = [0]
    memory = plan.memory
    for layers in tries:
        settings = draft_settings(plan, layers)
        memory = draft_memory(draft, settings, plan.memory)
        together = combined(plan.memory, memory)
        if fits_budget(together, plan.budget, s.unified_memory):
            where = "on the GPU" if settings.gpu_backend and settings.n_gpu_layers else "on the CPU"
            vram = f", {gib(memory.vram_bytes)} VRAM" if memory.vram_bytes else ""
            reason = (
                f"draft model {draft.name} ({draft.quant}) {where}: {gib(memory.ram_bytes)} RAM{vram} more "
                f"(weights {gib(memory.weights_bytes)}, KV cache {gib(memory.kv_bytes)} for "
                f"{s.n_parallel} slot{'s' if s.n_parallel > 1 else ''} of {s.n_ctx // s.n_parallel} tokens)"
            )
            return replace(
                plan,
                memory=together,
                draft=Option(draft, settings, memory, True),
                reasons=(*plan.reasons[:1], reason, *plan.reasons[1:]),
            )
    vram = f" + {gib(memory.vram_bytes)} VRAM" if memory.vram_bytes else ""
    reason = (
        f"draft model {draft.name} left out: it needs {gib(memory.ram_bytes)} RAM{vram} beside the model, "
        "more than the budget leaves"
    )
    return replace(plan, reasons=(*plan.reasons[:1], reason, *plan.reasons[1:]))
