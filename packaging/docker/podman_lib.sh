# shellcheck shell=bash
# Shared by podman_smoke.sh and ../systemd_smoke.sh (sourced, not run): their ok/FAIL lines, the base
# image or a stand-in for it, and how this host runs containers (prepare: all three). The functions past
# the check helpers (../smoke_checks.sh) expect PODMAN and BASE set.
#
# Where Docker Hub cannot be reached, `python:3.11-slim-bookworm` is replaced by a stand-in made with
# debootstrap (Debian bookworm minbase with python3, python3-venv, python3-pip, ca-certificates, and
# /usr/local/bin/python -> /usr/bin/python3: bookworm's python3 is 3.11, as in the official image),
# imported under the same name and labelled llm-appliance.stand-in=debootstrap. Extra CA certificates of
# this machine (/usr/local/share/ca-certificates, e.g. a TLS-intercepting egress proxy's) go into the
# stand-in so that apt and pip inside the build work; the real base gets none.
#
# Where podman's default runtime (crun) cannot start a container (cgroups v1/hybrid hosts, or a host
# without CAP_SYS_RESOURCE that cannot raise rlimits), ENGINE becomes runc with rlimits under this
# shell's hard limits.

# shellcheck source=packaging/smoke_checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../smoke_checks.sh"

stand_in() {
    command -v debootstrap >/dev/null || die "no base image and no debootstrap to make a stand-in"
    local root
    root=$(mktemp -d /var/tmp/llm-appliance-base.XXXXXX)
    chmod 755 "$root" # the image's / (mktemp makes it 0700: a rootless container's non-root user could not run)
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

# The base image: there already, pulled, or a stand-in made here.
ensure_base() {
    if ! "$PODMAN" image exists "$BASE"; then
        if timeout 120 "$PODMAN" pull -q "$BASE" >/dev/null 2>&1; then
            ok "pulled $BASE"
        else
            echo "# cannot pull $BASE: making a stand-in with debootstrap"
            stand_in
        fi
    fi
}

# ENGINE: the podman flags this host needs to start a container (empty where the defaults work).
detect_engine() {
    ENGINE=()
    # --network none: this is about the runtime; a rootless network (slirp4netns) may fail on its own.
    if ! "$PODMAN" run --rm --pull=never --network none "$BASE" true >/dev/null 2>&1; then
        local nproc_max
        nproc_max=$(ulimit -Hu)
        [ "$nproc_max" = unlimited ] || [ "$nproc_max" -gt 4096 ] && nproc_max=4096
        ENGINE=(--runtime runc --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=${nproc_max}:${nproc_max}")
        "$PODMAN" run --rm --pull=never --network none "${ENGINE[@]}" "$BASE" true >/dev/null 2>&1 \
            || die "podman cannot start a container here, with crun or with ${ENGINE[*]}"
        echo "# the default runtime cannot start a container here; using ${ENGINE[*]}"
    fi
}

# One line saying whether BASE is the real image or the stand-in.
describe_base() {
    if [ "$("$PODMAN" image inspect -f '{{index .Labels "llm-appliance.stand-in"}}' "$BASE" 2>/dev/null)" = debootstrap ]; then
        ok "base $BASE: STAND-IN (debootstrap bookworm minbase, $("$PODMAN" run --rm --pull=never --network none "${ENGINE[@]}" "$BASE" python --version 2>/dev/null || echo '?'))"
    else
        ok "base $BASE: the real image"
    fi
}

# podman there, the base image there, ENGINE set, each said in an ok line.
prepare() {
    command -v "$PODMAN" >/dev/null || die "podman is not installed (apt-get install podman)"
    ok "$("$PODMAN" --version)"
    ensure_base
    detect_engine
    describe_base
}
