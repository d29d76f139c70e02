"""Where a load's host memory goes: the figures behind a RAM row of plan_accuracy.py, taken apart.

For each GPU-layer count, a fresh process loads the model (the plan's settings otherwise), runs a prompt
longer than one ubatch and a few tokens, then reports: peak RSS and RSS now over its baseline; RSS by
mapping (the model file, anonymous memory, the GPU driver's mappings such as pinned host buffers); the
fall of the system's MemAvailable over the load (memory that is not in RSS, e.g. pinned pages, shows
there); and llama.cpp's own buffer lines (which buffer types hold the weights, KV and compute).

    python benchmarks/host_memory.py MODEL.gguf --ctx 4096 --n-gpu-layers 0,16,99 [--threads 16] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MIB = 1 << 20

CHILD = r"""
import json, logging, resource, sys
from pathlib import Path
from appliance.engine.llama import LlamaModel
from appliance.engine.runtime import system_info
from appliance.engine.params import LoadOptions, SamplingParams

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        text = record.getMessage()
        if any(k in text for k in ("buffer size", "mmap", "offload", "repack", "KV", "host")):
            lines.append(text.replace("llama.cpp: ", ""))
logging.getLogger("appliance.engine.runtime").addHandler(Keep())
logging.getLogger("appliance.engine.runtime").setLevel(logging.DEBUG)

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

def available():
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))

def by_mapping(model_path):
    groups = {}
    name = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head[0]) > 8 and not line[0].isupper():
                path = head[5] if len(head) > 5 else "[anon]"
                if path == model_path:
                    path = "model file"
                elif path.startswith("/dev/nvidia"):
                    path = "nvidia device (pinned/driver)"
                elif path.startswith("/") and ".so" in path:
                    path = "libraries"
                name = path
            elif head[0] == "Rss:":
                groups[name] = groups.get(name, 0) + int(head[1]) * 1024
    return groups

system_info()
options = LoadOptions(**json.loads(sys.argv[2]))
if options.n_gpu_layers:
    import pynvml
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
    gpu0 = gpu()
base_rss, base_avail, base_map = status("VmRSS"), available(), by_mapping(sys.argv[1])
model = LlamaModel(Path(sys.argv[1]), options)
after_load = {"rss": status("VmRSS") - base_rss, "available_fall": base_avail - available()}
text = "The sea is wide and the ships sail on it, carrying cargo from port to port. " * 60
prompt = model.tokenize(text, add_special=True, parse_special=False)[: options.n_ubatch + 100]
for _ in model.generate(prompt, SamplingParams(temperature=0), 8):
    pass
now_map = by_mapping(sys.argv[1])
result = {
    "n_gpu_layers": options.n_gpu_layers,
    "peak_rss_increase": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss,
    "rss_increase_now": status("VmRSS") - base_rss,
    "available_fall_now": base_avail - available(),
    "after_load": after_load,
    "rss_by_mapping_increase": {
        k: v - base_map.get(k, 0) for k, v in now_map.items() if abs(v - base_map.get(k, 0)) >= MIB_
    },
    "llama_cpp": lines,
}
if options.n_gpu_layers:
    result["gpu_increase"] = gpu() - gpu0
print("RESULT " + json.dumps(result))
""".replace("MIB_", str(MIB))


def measure(path: Path, options: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path.resolve()), json.dumps(options)],
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"the measuring process failed ({out.returncode}):\n{out.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--n-gpu-layers", default="0", help="comma-separated; 99 = all")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for layers in (int(n) for n in args.n_gpu_layers.split(",")):
        options = {"n_ctx": args.ctx, "n_gpu_layers": layers, "n_threads": args.threads,
                   "n_threads_batch": args.threads, "flash_attn": "on" if layers else "auto"}  # fmt: skip
        row = measure(args.model, options)
        rows.append(row)
        print(f"== {args.model.name} ctx {args.ctx}, {layers} GPU layers")
        for key in ("peak_rss_increase", "rss_increase_now", "available_fall_now", "gpu_increase"):
            if key in row:
                print(f"  {key:22s} {row[key] / MIB:8.1f} MiB")
        print(f"  after load: RSS +{row['after_load']['rss'] / MIB:.1f} MiB, "
              f"MemAvailable -{row['after_load']['available_fall'] / MIB:.1f} MiB")  # fmt: skip
        for name, size in sorted(row["rss_by_mapping_increase"].items(), key=lambda kv: -kv[1]):
            print(f"  RSS {name}: {size / MIB:+.1f} MiB")
        for line in row["llama_cpp"]:
            print(f"  | {line}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
