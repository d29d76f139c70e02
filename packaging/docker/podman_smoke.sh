#!/usr/bin/env bash
# Build and run the CPU image (packaging/docker/Dockerfile) with podman, end to end, and check it:
#   sudo packaging/docker/podman_smoke.sh            # from the repository root
# One line per check ("ok - ..." or "FAIL - ..."); exits non-zero on any failure. It leaves the image
# (llm-appliance) and removes its container and volume (KEEP=1 keeps them).
#
# Where Docker Hub cannot be reached, `python:3.11-slim-bookworm` is replaced by a stand-in made with
# debootstrap (Debian bookworm minbase with python3, python3-venv, python3-pip, ca-certificates, and
# /usr/local/bin/python -> /usr/bin/python3: bookworm's python3 is 3.11, as in the official image),
# imported under the same name and labelled llm-appliance.stand-in=debootstrap. Extra CA certificates of
# this machine (/usr/local/share/ca-certificates, e.g. a TLS-intercepting egress proxy's) go into the
# stand-in so that apt and pip inside the build work; the real base gets none.
#
# Where podman's default runtime (crun) cannot start a container (cgroups v1/hybrid hosts, or a host
# without CAP_SYS_RESOURCE that cannot raise rlimits), it retries with runc and rlimits under this
# shell's hard limits. Settings: PODMAN, IMAGE, BASE, NAME, VOLUME, PORT, MODEL, HEALTH_TIMEOUT, KEEP.
set -uo pipefail

PODMAN=${PODMAN:-podman}
IMAGE=${IMAGE:-llm-appliance}
BASE=${BASE:-docker.io/library/python:3.11-slim-bookworm}
NAME=${NAME:-llm-appliance-smoke}
VOLUME=${VOLUME:-llm-appliance-smoke}
PORT=${PORT:-11435}
MODEL=${MODEL:-smollm2-135m-instruct}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-240}
KEEP=${KEEP:-0}
URL="http://127.0.0.1:${PORT}"

cd "$(dirname "$0")/../.." || exit 2
# shellcheck source=packaging/smoke_checks.sh
. packaging/smoke_checks.sh

cleanup() {
    if [ "$KEEP" != 1 ]; then
        "$PODMAN" rm -f -t 5 "$NAME" >/dev/null 2>&1
        "$PODMAN" volume rm -f "$VOLUME" >/dev/null 2>&1
    fi
}
trap cleanup EXIT

command -v "$PODMAN" >/dev/null || die "podman is not installed (apt-get install podman)"
ok "$("$PODMAN" --version)"

