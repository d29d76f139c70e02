# shellcheck shell=bash
# The check helpers of the smoke scripts (packaging/docker/podman_lib.sh for podman_smoke.sh and
# systemd_smoke.sh, packaging/arm64_qemu_smoke.sh, packaging/cuda_smoke.sh), sourced by them: one line
# per check, "ok - ..." or "FAIL - ...", the failures counted in $failures.
failures=0
ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; failures=$((failures + 1)); }
die() { echo "FAIL - $*"; echo "# ${failures} earlier failure(s); stopping"; exit 1; }
check() { # check DESCRIPTION COMMAND...: ok when COMMAND succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
