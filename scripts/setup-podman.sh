#!/usr/bin/env bash
# Makes Podman's Docker-compatible API available for mcp-code-executor (DESIGN §6), as root:
#
#   scripts/setup-podman.sh [IMAGE...]   (default: the env images Docker has: venv, uv, conda-standin)
#
#   1. installs podman (and catatonit, the init `--init`/HostConfig.Init needs) if missing;
#   2. writes /etc/containers/containers.conf.d/50-mcp-code-executor.conf with what this machine
#      needs (see below), a conmon wrapper so that OOM kills are reported, and the seccomp
#      profile the server gives its containers on Podman ($SECCOMP, see below);
#   3. starts `podman system service` on $PODMAN_SOCKET unless something already answers there,
#      and waits until it answers /_ping;
#   4. copies each IMAGE from Docker into Podman's store (`docker save | podman load`) unless
#      Podman already has the same image id under that name.
#
# Then point the server (or the docker CLI) at it:  DOCKER_HOST=unix://$PODMAN_SOCKET
#
# Podman names loaded images `localhost/NAME:TAG`; the compat API resolves the short name
# (`mcp-code-executor/venv`) to it, and the image id is the same as Docker's.
#
# Settings (environment variables):
#   PODMAN_SOCKET   socket path                (default /run/podman/podman.sock)
#   PODMAN_LOG      log of the service we start (default /var/log/mcp-podman-service.log)
#
# Machine facts this handles (Debian 12, podman 4.3.1, conmon 2.1.6, runc 1.1.5):
# - No systemd as PID 1: cgroup manager cgroupfs and a file events log (podman guesses the same;
#   written down so that it does not depend on the guess).
# - Without CAP_SYS_RESOURCE (some VMs/sandboxes drop it even for root), runc cannot raise a
#   container's RLIMIT_NOFILE/RLIMIT_NPROC above the service's own hard limits, and podman gives
#   every root container nofile=nproc=1048576 unless told otherwise: start fails with "error
#   setting rlimit type 6/7: operation not permitted". default_ulimits fixes containers created
#   WITHOUT any ulimits; a create that lists some ulimits must list nofile and nproc itself
#   (podman then drops the defaults), values at most the ones written here.
# - Podman's default seccomp profile (/usr/share/containers/seccomp.json) allows unshare, clone
#   with CLONE_NEW*, clone3, setns and mount to every process; Docker's allows them only with
#   CAP_SYS_ADMIN. Untrusted code could create a user namespace (where it holds every
#   capability) and reach kernel code Docker keeps it from. $SECCOMP is Podman's profile with
#   Docker's rules for those calls; the server names it in every container it makes on Podman
#   (a create fails, saying to run this script, when it is missing). Other containers of this
#   Podman keep its default.
# - conmon 2.1.6 writes its "oom" marker into its working directory, podman 4.x looks in the
#   container's bundle directory: State.OOMKilled stays false. The wrapper starts conmon there.
set -euo pipefail

PODMAN_SOCKET=${PODMAN_SOCKET:-/run/podman/podman.sock}
PODMAN_LOG=${PODMAN_LOG:-/var/log/mcp-podman-service.log}
CONF=/etc/containers/containers.conf.d/50-mcp-code-executor.conf
WRAPPER=/usr/local/libexec/mcp-code-executor/conmon
PIDFILE=/run/podman/mcp-code-executor-service.pid
SECCOMP=/etc/containers/mcp-code-executor/seccomp.json   # = policy::PODMAN_SECCOMP_PROFILE
PODMAN_SECCOMP=/usr/share/containers/seccomp.json

log() { printf '[setup-podman] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (podman's rootful store and service are set up here)"

