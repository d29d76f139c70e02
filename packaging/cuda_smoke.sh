#!/usr/bin/env bash
# docs/INSTALL.md's NVIDIA (CUDA) steps, run end to end from a checkout on a machine with an NVIDIA GPU,
# and checked:
#   packaging/cuda_smoke.sh                      # from the repository root
# It makes a venv, builds llama-cpp-python with CUDA for the GPU's architecture (nvidia-smi's compute
# capability), installs the appliance with the default model, and checks `appliance hw` (the GPU and
# "Offload cuda"), `appliance plan` (every layer on the GPU), `serve` (a chat completion and embeddings,
# the process on the GPU by nvidia-smi), and, where HF_ENDPOINT names a Hub (or a stand-in of it),
# `appliance pull PULL_REF` then a chat completion with the pulled model. One line per check ("ok - ..."
# or "FAIL - ..."); exits non-zero on any failure.
#
# Settings: VENV (default .venv-cuda; "-" installs into PYTHON's own environment), PYTHON (python3),
# ARCH (CUDA architecture, e.g. 90; default from nvidia-smi), PIP_ARGS (extra pip arguments, e.g. "--no-index --find-links DIR" on a machine without a
# package index), VENV_ARGS (e.g. --system-site-packages), EXTRA_CMAKE_ARGS (added to the CUDA flags),
# NO_BUILD_ISOLATION=1 (build with the venv's scikit-build-core), PORT (11436), PULL_REF, PULL_MODEL (the
# name the pulled model is served as), LLAMA_PIP_ARGS (pip arguments for the llama-cpp-python build only,
# e.g. "--config-settings=build-dir=DIR" to keep its build tree), KEEP=1 (keep the venv).
# ok and fail only print: "CHECK && ok ... || fail ..." is an if-then-else here (SC2015).
# shellcheck disable=SC2015,SC2001,SC1091
set -uo pipefail

VENV=${VENV:-.venv-cuda}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-11436}
PIP_ARGS=${PIP_ARGS:-}
VENV_ARGS=${VENV_ARGS:-}
EXTRA_CMAKE_ARGS=${EXTRA_CMAKE_ARGS:-}
LLAMA_PIP_ARGS=${LLAMA_PIP_ARGS:-}
PULL_REF=${PULL_REF:-bartowski/SmolLM2-360M-Instruct-GGUF:Q4_K_M}
PULL_MODEL=${PULL_MODEL:-smollm2-360m-instruct:q4_k_m}
KEEP=${KEEP:-0}
URL="http://127.0.0.1:${PORT}"
MODEL=smollm2-135m-instruct

cd "$(dirname "$0")/.." || exit 2
# shellcheck source=packaging/smoke_checks.sh
. packaging/smoke_checks.sh
since() { echo "$(($(date +%s) - $1)) s"; }
server_pid=
work=$(mktemp -d)
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ "$KEEP" = 1 ] || [ "$VENV" = - ] || rm -rf "$VENV"
    rm -rf "$work"
}
trap cleanup EXIT

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver"
gpu=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -1)
[ -n "$gpu" ] || die "nvidia-smi lists no GPU"
ARCH=${ARCH:-$(echo "$gpu" | sed 's/.*, *//; s/\.//')}
ok "GPU: ${gpu} -> CUDA architecture ${ARCH}"
command -v nvcc >/dev/null || die "nvcc not on PATH (the CUDA toolkit)"

if [ "$VENV" = - ]; then
    PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
    pip() { "$PYTHON" -m pip "$@"; }
    python() { "$PYTHON" "$@"; }
else
    # shellcheck disable=SC2086
    "$PYTHON" -m venv $VENV_ARGS "$VENV" || die "python3 -m venv"
    . "$VENV/bin/activate"
fi
start=$(date +%s)
isolation=()
[ "${NO_BUILD_ISOLATION:-0}" = 1 ] && isolation=(--no-build-isolation)
# shellcheck disable=SC2086
CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${ARCH} ${EXTRA_CMAKE_ARGS}" \
    pip install -q --no-cache-dir $PIP_ARGS $LLAMA_PIP_ARGS "${isolation[@]}" 'llama-cpp-python==0.3.36' >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log"; die "llama-cpp-python built with CUDA"; }
ok "llama-cpp-python built with CUDA for ${ARCH} ($(since "$start"))"
start=$(date +%s)
# shellcheck disable=SC2086
pip install -q $PIP_ARGS '.[default-model]' >"$work/install.log" 2>&1 ||
    { tail -30 "$work/install.log"; die "pip install '.[default-model]'"; }
ok "the appliance and the default model installed; llama-cpp-python kept ($(since "$start"))"
python -c 'import llama_cpp, sys; sys.exit(not llama_cpp.llama_supports_gpu_offload())' ||
    fail "the installed llama-cpp-python can offload to a GPU"

hw=$(appliance hw 2>&1)
echo "$hw" | sed 's/^/#   /'
echo "$hw" | grep -q '^Offload  cuda' && ok "appliance hw: Offload cuda" || fail "appliance hw: Offload cuda"
echo "$hw" | grep -q 'Warning' && fail "appliance hw warns" || ok "appliance hw: no warning"

plan=$(appliance plan "$MODEL" 2>&1)
echo "$plan" | sed 's/^/#   /'
echo "$plan" | grep -Eq '\.gguf\): .*, GPU$' && ok "appliance plan: every layer on the GPU" ||
    fail "appliance plan: every layer on the GPU"

serve() { # serve MODEL: start the daemon, wait for /health
    APPLIANCE_HOME="$work/home" appliance serve "$1" --host 127.0.0.1 --port "$PORT" >"$work/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 240); do
        curl -sf "$URL/health" >/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.5
    done
    tail -20 "$work/serve.log"
    return 1
}
stop() { kill "$server_pid" && wait "$server_pid" 2>/dev/null; server_pid=; }
chat() { # chat MODEL: one chat completion, its text printed
    curl -sf "$URL/v1/chat/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"$1\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello\"}]}" |
        python -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
}

mkdir -p "$work/home"
start=$(date +%s)
serve "$MODEL" || die "appliance serve $MODEL answered /health"
ok "serve: /health answered ($(since "$start"))"
reply=$(chat "$MODEL") && ok "chat completion: ${reply//$'\n'/ }" || fail "chat completion"
dims=$(curl -sf "$URL/v1/embeddings" -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"input\":\"hello\"}" |
    python -c 'import json,sys; print(len(json.load(sys.stdin)["data"][0]["embedding"]))') &&
    ok "embeddings: ${dims} dimensions" || fail "embeddings"
used=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader | grep "^${server_pid}," | sed 's/.*, *//')
[ -n "$used" ] && ok "the daemon holds ${used} on the GPU" || fail "the daemon is on the GPU (nvidia-smi)"
stop

if [ -n "${HF_ENDPOINT:-}" ]; then
    start=$(date +%s)
    APPLIANCE_HOME="$work/home" appliance pull "$PULL_REF" 2>&1 | tail -3 | sed 's/^/#   /'
    [ "${PIPESTATUS[0]}" = 0 ] && ok "appliance pull ${PULL_REF} ($(since "$start"))" || fail "appliance pull ${PULL_REF}"
    serve "$PULL_MODEL" || die "serve the pulled $PULL_MODEL"
    reply=$(chat "$PULL_MODEL") && ok "chat completion with the pulled model: ${reply//$'\n'/ }" ||
        fail "chat completion with the pulled model"
    stop
else
    echo "# skipped: pull then serve (HF_ENDPOINT unset)"
fi

echo "# ${failures} failure(s)"
[ "$failures" = 0 ]
