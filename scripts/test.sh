#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite plus the linter. Fails when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks
.venv/bin/python -m ruff format --check src tests benchmarks
.venv/bin/python -m pytest -ra "$@"
