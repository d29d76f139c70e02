"""How close the planner's memory prediction is to what a real load uses.

For each model and context: the planner's ``ram_bytes`` (CPU plan at that context), llama.cpp's own
figures from a dry run (KV and compute buffers), and the measured peak RSS increase of a fresh process
that loads the model with the plan's settings, processes a prompt longer than one ubatch and generates
a few tokens. The baseline is taken after llama.cpp is imported and initialised, so the interpreter and
the libraries are not counted (INTERFACES.md: ram_bytes is what the plan adds).

    python benchmarks/plan_accuracy.py MODEL.gguf [MODEL.gguf ...] [--ctx 2048,8192,32768] [--json OUT]
    python benchmarks/plan_accuracy.py --gpu MODEL.gguf ...   # plan for the GPU; also compare vram_bytes
                                                             # with the GPU memory the load took (NVML)
    python benchmarks/plan_accuracy.py --gpu --n-gpu-layers 8,16 MODEL.gguf  # split plans: a row for each
    python benchmarks/plan_accuracy.py --gpu --max-vram 3GiB MODEL.gguf     # the planner splits to fit

Goal (issue 4): every row within +-10%, never under-predicting by more than 5%.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance.engine.dry_run import dry_run
from appliance.engine.params import LoadOptions
from appliance.hardware.cpu import detect_cpu
from appliance.hardware.detect import detect_hardware
from appliance.hardware.memory import detect_memory
from appliance.hardware.profile import HardwareProfile
from appliance.planner.model_info import read_model_info
from appliance.planner.plan import PlanRequest, plan
from appliance.units import parse_size

MIB = 1 << 20

# Runs in a fresh interpreter so each measurement starts from the same baseline.
CHILD = r"""
import json, resource, sys
from pathlib import Path
from appliance.engine.llama import LlamaModel
from appliance.engine.runtime import system_info
from appliance.engine.params import LoadOptions, SamplingParams
system_info()  # loads and initialises llama.cpp before the baseline
gpu_used = None
if json.loads(sys.argv[2])["n_gpu_layers"] != 0:  # NVML too (its ~18 MiB are not the model's)
    import pynvml
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu_used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
    gpu_base = gpu_used()
with open("/proc/self/status") as f:
    base_kib = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
options = LoadOptions(**json.loads(sys.argv[2]))
model = LlamaModel(Path(sys.argv[1]), options)
text = "The sea is wide and the ships sail on it, carrying cargo from port to port. " * 60
prompt = model.tokenize(text, add_special=True, parse_special=False)[: options.n_ubatch + 100]
for _ in model.generate(prompt, SamplingParams(temperature=0), 8):
    pass
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = {"peak_increase_bytes": (peak_kib - base_kib) * 1024, "prompt_tokens": len(prompt)}
if gpu_used is not None:
    result["gpu_increase_bytes"] = gpu_used() - gpu_base
