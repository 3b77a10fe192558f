#!/usr/bin/env bash
# Builds the images mcp-code-executor runs code in.
#
#   scripts/build-images.sh [venv] [uv] [conda] [conda-standin] [server]   (default: all)
#
# Where a registry is reachable the images are built on public bases (python:3.12-slim and a
# conda-forge base). Where none is (the offline build machines, DESIGN §6), a minimal Debian is
# debootstrapped into a folder and imported as the base instead; the real conda image cannot be
# built there, so a stand-in with the same layout (mcp-code-executor/conda-standin) is built for
# the tests.
#
# An image is rebuilt only when its inputs (Dockerfile, packages, base) changed; FORCE=1 rebuilds.
#
# Podman: when DOCKER_HOST points at Podman's Docker-compatible socket, the images are built with
# the local Docker daemon (DOCKER_HOST unset) and then copied into Podman's store by
# scripts/setup-podman.sh (as root; it also sets up the Podman service). Without root the script
# stops and prints the two commands to run. The server image stays in Docker (it is not run on
# Podman).
#
# Settings (environment variables):
#   BASE_IMAGE      base for venv/uv/conda-standin; skips the pull/debootstrap choice
#   PUBLIC_BASE     public base tried first            (default python:3.12-slim)
#   CONDA_BASE      base of the real conda image       (default condaforge/miniforge3:latest)
#   RUST_IMAGE      builder of the server image        (default rust:1-bookworm; offline: the
#                   binary is built here with cargo and copied onto the local base)
#   PACKAGES        packages baked into every image   (default "numpy pandas matplotlib")
#   CA_BUNDLE       CA bundle trusted while downloading (default /etc/ssl/certs/ca-certificates.crt
#                   when present; set it empty to use the tools' own bundles)
#   PIP_INDEX_URL   package index used while building  (default: PyPI)
#   DEBIAN_MIRROR   mirror for debootstrap             (default http://deb.debian.org/debian)
#   DEBIAN_SUITE    Debian release for debootstrap     (default bookworm)
#   PULL_TIMEOUT    seconds to wait for a pull          (default 60)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PUBLIC_BASE=${PUBLIC_BASE:-python:3.12-slim}
CONDA_BASE=${CONDA_BASE:-condaforge/miniforge3:latest}
PACKAGES=${PACKAGES:-numpy pandas matplotlib}
if [ -z "${CA_BUNDLE+set}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
CA_BUNDLE=${CA_BUNDLE:-}
PIP_INDEX_URL=${PIP_INDEX_URL:-}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}
FORCE=${FORCE:-0}
LOCAL_BASE=mcp-code-executor/base:$DEBIAN_SUITE

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed; install Docker Engine first"

# DOCKER_HOST at Podman: build with Docker, then copy into Podman's store (see the header).
if [ -n "${DOCKER_HOST:-}" ] &&
  docker version --format '{{range .Server.Components}}{{.Name}} {{end}}' 2>/dev/null | grep -q 'Podman'; then
  podman_socket=${DOCKER_HOST#unix://}
  images=()
  for t in "${@:-venv uv conda-standin}"; do
    for name in $t; do
      [ "$name" = server ] || images+=("mcp-code-executor/$name")
    done
  done
  if [ "$(id -u)" != 0 ]; then
    die "DOCKER_HOST points at Podman: build with Docker, then copy the images into Podman as root:
    env -u DOCKER_HOST $0 $*
    sudo PODMAN_SOCKET=$podman_socket $ROOT/scripts/setup-podman.sh ${images[*]}"
  fi
  log "DOCKER_HOST is Podman ($DOCKER_HOST): building with Docker, then copying into Podman"
  env -u DOCKER_HOST "$0" "$@"
  # Only images Docker has (conda is skipped where no registry is reachable).
  present=()
  for image in "${images[@]}"; do
    env -u DOCKER_HOST docker image inspect "$image" >/dev/null 2>&1 && present+=("$image")
  done
  [ ${#present[@]} -eq 0 ] && exit 0
  exec env -u DOCKER_HOST PODMAN_SOCKET="$podman_socket" "$ROOT/scripts/setup-podman.sh" "${present[@]}"
fi
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, may this user use it?)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
  have_image "$1" && return 0
  log "trying to pull $1 (up to ${PULL_TIMEOUT}s)"
  timeout "$PULL_TIMEOUT" docker pull -q "$1" >/dev/null 2>&1
}

# debootstrap makes the base image where no registry is reachable. As root with apt it is
# installed here; otherwise the script stops with the command to run.
ensure_debootstrap() {
  command -v debootstrap >/dev/null && return 0
  if command -v apt-get >/dev/null; then
    log "installing debootstrap with apt-get (needed to make a base image without a registry)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } \
      >/dev/null 2>&1 || die "could not install debootstrap: run apt-get install debootstrap"
    command -v debootstrap >/dev/null || die "debootstrap is still missing: run apt-get install debootstrap"
    return 0
  fi
  die "no registry is reachable and debootstrap is missing: install debootstrap with your package manager (or set BASE_IMAGE)"
}

# A minimal Debian with python3 and venv support, made without any registry.
build_local_base() {
  if have_image "$LOCAL_BASE" && [ "$FORCE" != 1 ]; then return 0; fi
  [ "$(id -u)" = 0 ] ||
    die "no registry is reachable, so a base image must be debootstrapped, which needs root: run it with sudo (or set BASE_IMAGE to an image you have)"
  ensure_debootstrap
  local dir
  dir=$(mktemp -d /var/tmp/mce-rootfs.XXXXXX)
  log "debootstrapping Debian $DEBIAN_SUITE into $dir (a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" >"$dir.log" 2>&1 ||
    { tail -20 "$dir.log" >&2; die "debootstrap failed (log above)"; }
  rm -f "$dir.log"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc \
    "$dir"/usr/share/man "$dir"/usr/share/locale
  log "importing it as $LOCAL_BASE"
  tar -C "$dir" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$dir"
}

resolve_base() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
  if try_pull "$PUBLIC_BASE"; then echo "$PUBLIC_BASE"; return; fi
  log "no registry reachable: using a local Debian base ($LOCAL_BASE) instead"
  build_local_base
  echo "$LOCAL_BASE"
}

