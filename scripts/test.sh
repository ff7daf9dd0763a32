#!/usr/bin/env bash
# Builds everything and runs every test (README: "Run the tests").
# Tests labelled gpu report "skipped" on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cmake --workflow --preset default
