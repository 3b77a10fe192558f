#!/usr/bin/env bash
# setup-gvisor.sh — make gVisor (runsc) usable by the local Docker daemon. Run as root.
#
# What it does (idempotent; safe to run again):
#   1. Installs Debian's `runsc` package if no runsc binary is present (apt-get update first).
#      Debian 12 (bookworm) ships it in main (0.0~20221219). gVisor's own apt repository
#      (storage.googleapis.com/gvisor/releases) is an alternative where that host is reachable.
#   2. Registers two runtimes in /etc/docker/daemon.json, keeping every other key:
#        runsc      runsc --network=none   for offline containers (runs, sessions, checks).
#                   Docker's `--network none` alone is not enough: this runsc version thinks any
#                   network namespace on a recent kernel is the host's and refuses to start with
#                   "cannot run with network enabled in root network namespace".
#        runsc-net  runsc --network=host   for containers that need a network (package installs).
#                   "host" here means the *container's* network namespace (Docker's bridge),
#                   used through the host kernel's network stack instead of gVisor's netstack
#                   (which fails to start here as above). The container still sees only its own
#                   eth0 + lo.
#      The previous file is kept as daemon.json.bak-<time> whenever it is changed.
#      (To unregister later, delete the entries but keep a "runtimes" key: on SIGHUP dockerd 20.10
#      leaves its runtimes as they were when the key is missing.)
#   3. Sends SIGHUP to dockerd (no restart: running containers are untouched) and waits until
#      `docker info` lists both runtimes.
#   4. Smoke-tests both runtimes with a local image (nothing is pulled) and removes its containers.
#
# Settings (environment variables):
#   RUNSC_NAME=runsc            name of the offline runtime
#   RUNSC_NET_NAME=runsc-net    name of the network-enabled runtime
#   RUNSC_EXTRA_ARGS=""         extra runsc flags for both, space-separated (e.g. "--debug").
#                               Not needed here: the default ptrace platform works with the
#                               fuse-overlayfs storage driver and cgroup v1 limits; --platform=kvm
#                               hangs at start inside this VM; systrap does not exist in this version.
#                               --oci-seccomp (apply Docker's seccomp profile inside the sandbox)
#                               makes pthread_create fail with EPERM in this version (numpy, any
#                               threaded program): leave it out.
#   DAEMON_JSON=/etc/docker/daemon.json
#   SMOKE_IMAGE=<image>         image for the smoke test (default: the first local one of
#                               mcp-code-executor/venv, mcp-code-executor/base:bookworm,
#                               debian:bookworm-slim, busybox); no such image: test skipped.
#   SKIP_SMOKE=1                skip the smoke test.
#   WAIT_SECS=60                how long to wait for dockerd to pick up the runtimes.
# Exit status: 0 when runsc is installed, registered and (unless skipped) working; non-zero with
# a message saying what failed otherwise.
set -euo pipefail

RUNSC_NAME=${RUNSC_NAME:-runsc}
RUNSC_NET_NAME=${RUNSC_NET_NAME:-runsc-net}
RUNSC_EXTRA_ARGS=${RUNSC_EXTRA_ARGS:-}
DAEMON_JSON=${DAEMON_JSON:-/etc/docker/daemon.json}
WAIT_SECS=${WAIT_SECS:-60}
SKIP_SMOKE=${SKIP_SMOKE:-0}

