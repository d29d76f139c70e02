"""A model planned across several GPUs: predicted against measured memory per GPU, and tokens/s against
llama-server given the same split.

    python benchmarks/multi_gpu.py MODEL.gguf --gpus 0,1 [--max-vram 60GiB] [--ctx 4096] [--threads 8]
        [--llama-server build/bin/llama-server] [--tokens 128] [--requests 8] [--json OUT]
    python benchmarks/multi_gpu.py MODEL.gguf --gpus 0         # one GPU of a machine, restricted

It plans MODEL as `appliance serve --gpus LIST` would (one slot, the given context), prints llama.cpp's
own compute buffer per device from a dry run (nothing allocated) beside the planner's, then:
1. starts `appliance serve MODEL --gpus LIST` and, once it has answered a ~2000-token prompt, reads each
   GPU's memory increase from NVML against what the daemon's plan predicted for that GPU
   (/appliance/v1/status); goal as for one GPU: within +-10%, never under by more than 5%;
2. measures streaming tokens/s on it (`appliance bench`'s load: one stream, ``--requests`` requests);
3. starts llama-server on the same file with the plan's split (`--device` in the plan's order,
   `--split-mode layer`, `--tensor-split` with the plan's layer counts, the same GPU layers, context,
   KV type, flash attention, `--fit off`), reads its memory per GPU and measures it the same way.

With several GPUs it also says whether the model would fit wholly on any one of them under the same
budget (the issue's "planned across both, does not fit one": give --max-vram to make big cards small).
Self-checking: exit 1 when a GPU's memory is outside the goal, the plan does not use the GPUs asked for,
or a request failed. Prints markdown rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from appliance.bench.load import Load, run_load
from appliance.bench.servers import free_port, stop, wait_healthy
from appliance.config import ModelSettings, Settings
from appliance.engine.dry_run import dry_run
from appliance.engine.params import LoadOptions
from appliance.hardware.detect import detect_hardware
from appliance.planner.model_info import read_model_info
from appliance.planner.plan import Plan
from appliance.planning import choose_plan, load_options

MIB = 1 << 20
SETTLE_S = 2.0  # after the last request, before NVML is read: the driver's figures lag a little


def plan_for(model: Path, gpus: list[int], ctx: int, max_vram: str | None) -> tuple[Plan, Settings]:
    """The plan `appliance serve MODEL --gpus ... --ctx ... --parallel 1` makes here."""
    settings = Settings(model={"gpus": gpus, "n_ctx": ctx, "n_parallel": 1}, planner={"max_vram": max_vram})
    return choose_plan([read_model_info(model)], detect_hardware(), settings), settings


def fits_one_gpu(model: Path, gpus: list[int], ctx: int, max_vram: str | None) -> dict[int, bool]:
    """Per GPU: whether the model fits wholly on it alone, under the same budget (the cap is shared by
    the GPUs in proportion, so a GPU alone gets the share it has in the split)."""
    out = {}
    for gpu in gpus:
        chosen, _ = plan_for(model, gpus, ctx, max_vram)
        share = next((g.vram_bytes for g in chosen.budget.gpus if g.index == gpu), None)
        alone, _ = plan_for(model, [gpu], ctx, f"{share}B" if max_vram and share else None)
        out[gpu] = alone.fits and alone.settings.n_gpu_layers < 0
    return out


def llama_server_command(binary: str, model: Path, options: LoadOptions, port: int) -> list[str]:
    """llama-server with the plan's placement: its devices in order, a layer split with the planned
    layer counts, the same GPU layers, context, KV type and flash attention, and no fitting of its own."""
    layers = "all" if options.n_gpu_layers < 0 else str(options.n_gpu_layers)
    command = [
        binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(options.n_ctx),
        "-np", "1", "-t", str(options.n_threads), "-tb", str(options.n_threads_batch), "-ngl", layers,
        "-fa", options.flash_attn, "-ctk", options.kv_type, "-ctv", options.kv_type, "--fit", "off",
    ]  # fmt: skip
    if options.devices:
        command += ["--device", ",".join(options.devices), "--split-mode", "layer"]
        command += ["--main-gpu", str(options.main_gpu)]
    if len(options.tensor_split) > 1:
        command += ["--tensor-split", ",".join(f"{s:g}" for s in options.tensor_split)]
    return command


def nvml_used() -> dict[int, int]:
    """Memory used on each GPU now, by NVML index (the indices `appliance hw` and --gpus use)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        return {
            i: int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
            for i in range(pynvml.nvmlDeviceGetCount())
        }
    finally:
        pynvml.nvmlShutdown()