# build NAME DIR TAG BASE: builds images/DIR as TAG unless an image with the same inputs exists.
build() {
  local dir=$1 tag=$2 base=$3 ctx hash current
  ctx=$(mktemp -d)
  cp -r "$ROOT/images/$dir/." "$ctx/"
  if [ -n "$CA_BUNDLE" ]; then
    [ -f "$CA_BUNDLE" ] || die "CA_BUNDLE=$CA_BUNDLE does not exist"
    cp "$CA_BUNDLE" "$ctx/build-ca.crt"
  else
    : >"$ctx/build-ca.crt"
  fi
  hash=$( { (cd "$ctx" && find . -type f | LC_ALL=C sort | xargs cat);
            echo "$PACKAGES|$PIP_INDEX_URL|$(docker image inspect -f '{{.Id}}' "$base")"; } |
    sha256sum | cut -c1-16)
  current=$(docker image inspect -f '{{index .Config.Labels "mcp-code-executor.build-hash"}}' "$tag" 2>/dev/null || true)
  if [ "$current" = "$hash" ] && [ "$FORCE" != 1 ]; then
    log "$tag is up to date"
    rm -rf "$ctx"
    return 0
  fi
  log "building $tag from $base"
  if ! docker build -q -t "$tag" \
    --build-arg "BASE_IMAGE=$base" \
    --build-arg "PACKAGES=$PACKAGES" \
    --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL" \
    --label "mcp-code-executor.build-hash=$hash" \
    "$ctx" >/dev/null; then
    rm -rf "$ctx"
    die "building $tag failed (run again to see Docker's output above)"
  fi
  rm -rf "$ctx"
  log "built $tag"
}

# The server image: from source where a Rust image can be pulled, else from a binary built here.
build_server() {
  local rust=${RUST_IMAGE:-rust:1-bookworm}
  if try_pull "$rust"; then
    log "building mcp-code-executor/server from source with $rust"
    docker build -q -t mcp-code-executor/server -f "$ROOT/images/server/Dockerfile" \
      --build-arg "RUST_IMAGE=$rust" "$ROOT" >/dev/null || die "building mcp-code-executor/server failed"
    return 0
  fi
  local base ctx hash current
  base=${BASE_IMAGE:-}
  [ -n "$base" ] || { build_local_base; base=$LOCAL_BASE; }
  log "no Rust image reachable: building the server binary here (cargo build --release)"
  (cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build failed"
  ctx=$(mktemp -d)
  cp "$ROOT/images/server/Dockerfile.prebuilt" "$ctx/Dockerfile"
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/mcp-code-executor" "$ctx/"
  strip "$ctx/mcp-code-executor" 2>/dev/null || true
  hash=$( { (cd "$ctx" && find . -type f | LC_ALL=C sort | xargs cat); docker image inspect -f '{{.Id}}' "$base"; } |
    sha256sum | cut -c1-16)
  current=$(docker image inspect -f '{{index .Config.Labels "mcp-code-executor.build-hash"}}' mcp-code-executor/server 2>/dev/null || true)
  if [ "$current" = "$hash" ] && [ "$FORCE" != 1 ]; then
    log "mcp-code-executor/server is up to date"
  else
    docker build -q -t mcp-code-executor/server --build-arg "BASE_IMAGE=$base" \
      --label "mcp-code-executor.build-hash=$hash" "$ctx" >/dev/null || { rm -rf "$ctx"; die "building mcp-code-executor/server failed"; }
    log "built mcp-code-executor/server from the local binary on $base"
  fi
  rm -rf "$ctx"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(venv uv conda conda-standin server)

base=""
for t in "${targets[@]}"; do
  case $t in
    venv | uv | conda-standin)
      [ -n "$base" ] || base=$(resolve_base)
      build "$t" "mcp-code-executor/$t" "$base"
      ;;
    conda)
      if try_pull "$CONDA_BASE"; then
        build conda mcp-code-executor/conda "$CONDA_BASE"
      else
        log "skipping mcp-code-executor/conda: cannot pull $CONDA_BASE here (no registry)."
        log "  the tests use the stand-in mcp-code-executor/conda-standin instead"
      fi
      ;;
    server) build_server ;;
    *) die "unknown image '$t' (known: venv uv conda conda-standin server)" ;;
  esac
done
