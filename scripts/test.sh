#!/usr/bin/env bash
# The test command: sets itself up (scripts/setup.sh), then runs the whole suite, GUI tests
# included, in a real napari viewer on a virtual X display. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests never download: an empty torch hub cache of their own.
export TORCH_HOME="$(mktemp -d)"
unset QT_QPA_PLATFORM
exec xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest -ra "$@"