print(json.dumps(result))
"""


def measure(path: Path, options: LoadOptions) -> dict[str, int]:
    args = {k: v for k, v in options.__dict__.items()}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(args)], capture_output=True, text=True, check=True
    )
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def row(
    path: Path,
    n_ctx: int,
    hardware: HardwareProfile,
    threads: int,
    n_gpu_layers: int | None = None,
    max_vram_bytes: int | None = None,
) -> dict[str, Any]:
    info = read_model_info(path)
    request = PlanRequest(n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, max_vram_bytes=max_vram_bytes)
    chosen = plan([info], hardware, request)
    s = chosen.settings
    options = LoadOptions(
        n_ctx=s.n_ctx, n_batch=s.n_batch, n_ubatch=s.n_ubatch, n_threads=threads, n_threads_batch=threads,
        n_gpu_layers=s.n_gpu_layers if s.gpu_backend else 0, flash_attn="on" if s.flash_attn else "off",
        kv_type=s.kv_type,
    )  # fmt: skip
    figures = dry_run(path, options)
    result = measure(path, options)
    measured = result["peak_increase_bytes"]
    predicted = chosen.memory.ram_bytes
    gpu: dict[str, Any] = {}
    if "gpu_increase_bytes" in result:
        gpu_measured = result["gpu_increase_bytes"]
        gpu = {
            "n_gpu_layers": options.n_gpu_layers,
            "predicted_vram_bytes": chosen.memory.vram_bytes,
            "measured_gpu_increase_bytes": gpu_measured,
            "vram_error_pct": round(100 * (chosen.memory.vram_bytes - gpu_measured) / gpu_measured, 1),
            "n_layers": info.n_layer + 1,
            "llama_cpp_compute_by_buffer": figures.compute_bytes,
        }
    return {
        **gpu,
        "model": path.name,
        "quant": info.quant,
        "n_ctx": n_ctx,
        "kv_type": s.kv_type,
        "predicted_ram_bytes": predicted,
        "measured_peak_rss_increase_bytes": measured,
        "error_pct": round(100 * (predicted - measured) / measured, 1),
        "weights_bytes": chosen.memory.weights_bytes,
        "kv_bytes": chosen.memory.kv_bytes,
        "llama_cpp_kv_bytes": figures.kv_bytes,
        "compute_bytes": chosen.memory.compute_bytes,
        "llama_cpp_compute_reserved_bytes": sum(figures.compute_bytes.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--ctx", default="2048,8192,32768")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gpu", action="store_true", help="plan for the detected GPU (default: CPU only)")
    parser.add_argument(
        "--n-gpu-layers",
        help="with --gpu: comma-separated layer counts to offload (a row each); default: the planner's",
    )
    parser.add_argument("--max-vram", type=parse_size, help="with --gpu: cap the VRAM budget (e.g. 3GiB)")
    args = parser.parse_args()
    layer_counts: list[int | None] = (
        [int(n) for n in args.n_gpu_layers.split(",")] if args.n_gpu_layers else [None]
    )
    hardware = detect_hardware() if args.gpu else HardwareProfile(detect_cpu(), detect_memory())
    rows = []
    print(
        "| model | quant | n_ctx | predicted MiB | measured MiB | error | KV MiB (llama.cpp) | compute MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path in args.models:
        for n_ctx in (int(c) for c in args.ctx.split(",")):
            if n_ctx > read_model_info(path).n_ctx_train:
                print(f"| {path.name} | | {n_ctx} | skipped: beyond the trained context | | | | |")
                continue
            for layers in layer_counts:
                r = row(path, n_ctx, hardware, args.threads, layers, args.max_vram)
                rows.append(r)
                print_row(r)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    worst = [r for r in rows if not all(-5 <= e <= 10 for e in errors(r))]
    print(f"\n{len(rows) - len(worst)} of {len(rows)} rows within -5%..+10% (RAM and, with --gpu, VRAM)")
    return 0


def errors(r: dict[str, Any]) -> list[float]:
    """The row's RAM error and, for GPU plans, its VRAM error (percent)."""
    return [float(r[k]) for k in ("error_pct", "vram_error_pct") if k in r]


def print_row(r: dict[str, Any]) -> None:
    print(
        f"| {r['model']} | {r['quant']} | {r['n_ctx']} | {r['predicted_ram_bytes'] / MIB:.0f} "
        f"| {r['measured_peak_rss_increase_bytes'] / MIB:.0f} | {r['error_pct']:+.1f}% "
        f"| {r['kv_bytes'] / MIB:.0f} ({r['llama_cpp_kv_bytes'] / MIB:.0f}) "
        f"| {r['compute_bytes'] / MIB:.0f} |",
        flush=True,
    )
    if "predicted_vram_bytes" in r:
        layers = "all" if r["n_gpu_layers"] < 0 else r["n_gpu_layers"]
        print(
            f"|   GPU ({layers} of {r['n_layers']} layers) | | | {r['predicted_vram_bytes'] / MIB:.0f} "
            f"| {r['measured_gpu_increase_bytes'] / MIB:.0f} | {r['vram_error_pct']:+.1f}% | | "
            f"{r['llama_cpp_compute_by_buffer']} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
