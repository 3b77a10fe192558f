#!/usr/bin/env bash
# First run: builds the image of the default environment (venv) and the server, then runs a
# sample program through the server over MCP stdio and prints the result.
#
# The first run on a new machine takes several minutes (10-15 on 2 cores): where no image
# registry is reachable it debootstraps a minimal Debian as the base image, installs numpy,
# pandas and matplotlib into the venv image, and compiles the server. Later runs take seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[demo] %s\n' "$*" >&2; }
started=$SECONDS
if ! docker image inspect mcp-code-executor/venv >/dev/null 2>&1; then
  say "step 1/3: building the venv image; the first time this takes a few minutes"
  say "  (where no registry is reachable: debootstrap a Debian base, then pip install numpy, pandas, matplotlib)"
else
  say "step 1/3: checking the venv image (rebuilt only if its inputs changed)"
fi
scripts/build-images.sh venv
if [ ! -x "${CARGO_TARGET_DIR:-target}/release/mcp-code-executor" ]; then
  say "step 2/3: compiling the server (cargo build --release); the first time 5-10 minutes on 2 cores"
else
  say "step 2/3: compiling the server (cargo build --release; quick when nothing changed)"
fi
cargo build --release --locked
say "step 3/3: starting the server over MCP stdio and running a sample program"
# The client example builds in the debug profile (its test-only dependencies compile much
# faster so, and scripts/test.sh reuses them); the server it starts is the release binary.
cargo run --locked --quiet --example demo
say "done in $((SECONDS - started)) s"