def error_pct(predicted: int, measured: int) -> float:
    return round(100 * (predicted - measured) / measured, 1) if measured else float("inf")


def within_goal(error: float) -> bool:
    """The planner's accuracy goal: within +-10%, never under by more than 5%."""
    return -5 <= error <= 10


def serve_and_measure(
    command: list[str], env: dict[str, str], base: str, load: Load, extra_body: dict[str, Any]
) -> tuple[dict[int, int], dict[str, Any], dict[str, Any] | None]:
    """Start ``command``, wait for health, read memory after a long prompt, run ``load``; stop it.
    Returns each GPU's memory increase, the load's summary and (the appliance's) /appliance/v1/status."""
    before = nvml_used()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
        try:
            asyncio.run(wait_healthy(proc, base, 900))
            # The long prompt fills a ubatch, so the compute buffers are all written before memory is read.
            asyncio.run(run_load(base, Load(tokens=8, requests=1, prompt="long"), extra_body=extra_body))
            time.sleep(SETTLE_S)
            after = nvml_used()
            answer = httpx.get(f"{base}/appliance/v1/status", timeout=30)  # llama-server: 404
            status = answer.json() if answer.status_code == 200 else None
            summary = asyncio.run(run_load(base, load, extra_body=extra_body))
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            stop(proc)
    return {i: after[i] - before.get(i, 0) for i in after}, summary, status


def memory_rows(
    predicted: dict[int, int], layers: dict[int, int], ours: dict[int, int], theirs: dict[int, int]
) -> tuple[list[dict[str, Any]], list[str]]:
    """A row per planned GPU (predicted, measured, error, llama-server's), and what is outside the goal:
    a planned GPU off by more than it may be, or a GPU outside the plan that the load used."""
    rows, problems = [], []
    for gpu, predicted_bytes in predicted.items():
        measured = ours.get(gpu, 0)
        error = error_pct(predicted_bytes, measured)
        rows.append(
            {"gpu": gpu, "layers": layers.get(gpu), "predicted_bytes": predicted_bytes,
             "measured_bytes": measured, "error_pct": error, "llama_server_bytes": theirs.get(gpu)}
        )  # fmt: skip
        if not within_goal(error):
            problems.append(
                f"GPU {gpu}: predicted {predicted_bytes / MIB:.0f} MiB, measured {measured / MIB:.0f}"
            )
    for gpu, used in ours.items():
        if gpu not in predicted and used > 64 * MIB:
            problems.append(f"GPU {gpu} is outside the plan but took {used / MIB:.0f} MiB")
    return rows, problems


