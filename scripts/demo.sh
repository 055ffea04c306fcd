#!/usr/bin/env bash
# Set up (if needed: scripts/setup.sh skips pip when .venv is set up for this pyproject.toml) and run the
# demo: Opti-CAM on a sample image with the offline default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/opticam demo "$@"
