"""What each pane shows, from the daemon's JSON: pure functions of one snapshot's parts."""

from __future__ import annotations

import time
from typing import Any

GIB = 1 << 30


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def hardware_lines(status: dict[str, Any]) -> str:
    hw = status.get("hardware") or {}
    cpu, memory = hw.get("cpu") or {}, hw.get("memory") or {}
    budget = status.get("memory") or {}
    lines = [
        f"CPU  {cpu.get('model', '?')} ({cpu.get('cores_physical', '?')} cores)",
        f"RAM  {_gib(memory.get('available_bytes'))} free of {_gib(memory.get('total_bytes'))}; models "
        f"{_gib(budget.get('models_ram_bytes'))} of a {_gib(budget.get('budget_ram_bytes'))} budget",
    ]
    planned = {g.get("index"): g for g in budget.get("gpus") or []}
    for gpu in hw.get("gpus") or []:
        line = f"GPU {gpu.get('index', '')} {gpu.get('name')}: {_gib(gpu.get('free_bytes'))} free of " + _gib(
            gpu.get("total_bytes")
        )
        use = planned.get(gpu.get("index"))
        if use is not None:  # a GPU the planner may use: what the loaded models hold on it
            line += f"; models {_gib(use.get('models_bytes'))} of a {_gib(use.get('budget_bytes'))} budget"
        lines.append(line)
    slots = status.get("slots") or {}
    lines.append(f"Slots {slots.get('busy', 0)}/{slots.get('total', 0)} busy, queue {status.get('queue', 0)}")
    lines.append(f"Requests  {requests_line(status)}")
    return "\n".join(lines)


def requests_line(status: dict[str, Any]) -> str:
    """Requests so far per backend (this machine, each remote): how many answered, how many failed."""
    by_backend: dict[str, dict[str, int]] = status.get("requests_by_backend") or {
        "all": status.get("requests") or {}
    }
    parts = []
    for backend, counts in by_backend.items():
        ok = sum(n for code, n in counts.items() if code.startswith("2"))
        failed = sum(counts.values()) - ok
        detail = ", ".join(f"{n} {code}" for code, n in counts.items() if not code.startswith("2"))
        name = backend.removeprefix("remote:")
        parts.append(f"{name}: {ok} ok" + (f", {failed} failed ({detail})" if failed else ""))
    return "; ".join(parts) or "none yet"


def loaded_row(m: dict[str, Any]) -> tuple[str, ...]:
    plan = m.get("plan") or {}
    slots = f"{m.get('slots_busy', 0)}/{m.get('slots_total', 0)}"
    ram, vram = _gib(plan.get("ram_bytes")), _gib(plan.get("vram_bytes"))
    return (m["id"], m.get("state", "?"), str(m.get("quant") or "?"), str(plan.get("n_ctx", "?")), slots,
            str(m.get("queue_depth", 0)), ram, vram)  # fmt: skip


def installed_row(m: dict[str, Any]) -> tuple[str, ...]:
    plan = m.get("plan") or {}
    fits = plan.get("fits")
    verdict = "yes" if fits else ("no" if fits is False else "?")
    quant = str(plan.get("quant") or m.get("quant") or "?")
    return (m["id"], m.get("source", "?"), quant, _gib(m.get("size_bytes")), verdict, m.get("state", "?"))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def remote_row(r: dict[str, Any]) -> tuple[str, ...]:
    load = r.get("load") or {}
    busy = f"{load.get('running', 0):.0f} run, {load.get('waiting', 0):.0f} wait" if load else "-"
    health = "healthy" if r.get("healthy") else f"down: {r.get('error') or r.get('unavailable') or '?'}"
    address = (r.get("address") or "-").removeprefix("http://")
    models = ", ".join(r.get("models") or {}) or "-"
    probe, ttft = r.get("probe_latency_ms"), r.get("ttft_p50_ms")
    latency = f"{'-' if probe is None else probe} / {_ms(ttft)}"
    return (r["name"], r.get("kind", "?"), r.get("found_via") or "config", address, health,
            r.get("breaker", "?"), models, busy, latency)  # fmt: skip


def routing_row(e: dict[str, Any]) -> tuple[str, ...]:
    """A request the router sent to a remote: when, what, where and why."""
    when = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
    return (when, str(e.get("model")), str(e.get("backend")), str(e.get("reason")), _ms(e.get("ttft_ms")),
            str(e.get("status", "?")))  # fmt: skip


def plan_text(model: dict[str, Any]) -> str:
    """A model's plan as `appliance plan` prints it, shortly: choice, memory, reasons, alternatives."""
    plan = model.get("plan")
    if not plan:
        return f"{model.get('id')}: {model.get('error', 'no plan')}"
    memory = plan.get("memory") or {}
    where = (
        "all layers on the GPU"
        if plan.get("n_gpu_layers", 0) < 0
        else f"{plan.get('n_gpu_layers')} GPU layers"
    )
    lines = [
        f"{model['id']}: {plan.get('quant')}, context {plan.get('n_ctx')} in {plan.get('n_parallel')} slots, "
        f"{where}, KV {plan.get('kv_type')}; {_gib(memory.get('ram_bytes'))} RAM, "
        f"{_gib(memory.get('vram_bytes'))} VRAM; {'fits' if plan.get('fits') else 'does not fit'}",
        *(f"  - {reason}" for reason in plan.get("reasons") or []),
    ]
    devices = plan.get("devices") or []
    if len(devices) > 1:
        lines.append(
            "  per GPU: "
            + ", ".join(
                f"GPU {d.get('index')} {d.get('layers')} layers {_gib(d.get('vram_bytes'))}" for d in devices
            )
        )
    lines += capability_lines(model)
    for alt in plan.get("alternatives") or []:
        verdict = "fits" if alt.get("fits") else "does not fit"
        ram = _gib(alt.get("ram_bytes"))
        lines.append(f"  alternative {alt.get('quant')}: context {alt.get('n_ctx')}, {ram} RAM, {verdict}")
    return "\n".join(lines)


def capability_lines(model: dict[str, Any]) -> list[str]:
    """What the model's file declares and what `appliance eval` measured on it (none for a daemon too
    old to say)."""
    lines = []
    if model.get("capabilities"):
        declared = model.get("declared") or {}
        how = [f"tools {declared['tool_format']}"] if declared.get("tool_format") else []
        how += [f"vision: {declared['vision']}"] if declared.get("vision") else []
        lines.append(
            f"  capabilities {', '.join(model['capabilities'])}" + (f" ({'; '.join(how)})" if how else "")
        )
    summary = (model.get("measured") or {}).get("summary")
    if summary:
        lines.append(f"  measured {summary}")
    return lines


def log_row(e: dict[str, Any]) -> tuple[str, ...]:
    when = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
    fields = ("endpoint", "model", "backend", "prompt_tokens", "generated_tokens", "ttft_ms", "tokens_per_s")
    values = tuple("-" if e.get(k) is None else str(e[k]) for k in fields)
    return (when, *values, str(e.get("status", "?")))


def remote_models(remotes: list[dict[str, Any]]) -> tuple[str, ...]:
    """What the healthy remotes serve, as `REMOTE/NAME` (a request naming one goes there)."""
    return tuple(f"{r['name']}/{name}" for r in remotes if r.get("healthy") for name in r.get("models") or {})
