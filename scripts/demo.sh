#!/usr/bin/env bash
# Set up (if needed) and run the demo: Opti-CAM on a sample image with the offline default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/opticam demo "$@"
