#!/usr/bin/env bash
# Builds everything and runs every test (README: "Run the tests").
# Tests labelled gpu report "skipped" on a machine without a GPU.
#
#   scripts/test.sh              Release build, every test (the default preset)
#   scripts/test.sh --sanitize   the tests that run meshplan's code, built with
#                                AddressSanitizer and UBSan (the debug preset)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
case "${1:-}" in
  "") cmake --workflow --preset default ;;
  --sanitize) cmake --workflow --preset debug ;;
  *) echo "usage: scripts/test.sh [--sanitize]" >&2; exit 2 ;;
esac
