#!/usr/bin/env bash
# Create .venv and install opticam with its test dependencies (torch comes from the pinned range in
# pyproject.toml; on this project's machines pip finds torch 2.14.1 / torchvision 0.29.1 on local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
