#!/usr/bin/env bash
# Runs every check the project has: builds the images the tests use (only when missing or
# stale), then formatting, lints, unit tests and the integration tests (real binary, MCP over
# stdio, real Docker).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-images.sh venv uv conda-standin server
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
