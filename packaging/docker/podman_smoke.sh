#!/usr/bin/env bash
# Build and run the CPU image (packaging/docker/Dockerfile) with podman, end to end, and check it:
#   sudo packaging/docker/podman_smoke.sh            # from the repository root
#   BUILD=0 packaging/docker/podman_smoke.sh         # rootless: as a user with /etc/subuid entries
# One line per check ("ok - ..." or "FAIL - ..."); exits non-zero on any failure. It leaves the image
# (llm-appliance) and removes its container and volume (KEEP=1 keeps them). BUILD=0 runs the image
# already there (`podman load`ed, say) instead of building it.
#
# Rootless, uid 10001 in the container is a subordinate uid outside, and the volume's files are read
# through `podman unshare`. The base image (or a debootstrap stand-in where Docker Hub cannot be reached)
# and the runtime flags this host needs: podman_lib.sh says how. Settings: PODMAN, IMAGE, BASE, NAME,
# VOLUME, PORT, MODEL, HEALTH_TIMEOUT, KEEP, BUILD.
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
BUILD=${BUILD:-1}
URL="http://127.0.0.1:${PORT}"
ROOTLESS=0
LOGS=/tmp/podman_smoke
[ "$(id -u)" = 0 ] || { ROOTLESS=1; LOGS="/tmp/podman_smoke-$(id -un)"; }

cd "$(dirname "$0")/../.." || exit 2
# shellcheck source=packaging/docker/podman_lib.sh
. packaging/docker/podman_lib.sh

cleanup() {
    if [ "$KEEP" != 1 ]; then
        "$PODMAN" rm -f -t 5 "$NAME" >/dev/null 2>&1
        "$PODMAN" volume rm -f "$VOLUME" >/dev/null 2>&1
    fi
}
trap cleanup EXIT

# --- podman, the base image, and how this host runs containers -------------------------------------
prepare

# --- build --------------------------------------------------------------------------------------------
# --format docker: the OCI image format has no HEALTHCHECK, and podman drops it there.
start=$(date +%s)
if [ "$BUILD" = 0 ]; then
    "$PODMAN" image exists "$IMAGE" || die "BUILD=0 and no image $IMAGE"
    ok "image $IMAGE as it is (BUILD=0: $("$PODMAN" image inspect -f '{{.Id}}' "$IMAGE" | cut -c1-12), built $("$PODMAN" image inspect -f '{{.Created}}' "$IMAGE"))"
elif "$PODMAN" build --pull=never --format docker --network host "${ENGINE[@]}" \
    -f packaging/docker/Dockerfile -t "$IMAGE" . >"${LOGS}_build.log" 2>&1; then
    ok "build $IMAGE in $(($(date +%s) - start)) s (log: ${LOGS}_build.log)"
else
    tail -20 "${LOGS}_build.log"
    die "build $IMAGE (log: ${LOGS}_build.log)"
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
    -v "$VOLUME:/var/lib/llm-appliance" "$IMAGE" >/dev/null 2>"${LOGS}_run.err"; then
    # No working bridge network (e.g. no netavark/CNI firewall): the host's network, on loopback only.
    echo "# -p failed ($(tail -1 "${LOGS}_run.err")); using --network host on 127.0.0.1"
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
# Rootless, the container's uid 10001 is a subordinate uid of this user's outside.
outside=10001
# shellcheck disable=SC2016 # an awk program
[ "$ROOTLESS" = 1 ] && outside=$("$PODMAN" unshare awk '$1 <= 10001 && 10001 < $1 + $3 {print $2 + 10001 - $1}' /proc/self/uid_map)
check "the server (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)) runs as uid 10001 ($uids outside)" \
    [ "$uids" = "$outside $outside $outside $outside" ]

hc=$("$PODMAN" healthcheck run "$NAME" 2>&1)
hc_rc=$?
check "podman healthcheck run: ${hc:-healthy}" [ "$hc_rc" -eq 0 ]

mnt=$("$PODMAN" volume inspect -f '{{.Mountpoint}}' "$VOLUME")
# as_owner COMMAND...: with the container's uids (rootless: in podman's user namespace)
as_owner() { if [ "$ROOTLESS" = 1 ]; then "$PODMAN" unshare "$@"; else "$@"; fi; }
check "state in the volume ($(as_owner find "$mnt" -mindepth 1 -maxdepth 1 -printf "%f " 2>/dev/null))" \
    as_owner grep -q "$(printf %s "$key" | cut -c1-6)" "$mnt/api-keys"
check "the volume's files belong to 10001" [ "$(as_owner stat -c %u "$mnt/api-keys" 2>/dev/null)" = 10001 ]

# --- restart: the same key, no new one ------------------------------------------------------------
# Without systemd, podman cannot schedule the periodic healthcheck (its timers are systemd units) and
# says so on stderr; `podman healthcheck run` above works regardless.
"$PODMAN" restart -t 10 "$NAME" >/dev/null 2>"${LOGS}_restart.err" || die "podman restart"
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
