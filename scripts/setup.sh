#!/usr/bin/env bash
# Prepares this machine for Knit: Debian packages, the project's virtualenv, a running Docker
# Engine. Idempotent and quick when everything is already there (no apt, no pip). Runs as root.
# Called by scripts/test.sh and scripts/dev.sh; it never runs tests itself.
#
# Environment:
#   DOCKER_HOST                  the Engine to use (default unix:///var/run/docker.sock); when
#                                nothing answers on the default socket, dockerd is started
#   KNIT_DOCKERD_STORAGE_DRIVER  force a storage driver (default: overlay2 where the kernel
#                                supports it, vfs otherwise)
#   KNIT_DOCKERD_LOG             dockerd's log file (default /var/log/knit-dockerd.log)
#   KNIT_DOCKERD_WAIT            seconds to wait for a started dockerd to answer (default 60)
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

say() { echo "setup: $*" >&2; }
die() {
    echo "setup: ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (installs Debian packages and starts dockerd)"

# --- Debian packages ----------------------------------------------------------------------
# iptables, containerd, runc and tini are hard dependencies of docker.io; they are listed so a
# half-installed machine is repaired too. Recommends are skipped on purpose: they pull in a
# kernel image, systemd and apparmor, none of which dockerd needs here.
PACKAGES=(
    docker.io containerd runc tini iptables
    docker-registry apache2-utils busybox-static chromium
    wireguard-go wireguard-tools iproute2 ca-certificates
    postgresql
)
VENV_PYTHON=python3
if [ ! -x .venv/bin/python ] && ! command -v python3 >/dev/null 2>&1; then
    PACKAGES+=(python3 python3-venv)
elif [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    PACKAGES+=(python3-venv)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; then
        say "another apt-get/dpkg is running; waiting for it (up to 10 min)"
        for _ in $(seq 600); do
            pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null || break
            sleep 1
        done
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Tests start throwaway PostgreSQL clusters of their own (tests/support/postgres.py):
    # the package must not create (nor, where services start, run) its "main" cluster.
    # (postgresql-common reads createcluster.d/*.conf; README.Debian)
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/knit.conf
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2
else
    say "Debian packages present"
fi

# --- virtualenv ---------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$VENV_PYTHON" -m venv .venv
fi
STAMP=.venv/.knit-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    say "installing knit and its dev dependencies into .venv"
    .venv/bin/python -m pip install --quiet -e '.[dev]' >&2
    touch "$STAMP"
else
    say ".venv up to date"
fi

# --- Docker Engine ------------------------------------------------------------------------
HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
export DOCKER_HOST=$HOST

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

if engine_answers; then
    say "Docker Engine answers on $HOST"
    exit 0
fi

SOCKET=/var/run/docker.sock
case "$HOST" in
unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
*) die "no Docker Engine answers on DOCKER_HOST=$HOST; setup.sh only starts the default one (unset DOCKER_HOST, or start that Engine yourself)" ;;
esac

# Two setup.sh at once (a test run and a dev run) must not both start dockerd.
exec 9>/run/knit-setup-dockerd.lock
flock -w 120 9 || die "another setup.sh holds /run/knit-setup-dockerd.lock"
if engine_answers; then
    say "Docker Engine answers on $HOST"
    exit 0
fi

# The default dockerd writes /var/run/docker.pid; if that process is alive it is still
# starting (or stuck), and a second dockerd on the same data root would fail.
# A killed dockerd may linger as a zombie until its parent reaps it: that one is dead.
running_pid=$(cat /var/run/docker.pid 2>/dev/null || true)
if [ -n "$running_pid" ] &&
    [ "$(cat "/proc/$running_pid/comm" 2>/dev/null || true)" = dockerd ] &&
    [ "$(awk '{print $3}' "/proc/$running_pid/stat" 2>/dev/null || true)" != Z ]; then
    say "dockerd (pid $running_pid) is running but $HOST does not answer yet; waiting for it"
else
    LOG=${KNIT_DOCKERD_LOG:-/var/log/knit-dockerd.log}
    mkdir -p "$(dirname "$LOG")"
    flags=(--host "unix://$SOCKET" --log-level warn)

    # overlay2 needs the overlay filesystem, and /var/lib/docker must not itself sit on
    # overlayfs (nested containers); otherwise vfs (slow, but works everywhere).
    driver=${KNIT_DOCKERD_STORAGE_DRIVER:-}
    if [ -z "$driver" ]; then
        mkdir -p /var/lib/docker
        if grep -qw overlay /proc/filesystems &&
            [ "$(stat -f -c %T /var/lib/docker)" != overlayfs ]; then
            driver=overlay2
        else
            driver=vfs
        fi
    fi
    flags+=(--storage-driver "$driver")

    # dockerd needs a working iptables for bridge networks (NAT, isolation). Try the nft
    # backend (Debian's default), then legacy; with neither, run without iptables: published
    # ports still work through docker-proxy, containers just get no outbound NAT.
    if iptables -t nat -S >/dev/null 2>&1; then
        :
    elif command -v iptables-legacy >/dev/null && iptables-legacy -t nat -S >/dev/null 2>&1; then
        say "iptables (nft) does not work on this kernel; switching to iptables-legacy"
        update-alternatives --set iptables /usr/sbin/iptables-legacy >&2
        update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >&2 || true
    else
        say "WARNING: no working iptables; starting dockerd with --iptables=false"
        flags+=(--iptables=false --ip-masq=false)
    fi

    # A stale socket file left by a killed dockerd is harmless (dockerd replaces it), but a
    # stale pid file naming a live, unrelated process is not: dockerd refuses to start.
    rm -f /var/run/docker.pid

    say "starting dockerd ${flags[*]} (log: $LOG)"
    # setsid: dockerd outlives this script and ignores the terminal's Ctrl-C; 9>&-: it must
    # not inherit (and so hold forever) the lock.
    setsid dockerd "${flags[@]}" >>"$LOG" 2>&1 </dev/null 9>&- &
    DOCKERD_PID=$!
fi

WAIT=${KNIT_DOCKERD_WAIT:-60}
deadline=$((SECONDS + WAIT))
while [ "$SECONDS" -lt "$deadline" ]; do
    if engine_answers; then
        say "Docker Engine answers on $HOST"
        exit 0
    fi
    if [ -n "${DOCKERD_PID:-}" ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        die "dockerd exited during start-up (see $LOG)"
    fi
    sleep 1
done
[ -n "${LOG:-}" ] && tail -n 20 "$LOG" >&2
die "no Docker Engine answered on $HOST within ${WAIT}s${LOG:+ (see $LOG)}"