log() { printf '[setup-gvisor] %s\n' "$*"; }
die() { printf '[setup-gvisor] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs a package, edits $DAEMON_JSON and signals dockerd)"
command -v python3 >/dev/null || die "python3 is needed to edit $DAEMON_JSON"
command -v docker >/dev/null || die "the docker CLI is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is dockerd running?)"
[ "$RUNSC_NAME" != "$RUNSC_NET_NAME" ] || die "RUNSC_NAME and RUNSC_NET_NAME must differ"

# ---- 1. the runsc binary -------------------------------------------------------------------
RUNSC=$(command -v runsc || true)
if [ -z "$RUNSC" ]; then
    command -v apt-get >/dev/null || die "runsc is missing and there is no apt-get: install gVisor's runsc by hand"
    log "runsc not found: installing Debian's runsc package"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for other apt/dpkg users instead of failing on the lock.
    APT=(apt-get -o DPkg::Lock::Timeout=600)
    "${APT[@]}" update -q || log "warning: apt-get update reported errors; trying the install anyway"
    POLICY=$(apt-cache policy runsc 2>/dev/null || true)
    if ! grep -q 'Candidate: [0-9]' <<<"$POLICY"; then
        die "no apt source offers 'runsc'. It is in Debian bookworm main (and trixie); add a Debian \
mirror, or gVisor's repo 'deb https://storage.googleapis.com/gvisor/releases release main' if reachable"
    fi
    "${APT[@]}" install -y -q --no-install-recommends runsc || die "apt-get install runsc failed"
    RUNSC=$(command -v runsc || true)
    [ -n "$RUNSC" ] || die "runsc package installed but no runsc binary on PATH"
    log "installed: $(dpkg-query -W -f='${Package} ${Version}' runsc 2>/dev/null || echo runsc)"
else
    log "runsc already present: $RUNSC"
fi
RUNSC=$(readlink -f "$RUNSC")
# The whole output first: `| head -n1` could end runsc with SIGPIPE, which pipefail reports.
VERSION=$("$RUNSC" --version 2>&1) || die "$RUNSC --version failed: $VERSION"
VERSION=${VERSION%%$'\n'*}
log "using $RUNSC ($VERSION)"

# ---- 2. daemon.json ------------------------------------------------------------------------
[ -d "$(dirname "$DAEMON_JSON")" ] || mkdir -p "$(dirname "$DAEMON_JSON")"
CHANGED=$(RUNSC="$RUNSC" RUNSC_NAME="$RUNSC_NAME" RUNSC_NET_NAME="$RUNSC_NET_NAME" \
    RUNSC_EXTRA_ARGS="$RUNSC_EXTRA_ARGS" DAEMON_JSON="$DAEMON_JSON" python3 - <<'PY'
import json, os, shutil, sys, tempfile, time

path = os.environ["DAEMON_JSON"]
extra = os.environ["RUNSC_EXTRA_ARGS"].split()
want = {
    os.environ["RUNSC_NAME"]: {"path": os.environ["RUNSC"], "runtimeArgs": ["--network=none", *extra]},
    os.environ["RUNSC_NET_NAME"]: {"path": os.environ["RUNSC"], "runtimeArgs": ["--network=host", *extra]},
}
try:
    with open(path) as f:
        text = f.read()
except FileNotFoundError:
    text = ""
try:
    conf = json.loads(text) if text.strip() else {}
except ValueError as e:
    sys.exit(f"{path} is not valid JSON ({e}); fix it first")
if not isinstance(conf, dict):
    sys.exit(f"{path} does not hold a JSON object")
runtimes = conf.get("runtimes") or {}
if not isinstance(runtimes, dict):
    sys.exit(f'"runtimes" in {path} is not an object')
if all(runtimes.get(k) == v for k, v in want.items()):
    print("unchanged")
    sys.exit(0)
runtimes.update(want)
conf["runtimes"] = runtimes
if text:
    backup = f"{path}.bak-{time.strftime('%Y%m%d%H%M%S')}"
    shutil.copy2(path, backup)
    print(f"[setup-gvisor] previous {path} saved as {backup}", file=sys.stderr)
d = os.path.dirname(path) or "."
fd, tmp = tempfile.mkstemp(dir=d, prefix=".daemon.json.")
with os.fdopen(fd, "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
if text:
    shutil.copymode(path, tmp)
else:
    os.chmod(tmp, 0o644)
os.replace(tmp, path)
print("changed")
PY
) || die "could not update $DAEMON_JSON"
log "$DAEMON_JSON: runtimes '$RUNSC_NAME' and '$RUNSC_NET_NAME' $CHANGED"

# ---- 3. reload dockerd ---------------------------------------------------------------------
expected() {  # prints the JSON docker info should show for one runtime name
    RUNSC="$RUNSC" NAME="$1" NET="$2" RUNSC_EXTRA_ARGS="$RUNSC_EXTRA_ARGS" python3 -c '
import json, os
print(json.dumps({"path": os.environ["RUNSC"],
                  "runtimeArgs": ["--network=" + os.environ["NET"], *os.environ["RUNSC_EXTRA_ARGS"].split()]},
                 sort_keys=True))'
}
WANT_OFF=$(expected "$RUNSC_NAME" none)
WANT_NET=$(expected "$RUNSC_NET_NAME" host)
registered() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | NAME1="$RUNSC_NAME" NAME2="$RUNSC_NET_NAME" \
        W1="$WANT_OFF" W2="$WANT_NET" python3 -c '
import json, os, sys
try:
    rt = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
ok = all(json.dumps(rt.get(os.environ[n]), sort_keys=True) == os.environ[w]
         for n, w in (("NAME1", "W1"), ("NAME2", "W2")))
sys.exit(0 if ok else 1)'
}
if registered; then
    log "dockerd already lists both runtimes: no reload needed"
else
    PID=""
    [ -r /var/run/docker.pid ] && PID=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -z "$PID" ] || ! kill -0 "$PID" 2>/dev/null; then
        PID=$(pidof dockerd || true)
    fi
    case "$PID" in
        "") die "dockerd is not running on this host (a remote DOCKER_HOST cannot be reconfigured from here)" ;;
        *" "*) die "several dockerd processes ($PID): send SIGHUP to the right one yourself" ;;
    esac
    log "sending SIGHUP to dockerd (pid $PID) to reload its configuration"
    kill -HUP "$PID"
    deadline=$((SECONDS + WAIT_SECS))
    until registered; do
        if [ $SECONDS -ge $deadline ]; then
            die "dockerd did not pick up the runtimes within ${WAIT_SECS}s; docker info shows: \
$(docker info --format '{{json .Runtimes}}' 2>&1). Check dockerd's log for a config reload error."
        fi
        sleep 1
    done
    log "dockerd reloaded"