def markdown(
    name: str, ctx: int, rows: list[dict[str, Any]], options: LoadOptions, ours: dict[str, Any],
    theirs: dict[str, Any], alone: dict[int, bool],
) -> str:  # fmt: skip
    """The rows for docs/BENCHMARKS.md: memory per GPU, then speed against llama-server."""
    lines = [
        "| model | n_ctx | GPU | layers | predicted MiB | measured MiB | error | llama-server MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reference = "-" if r["llama_server_bytes"] is None else f"{r['llama_server_bytes'] / MIB:.0f}"
        lines.append(
            f"| {name} | {ctx} | {r['gpu']} | {r['layers']} | {r['predicted_bytes'] / MIB:.0f} "
            f"| {r['measured_bytes'] / MIB:.0f} | {r['error_pct']:+.1f}% | {reference} |"
        )
    ours_tok, theirs_tok = ours.get("decode_tok_s"), theirs.get("decode_tok_s")
    ratio = f"{ours_tok / theirs_tok:.2f}x" if ours_tok and theirs_tok else "-"
    speeds = " | ".join("-" if t is None else f"{t:.1f}" for t in (ours_tok, theirs_tok))
    split = ", ".join(f"{d} {s:g}" for d, s in zip(options.devices, options.tensor_split, strict=False))
    one = "; ".join(f"GPU {g}: {'yes' if ok else 'no'}" for g, ok in alone.items()) or "-"
    lines += [
        "",
        "| model | devices | layers each | decode tok/s | llama-server | ours / theirs | fits one GPU |",
        "|---|---|---|---|---|---|---|",
        f"| {name} | {','.join(options.devices) or '-'} | {split or '-'} | {speeds} | {ratio} | {one} |",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--gpus", required=True, help="GPU indices (appliance hw), e.g. 0,1")
    parser.add_argument("--max-vram", help="cap the GPUs' sum, shared in proportion (e.g. 60GiB)")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--llama-server", help="llama-server binary; without it, only the appliance is run")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gpus = [int(i) for i in args.gpus.split(",")]
    chosen, _ = plan_for(args.model, gpus, args.ctx, args.max_vram)
    if not chosen.fits:
        print(f"the plan does not fit: {chosen.reasons[0]}", file=sys.stderr)
        return 1
    options = load_options(chosen, detect_hardware(), ModelSettings(n_threads=args.threads))
    problems = []
    if sorted(chosen.settings.gpus) != sorted(gpus):
        problems.append(f"the plan uses GPUs {list(chosen.settings.gpus)}, not all of {gpus}")
    alone = fits_one_gpu(args.model, gpus, args.ctx, args.max_vram) if len(gpus) > 1 else {}
    print(f"plan: {chosen.reasons[0]}", *(f"  - {r}" for r in chosen.reasons[1:]), sep="\n", file=sys.stderr)
    load = Load(tokens=args.tokens, requests=args.requests)
    # llama.cpp's own compute buffer per device, planned without allocating: beside the planner's.
    reserved = dry_run(args.model, options).compute_bytes
    predicted_compute = {d.gpu: d.compute_bytes for d in chosen.memory.devices}
    print(f"compute buffers: llama.cpp {reserved}, planned per GPU {predicted_compute}", file=sys.stderr)

    port = free_port()
    flags = ["--port", str(port), "--ctx", str(args.ctx), "--parallel", "1", "--threads", str(args.threads)]
    flags += ["--gpus", args.gpus] + (["--max-vram", args.max_vram] if args.max_vram else [])
    with tempfile.TemporaryDirectory(prefix="multi-gpu-") as home:
        ours, ours_speed, status = serve_and_measure(
            [sys.executable, "-m", "appliance", "serve", str(args.model), *flags],
            {**os.environ, "APPLIANCE_HOME": home},
            f"http://127.0.0.1:{port}",
            load,
            {},
        )
    served = (status or {}).get("models", [{}])[0].get("plan", {})
    predicted = {d["index"]: d["vram_bytes"] for d in served.get("devices", [])}
    planned_here = {d.gpu: d.vram_bytes for d in chosen.memory.devices}
    if set(predicted) != set(planned_here):
        problems.append(f"the daemon planned GPUs {sorted(predicted)}, this script {sorted(planned_here)}")
    elif predicted != planned_here:  # free memory moved between the two detections: a layer may move
        print(f"note: the daemon planned {predicted}, this script {planned_here}", file=sys.stderr)
    # llama-server gets the daemon's own split: its GPUs in order, their layer counts, its GPU layers.
    if served.get("devices"):
        options = replace(
            options,
            n_gpu_layers=served["n_gpu_layers"],
            tensor_split=tuple(float(d["layers"]) for d in served["devices"])
            if len(served["devices"]) > 1
            else (),
        )
    theirs: dict[int, int] = {}
    their_speed: dict[str, Any] = {}
    if args.llama_server:
        port = free_port()
        theirs, their_speed, _ = serve_and_measure(
            llama_server_command(args.llama_server, args.model, options, port),
            dict(os.environ),
            f"http://127.0.0.1:{port}",
            load,
            {"n_predict": args.tokens},
        )

    layers = {d["index"]: d["layers"] for d in served.get("devices", [])}
    rows, found = memory_rows(predicted, layers, ours, theirs)
    problems += found
    for name, speed in (("appliance", ours_speed), ("llama-server", their_speed)):
        if speed.get("errors"):
            problems.append(f"{speed['errors']} requests to {name} failed")
    print(markdown(args.model.name, args.ctx, rows, options, ours_speed, their_speed, alone))
    report = {
        "plan": chosen.to_json(), "options": options.__dict__, "llama_cpp_compute_bytes": reserved,
        "rows": rows, "appliance": ours_speed, "llama_server": their_speed, "fits_one_gpu": alone,
        "problems": problems,
    }  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
