#!/usr/bin/env bash
# Builds and runs the demo (README: "Run the demo"). Arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default --target model_demo
exec build/default/examples/model_demo "$@"