fi
log "docker info runtimes: $(docker info --format '{{json .Runtimes}}')"

# ---- 4. smoke test -------------------------------------------------------------------------
if [ "$SKIP_SMOKE" = 1 ]; then
    log "smoke test skipped (SKIP_SMOKE=1)"
    exit 0
fi
IMAGE=${SMOKE_IMAGE:-}
if [ -z "$IMAGE" ]; then
    for c in mcp-code-executor/venv:latest mcp-code-executor/base:bookworm debian:bookworm-slim busybox:latest; do
        if docker image inspect "$c" >/dev/null 2>&1; then IMAGE=$c; break; fi
    done
fi
if [ -z "$IMAGE" ]; then
    log "smoke test skipped: no local image to run (set SMOKE_IMAGE=...; nothing is pulled)"
    exit 0
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "SMOKE_IMAGE $IMAGE is not a local image"

NAMES=()
cleanup() { for n in "${NAMES[@]}"; do docker rm -f "$n" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
SMOKE_OUT=""
smoke() {  # what runtime network command... ; output in SMOKE_OUT
    local what=$1 rt=$2 net=$3; shift 3
    local name="mce-setup-gvisor-$$-${#NAMES[@]}"
    NAMES+=("$name")
    if ! SMOKE_OUT=$(timeout 120 docker run --rm --name "$name" --label mcp-code-executor.setup-gvisor=1 \
            --runtime "$rt" --network "$net" --read-only --cap-drop ALL \
            --security-opt no-new-privileges "$IMAGE" "$@" 2>&1); then
        die "$what failed under runtime '$rt' (--network $net, image $IMAGE): $SMOKE_OUT"
    fi
}
log "smoke test with image $IMAGE"
smoke "offline run" "$RUNSC_NAME" none uname -r
case "$SMOKE_OUT" in
    4.4.0*) log "ok: '$RUNSC_NAME' --network none runs (guest kernel $SMOKE_OUT = gVisor)" ;;
    *) die "'$RUNSC_NAME' container reports kernel '$SMOKE_OUT', not gVisor's 4.4.0" ;;
esac
smoke "network run" "$RUNSC_NET_NAME" bridge cat /proc/net/dev
case "$SMOKE_OUT" in
    *eth0*) log "ok: '$RUNSC_NET_NAME' --network bridge runs with eth0" ;;
    *) die "'$RUNSC_NET_NAME' container on the bridge network has no eth0: $SMOKE_OUT" ;;
esac
log "done: use --runtime $RUNSC_NAME for offline containers, --runtime $RUNSC_NET_NAME for ones with a network"