ping_ok() { curl -fsS --max-time 2 --unix-socket "$PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1; }

# --- 1. packages -----------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman)
[ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "podman $(podman --version | awk '{print $3}') and catatonit already installed"
fi
podman_major=$(podman --version | awk '{print $3}' | cut -d. -f1)

# --- 2. configuration ------------------------------------------------------------------------
# A hard limit as a number ("unlimited" -> $2).
hard_limit() { local v; v=$(ulimit -H "$1"); [ "$v" = unlimited ] && v=$2; echo "$v"; }
has_cap_sys_resource() {
  local eff; eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  (( (16#$eff >> 24) & 1 ))
}

conf=$'# Written by mcp-code-executor scripts/setup-podman.sh; rewritten when it runs again.\n'
engine_lines=()
containers_lines=()
if [ ! -d /run/systemd/system ]; then
  engine_lines+=('cgroup_manager = "cgroupfs"' 'events_logger = "file"')
fi
if [ "$podman_major" -lt 5 ]; then
  mkdir -p "$(dirname "$WRAPPER")"
  wrapper=$(cat <<'EOF'
#!/bin/sh
# Written by mcp-code-executor scripts/setup-podman.sh. conmon 2.1.6 creates its "oom" marker
# in its working directory; podman 4.x looks for it in the bundle directory (-b): start there.
prev=
for arg in "$@"; do
    case "$prev" in -b|--bundle) cd "$arg" 2>/dev/null || true; break ;; esac
    case "$arg" in --bundle=*) cd "${arg#--bundle=}" 2>/dev/null || true; break ;; esac
    prev=$arg
done
exec /usr/bin/conmon "$@"
EOF
)
  if [ ! -x "$WRAPPER" ] || [ "$(cat "$WRAPPER")" != "$wrapper" ]; then
    printf '%s\n' "$wrapper" > "$WRAPPER"
    chmod 755 "$WRAPPER"
    log "wrote $WRAPPER (reports OOM kills)"
  fi
  engine_lines+=("conmon_path = [\"$WRAPPER\"]")
fi
if ! has_cap_sys_resource; then
  pid_max=$(cat /proc/sys/kernel/pid_max)
  nproc=$(hard_limit -u "$pid_max")
  [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max     # podman lowers its own nproc to pid_max
  nofile=$(hard_limit -n 1048576)
  [ "$nofile" -gt 1048576 ] && nofile=1048576
  containers_lines+=("default_ulimits = [\"nproc=$nproc:$nproc\", \"nofile=$nofile:$nofile\"]")
  log "no CAP_SYS_RESOURCE here: containers default to nproc=$nproc nofile=$nofile;" \
      "a create that sets ulimits must set nproc<=$nproc and nofile<=$nofile itself"
fi
if [ ${#containers_lines[@]} -gt 0 ]; then
  conf+=$'[containers]\n'$(printf '%s\n' "${containers_lines[@]}")$'\n'
fi
if [ ${#engine_lines[@]} -gt 0 ]; then
  conf+=$'[engine]\n'$(printf '%s\n' "${engine_lines[@]}")$'\n'
fi
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "${conf%$'\n'}" ]; then
  mkdir -p "$(dirname "$CONF")"
  printf '%s' "$conf" > "$CONF"
  conf_changed=1
  log "wrote $CONF"
else
  log "$CONF is up to date"
fi

# The seccomp profile: Podman's own, with Docker's rules for calls that make namespaces.
[ -f "$PODMAN_SECCOMP" ] || die "$PODMAN_SECCOMP (Podman's default seccomp profile) is missing"
command -v python3 >/dev/null || die "python3 is needed to derive $SECCOMP"
mkdir -p "$(dirname "$SECCOMP")"
python3 - "$PODMAN_SECCOMP" "$SECCOMP.new" <<'EOF'
import json, sys
profile = json.load(open(sys.argv[1]))
# Calls that make or enter namespaces, or mount: Docker allows them only with CAP_SYS_ADMIN.
guarded = {"clone", "clone3", "unshare", "setns", "mount", "umount", "umount2", "pivot_root"}
for rule in profile["syscalls"]:
    if rule.get("action") == "SCMP_ACT_ALLOW" and not rule.get("includes") and not rule.get("args"):
        rule["names"] = [n for n in rule["names"] if n not in guarded]
no_admin = {"caps": ["CAP_SYS_ADMIN"]}
profile["syscalls"] += [
    # clone without any CLONE_NEW* flag (mask 0x7E020000), as in Docker's default profile.
    {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "excludes": no_admin,
     "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
    # clone3 cannot be filtered by its flags: ENOSYS makes libc fall back to clone.
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": no_admin},
    {"names": sorted(guarded), "action": "SCMP_ACT_ALLOW", "includes": no_admin},
]
json.dump(profile, open(sys.argv[2], "w"), indent=1)
EOF
if [ -f "$SECCOMP" ] && cmp -s "$SECCOMP" "$SECCOMP.new"; then
  rm -f "$SECCOMP.new"
  log "$SECCOMP is up to date"
else
  mv "$SECCOMP.new" "$SECCOMP"
  log "wrote $SECCOMP (new namespaces only with CAP_SYS_ADMIN, as under Docker)"
fi

# --- 3. the API service ----------------------------------------------------------------------
our_service_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "system service" || return 1
  echo "$pid"
}
if ping_ok && [ "$conf_changed" = 1 ]; then
  if pid=$(our_service_pid); then
    log "configuration changed: restarting the service this script started (pid $pid)"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  else
    log "warning: configuration changed but the service on $PODMAN_SOCKET was not started here;" \
        "restart it yourself to apply $CONF"
  fi
fi
if ping_ok; then
  log "podman service already answers on $PODMAN_SOCKET"
else
  mkdir -p "$(dirname "$PODMAN_SOCKET")" "$(dirname "$PODMAN_LOG")"
  rm -f "$PODMAN_SOCKET"   # a leftover socket of a dead service
  log "starting podman system service on unix://$PODMAN_SOCKET (log: $PODMAN_LOG)"
  # In its own session (it outlives this script and its CI step), from / so that nothing a
  # helper writes relative to its working directory lands in a checkout.
  setsid sh -c 'echo $$ > "$1"; cd / && exec podman system service --time=0 "unix://$2"' \
      sh "$PIDFILE" "$PODMAN_SOCKET" >>"$PODMAN_LOG" 2>&1 </dev/null &
  for _ in $(seq 150); do ping_ok && break; sleep 0.2; done
  ping_ok || die "the service did not answer within 30 s; see $PODMAN_LOG"
  log "podman service answers (pid $(cat "$PIDFILE"))"
fi
driver=$(podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null || echo '?')
log "storage driver: $driver; DOCKER_HOST=unix://$PODMAN_SOCKET"

# --- 4. images -------------------------------------------------------------------------------
if [ $# -eq 0 ]; then
  set --
  for name in mcp-code-executor/venv mcp-code-executor/uv mcp-code-executor/conda-standin; do
    docker image inspect "$name" >/dev/null 2>&1 && set -- "$@" "$name"
  done
  [ $# -gt 0 ] || log "no mcp-code-executor images in Docker yet: nothing to load"
fi
failed=0
[ $# -eq 0 ] || command -v docker >/dev/null || die "docker is not installed: cannot copy $* from it"
for ref in "$@"; do
  docker_id=$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null) || {
    log "error: Docker has no image $ref"; failed=1; continue; }
  docker_id=${docker_id#sha256:}
  podman_id=$(podman image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
  podman_id=${podman_id#sha256:}
  if [ "$podman_id" = "$docker_id" ]; then
    log "$ref: already in podman (${docker_id:0:12})"
    continue
  fi
  log "$ref: loading ${docker_id:0:12} into podman${podman_id:+ (replaces ${podman_id:0:12})}"
  if ! docker save "$ref" | podman load -q >/dev/null; then
    log "error: copying $ref from Docker to podman failed"; failed=1; continue
  fi
  loaded=$(podman image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
  [ "${loaded#sha256:}" = "$docker_id" ] || { log "error: $ref did not load"; failed=1; continue; }
  # The replaced image, if nothing else names or uses it any more.
  if [ -n "$podman_id" ] && [ -z "$(podman image inspect -f '{{join .RepoTags " "}}' "$podman_id" 2>/dev/null)" ]; then
    podman rmi "$podman_id" >/dev/null 2>&1 && log "$ref: removed the old untagged ${podman_id:0:12}" || true
  fi
done
exit "$failed"
