#!/usr/bin/env bash
# The project's one test command (README, CI): lint, then the whole suite, GUI tests under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
unset QT_QPA_PLATFORM
ruff check sam2_med tests benchmarks sample_data scripts
python -m pytest --xvfb-backend xvfb "$@"
