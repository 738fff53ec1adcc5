#!/usr/bin/env bash
# The test command: sets itself up (scripts/setup.sh), then runs the whole suite, GUI tests
# included, in a real napari viewer on a virtual X display. Extra arguments go to pytest.
# NAPARI_ACTIVATIONS_BACKEND=torch (or onnxruntime) runs the whole suite on that backend.
# Tests run in one process per CPU core (pytest-xdist), each with its own napari viewers on the
# same virtual display; `-n 0` runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests never download: an empty torch hub cache of their own.
export TORCH_HOME="$(mktemp -d)"
# Exported networks (ONNX Runtime backend): a cache of the test runs' own, kept between runs.
export NAPARI_ACTIVATIONS_CACHE="${NAPARI_ACTIVATIONS_CACHE:-$(pwd)/.test-cache}"
unset QT_QPA_PLATFORM
exec xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python -m pytest -n auto -ra "$@"
