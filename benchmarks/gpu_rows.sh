#!/usr/bin/env bash
# The GPU rows of docs/BENCHMARKS.md in one go, on a machine where the appliance and a CUDA build of
# llama-cpp-python are installed (packaging/cuda_smoke.sh, or docs/INSTALL.md) and llama-server was built
# from the same llama.cpp: the step by size for both models, then single stream, chat at 4 and 8 streams,
# speculation (edit at 1 and 4 streams, free text) against llama-server, and a draft pair, each report kept with the appliance's own
# account of the run (`engine`: what it guessed and kept, the step times it learned). Before those, the
# best guessing could do on each reply with these step times (guess_bound.py) and the engine in process
# (engine_steps.py).
#
#   LS=/path/to/llama-server OUT=/tmp/rows bash benchmarks/gpu_rows.sh [THREADS]
#
# MID (default: synthetic-mid Q4_K_M, made by benchmarks/make_models.py into $OUT/models when missing)
# is the larger model. About 6 minutes on an H200 after the build.
set -euo pipefail
: "${LS:?set LS to the llama-server binary}" "${OUT:?set OUT to a directory for the reports}"
threads=${1:-8}
mkdir -p "$OUT/steps"  # step tables and in-process runs: apart from the bench reports
M=$(python3 -c 'from models.embedded import embedded_model_path as e; print(e() or "")')
[ -n "$M" ] || { echo "the [default-model] extra is needed" >&2; exit 1; }
MID=${MID:-$OUT/models/synthetic-mid.Q4_K_M.gguf}
[ -f "$MID" ] || python3 benchmarks/make_models.py --out "$OUT/models" --sizes mid --quants Q4_K_M --threads "$threads" \
    --no-verify
B=(python3 -m appliance bench --llama-server "$LS" --threads "$threads" --startup-timeout 120 --request-timeout 120)
rows() { grep -E '^\| (metric|decode|aggregate|TTFT p50|ITL)' || true; }

python3 benchmarks/step_cost.py "$M" --threads "$threads" --json "$OUT/steps/default.json" | tee "$OUT/step-cost-default.md"
python3 benchmarks/step_cost.py "$MID" --threads "$threads" --json "$OUT/steps/mid.json" | tee "$OUT/step-cost-mid.md"
for prompt in edit short; do  # the best guessing could do there, and the engine's rules, on plain's reply
    python3 benchmarks/guess_bound.py "$M" --prompt "$prompt" --gpu-layers -1 --threads "$threads" \
        --step-times "$OUT/steps/default.json" | tee "$OUT/bound-$prompt.md"
done
for prompt in edit short; do  # the engine in process, on the real clock
    python3 benchmarks/engine_steps.py "$M" --prompt "$prompt" --threads "$threads" --json "$OUT/steps/engine-$prompt.json" \
        | tee "$OUT/engine-steps-$prompt.md"
done
for run in 1 2; do
    "${B[@]}" "$MID" --servers llama-server,appliance --tokens 256 --requests 8 --out "$OUT/single-mid-$run.json" | rows
done
for c in 4 8; do
    "${B[@]}" "$M" --servers llama-server,llama-server-uncached,appliance,appliance-uncached --tokens 64 \
        --prompt chat --concurrency "$c" --requests $((8 * c)) --ctx $((4096 * c)) --out "$OUT/chat-c$c.json" | rows
done
"${B[@]}" "$M" --servers llama-server,llama-server-ngram,appliance-plain,appliance --tokens 256 --requests 5 \
    --prompt edit --out "$OUT/edit.json" | rows
"${B[@]}" "$M" --servers llama-server-ngram,appliance-plain,appliance --tokens 256 --prompt edit --concurrency 4 \
    --requests 12 --ctx 16384 --out "$OUT/edit-c4.json" | rows
"${B[@]}" "$MID" --servers llama-server-ngram,appliance-plain,appliance --tokens 256 --requests 5 --prompt edit \
    --out "$OUT/edit-mid.json" | rows
"${B[@]}" "$M" --servers appliance-plain,appliance,llama-server --tokens 256 --requests 8 --out "$OUT/free.json" | rows
# A draft pair: the default model's weights at F16 checked by the model, guessed by its Q4_1 (no larger
# model of its family is at hand; on a GPU both steps cost about the same, so this shows what the engine
# does where a draft cannot pay).
mkdir -p "$OUT/models"
[ -f "$OUT/models/default-f16.gguf" ] || python3 - "$M" "$OUT/models/default-f16.gguf" <<'EOF2'
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.allow_requantize = llama_cpp.LLAMA_FTYPE_MOSTLY_F16, True
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
EOF2
"${B[@]}" "$OUT/models/default-f16.gguf" --draft "$M" --servers appliance-plain,appliance-draft,llama-server,llama-server-draft \
    --tokens 256 --requests 5 --out "$OUT/draft.json" | rows
python3 - "$OUT" <<'EOF'
import json, pathlib, sys
for report in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    for name, result in json.loads(report.read_text())["results"].items():
        for model in result.get("engine", []):
            print(f"{report.name} {name}: {json.dumps(model.get('speculation'))}")
EOF
