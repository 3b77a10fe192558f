#!/usr/bin/env bash
# First run: builds the image of the default environment (venv) and the server, then runs a
# sample program through the server over MCP stdio and prints the result.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-images.sh venv
cargo build --release --locked
cargo run --release --locked --quiet --example demo