# --- the base image -------------------------------------------------------------------------------
stand_in() {
    command -v debootstrap >/dev/null || die "no base image and no debootstrap to make a stand-in"
    local root
    root=$(mktemp -d /var/tmp/llm-appliance-base.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/tmp/podman_smoke_debootstrap.log 2>&1 \
        || { rm -rf "$root"; die "debootstrap (log: /tmp/podman_smoke_debootstrap.log)"; }
    ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the stand-in"
    fi
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . | "$PODMAN" import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL llm-appliance.stand-in=debootstrap' \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null 2>&1 || { rm -rf "$root"; die "podman import"; }
    rm -rf "$root"
}
if ! "$PODMAN" image exists "$BASE"; then
    if timeout 120 "$PODMAN" pull -q "$BASE" >/dev/null 2>&1; then
        ok "pulled $BASE"
    else
        echo "# cannot pull $BASE: making a stand-in with debootstrap"
        stand_in
    fi
fi

# --- how this host runs containers ------------------------------------------------------------------
ENGINE=()
if ! "$PODMAN" run --rm --pull=never "$BASE" true >/dev/null 2>&1; then
    nproc_max=$(ulimit -Hu)
    [ "$nproc_max" = unlimited ] || [ "$nproc_max" -gt 4096 ] && nproc_max=4096
    ENGINE=(--runtime runc --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=${nproc_max}:${nproc_max}")
    "$PODMAN" run --rm --pull=never "${ENGINE[@]}" "$BASE" true >/dev/null 2>&1 \
        || die "podman cannot start a container here, with crun or with ${ENGINE[*]}"
    echo "# the default runtime cannot start a container here; using ${ENGINE[*]}"
fi

if [ "$("$PODMAN" image inspect -f '{{index .Labels "llm-appliance.stand-in"}}' "$BASE" 2>/dev/null)" = debootstrap ]; then
    ok "base $BASE: STAND-IN (debootstrap bookworm minbase, $("$PODMAN" run --rm --pull=never "${ENGINE[@]}" "$BASE" python --version 2>/dev/null || echo '?'))"
else
    ok "base $BASE: the real image"
fi

# --- build --------------------------------------------------------------------------------------------
# --format docker: the OCI image format has no HEALTHCHECK, and podman drops it there.
start=$(date +%s)
if "$PODMAN" build --pull=never --format docker --network host "${ENGINE[@]}" \
    -f packaging/docker/Dockerfile -t "$IMAGE" . >/tmp/podman_smoke_build.log 2>&1; then
    ok "build $IMAGE in $(($(date +%s) - start)) s (log: /tmp/podman_smoke_build.log)"
else
    tail -20 /tmp/podman_smoke_build.log
    die "build $IMAGE (log: /tmp/podman_smoke_build.log)"
fi
size=$("$PODMAN" image inspect -f '{{.Size}}' "$IMAGE")
ok "image size $((size / 1000000)) MB"
check "image user is 10001:10001" [ "$("$PODMAN" image inspect -f '{{.Config.User}}' "$IMAGE")" = 10001:10001 ]
check "image healthcheck defined, on /health" \
    grep -q '127.0.0.1:11435/health' <<<"$("$PODMAN" image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE")"

# --- run --------------------------------------------------------------------------------------------
"$PODMAN" rm -f -t 5 "$NAME" >/dev/null 2>&1
"$PODMAN" volume rm -f "$VOLUME" >/dev/null 2>&1
curl -s -o /dev/null --max-time 2 "$URL/health" && die "something already answers on $URL"
if ! "$PODMAN" run -d --name "$NAME" "${ENGINE[@]}" -p "127.0.0.1:${PORT}:11435" \
    -v "$VOLUME:/var/lib/llm-appliance" "$IMAGE" >/dev/null 2>/tmp/podman_smoke_run.err; then
    # No working bridge network (e.g. no netavark/CNI firewall): the host's network, on loopback only.
    echo "# -p failed ($(tail -1 /tmp/podman_smoke_run.err)); using --network host on 127.0.0.1"
    "$PODMAN" rm -f "$NAME" >/dev/null 2>&1
    "$PODMAN" run -d --name "$NAME" "${ENGINE[@]}" --network host -e APPLIANCE_SERVER__HOST=127.0.0.1 \
        -e "APPLIANCE_SERVER__PORT=${PORT}" -v "$VOLUME:/var/lib/llm-appliance" "$IMAGE" >/dev/null \
        || die "podman run"
fi
ok "container $NAME started"

wait_health() {
    local t0
    t0=$(date +%s)
    while [ $(($(date +%s) - t0)) -lt "$HEALTH_TIMEOUT" ]; do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$URL/health")" = 200 ]; then
            echo $(($(date +%s) - t0))
            return 0
        fi
        [ "$("$PODMAN" inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ] || return 1
        sleep 1
    done
    return 1
}
if secs=$(wait_health); then
    ok "/health answers 200 after ${secs} s"
else
    "$PODMAN" logs --tail 30 "$NAME" 2>&1
    die "/health did not answer within ${HEALTH_TIMEOUT} s"
fi

key=$("$PODMAN" logs "$NAME" 2>&1 | sed -n 's/^llm-appliance: made an API key, kept in .*: //p' | tail -1)
[ -n "$key" ] || die "no API key in podman logs"
ok "API key printed to the log (${key:0:6}...)"

status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$URL/v1/models")
check "no key: /v1/models answers 401 (got $status)" [ "$status" = 401 ]

chat() {
    curl -s --max-time 120 -w '\n%{http_code}' "$URL/v1/chat/completions" \
        -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
        -d "{\"model\":\"${MODEL}\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello\"}]}"
}
reply=$(chat "$key")
code=${reply##*$'\n'}
body=${reply%$'\n'*}
text=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["choices"][0]["message"]["content"])' \
    <<<"$body" 2>/dev/null)
if [ "$code" = 200 ] && [ -n "$text" ]; then
    ok "chat completion with the key (${MODEL}, max_tokens 8): $(tr '\n' ' ' <<<"$text")"
else
    fail "chat completion with the key: HTTP $code, ${body:0:300}"
fi

pid=$("$PODMAN" inspect -f '{{.State.Pid}}' "$NAME")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status" 2>/dev/null)
check "the server (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)) runs as uid 10001 ($uids)" \
    [ "$uids" = "10001 10001 10001 10001" ]

hc=$("$PODMAN" healthcheck run "$NAME" 2>&1)
hc_rc=$?
check "podman healthcheck run: ${hc:-healthy}" [ "$hc_rc" -eq 0 ]

mnt=$("$PODMAN" volume inspect -f '{{.Mountpoint}}' "$VOLUME")
check "state in the volume ($(find "$mnt" -mindepth 1 -maxdepth 1 -printf "%f " 2>/dev/null))" \
    grep -q "$(printf %s "$key" | cut -c1-6)" "$mnt/api-keys"
check "the volume's files belong to 10001" [ "$(stat -c %u "$mnt/api-keys" 2>/dev/null)" = 10001 ]

# --- restart: the same key, no new one ------------------------------------------------------------
# Without systemd, podman cannot schedule the periodic healthcheck (its timers are systemd units) and
# says so on stderr; `podman healthcheck run` above works regardless.
"$PODMAN" restart -t 10 "$NAME" >/dev/null 2>/tmp/podman_smoke_restart.err || die "podman restart"
if secs=$(wait_health); then ok "after restart, /health answers 200 after ${secs} s"; else die "no /health after restart"; fi
made=$("$PODMAN" logs "$NAME" 2>&1 | grep -c 'made an API key')
check "after restart, no second key made (${made} in the log)" [ "$made" = 1 ]
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $key" "$URL/v1/models")
check "after restart, the first key still works (/v1/models: $status)" [ "$status" = 200 ]

# --- cleanup -----------------------------------------------------------------------------------------
if [ "$KEEP" != 1 ]; then
    "$PODMAN" rm -f -t 10 "$NAME" >/dev/null 2>&1
    "$PODMAN" volume rm -f "$VOLUME" >/dev/null 2>&1
    check "container and volume removed" \
        [ -z "$("$PODMAN" ps -a -q --filter "name=^${NAME}\$")" ]
    sleep 1
    check "no conmon left for $NAME" [ -z "$(pgrep -f "conmon.*${NAME}" || true)" ]
fi

if [ "$failures" -gt 0 ]; then
    echo "# ${failures} check(s) failed"
    exit 1
fi
echo "# all checks passed"
