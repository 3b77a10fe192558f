#!/usr/bin/env bash
# Runs every check the project has: builds the images the tests use (only when missing or
# stale), then formatting, lints, unit tests and the integration tests (real binary, MCP over
# stdio, real Docker).
#
# Then the gVisor suite, when run as root (as CI does) or with GVISOR=1: scripts/setup-gvisor.sh
# installs Debian's runsc if needed and registers the runtimes runsc and runsc-net with the
# local dockerd (as root only; otherwise they must be registered already), and the gVisor,
# hostile, isolation, session and result suites (tests/gvisor.rs, hostile.rs, run.rs,
# sessions.rs, results.rs) run again with RUNTIME=runsc and MCE_REQUIRE_GVISOR=1 (a missing
# runsc fails them instead of skipping); about 4 minutes. GVISOR=0 skips this part, also as root.
#
# Then, when run as root or with PODMAN=1 (PODMAN=0 skips it), the Podman suite: sets up Podman's
# Docker-compatible service with scripts/setup-podman.sh (root only; without root the service
# must already answer on PODMAN_SOCKET) and runs, against it, tests/podman.rs and the integration
# suites that hold on Podman (MCE_REQUIRE_PODMAN=1: no Podman is a failure, not a skip). Left
# out on Podman: tests/sessions.rs's two checks that a session outlives its server (Podman
# closes a container's stdin when its attach ends, StdinOnce=false or not; see README
# "Choosing an engine"), and suites that test other things than the engine (HTTP, installs,
# tasks, environments: they run against Docker above).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-images.sh venv uv conda-standin server
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked

default_gvisor=0
[ "$(id -u)" -eq 0 ] && default_gvisor=1
if [ "${GVISOR:-$default_gvisor}" = 1 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        scripts/setup-gvisor.sh
    else
        echo "[test] not root: expecting runsc and runsc-net registered already (scripts/setup-gvisor.sh)"
    fi
    MCE_REQUIRE_GVISOR=1 RUNTIME=runsc cargo test --locked \
        --test gvisor --test hostile --test run --test sessions --test results
fi

PODMAN=${PODMAN:-$([ "$(id -u)" = 0 ] && echo 1 || echo 0)}
PODMAN_SOCKET=${PODMAN_SOCKET:-/run/podman/podman.sock}
if [ "$PODMAN" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    PODMAN_SOCKET=$PODMAN_SOCKET scripts/setup-podman.sh
  fi
  MCE_REQUIRE_PODMAN=1 DOCKER_HOST="unix://$PODMAN_SOCKET" cargo test --locked \
    --test podman --test run --test hostile --test results --test files --test lifecycle \
    --test sessions -- \
    --skip a_session_survives_a_server_restart --skip close_session_exit_and_unknown_ids
fi
