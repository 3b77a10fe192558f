#!/usr/bin/env bash
# Benchmark (not a test): builds the server in release mode and the venv image, then drives the
# server over MCP stdio and over streamable HTTP (loopback, bearer tokens) and prints a table of
# medians, p90 and ratios measured in one run (HTTP/stdio warm ratio, an 8-client HTTP burst).
# BENCH_ROUNDS sets the number of interleaved rounds (default 15).
#
#   scripts/bench.sh [--runtime NAME] [--storage-mode bind|copy]
#
# With --runtime (e.g. runsc: run scripts/setup-gvisor.sh first) or --storage-mode, a second
# pair of servers with those settings is measured in the same rounds, and a second table puts
# its medians next to the default (runc, bind) ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-images.sh venv >&2
cargo build --release --locked --quiet
cargo run --release --locked --quiet --example bench -- "$@"
