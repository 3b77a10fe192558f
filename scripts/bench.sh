#!/usr/bin/env bash
# Benchmark (not a test): builds the server in release mode and the venv image, then drives the
# server over MCP stdio and over streamable HTTP (loopback, bearer tokens) and prints a table of
# medians, p90 and ratios measured in one run (HTTP/stdio warm ratio, an 8-client HTTP burst).
# BENCH_ROUNDS sets the number of interleaved rounds (default 15).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-images.sh venv >&2
cargo build --release --locked --quiet
cargo run --release --locked --quiet --example bench
