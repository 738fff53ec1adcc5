#!/usr/bin/env bash
# Open napari with the napari-activations plugin docked on the Face sample and conv1 computed.
# Sets itself up first (scripts/setup.sh). Uses the built-in weights (the original SqueezeNet
# v1.1 ImageNet weights, as in MATLAB), or the file named by $NAPARI_ACTIVATIONS_WEIGHTS where
# that is set. Nothing is downloaded.
# With no display ($DISPLAY and $WAYLAND_DISPLAY unset) it runs on a virtual X display and saves
# a screenshot instead: its path is printed (set NAPARI_ACTIVATIONS_SCREENSHOT to choose it).
# Extra arguments go to scripts/napari_demo.py (e.g. --layer fire6-relu_squeeze1x1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
unset QT_QPA_PLATFORM
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/python scripts/napari_demo.py "$@"
fi
shot="${NAPARI_ACTIVATIONS_SCREENSHOT:-${TMPDIR:-/tmp}/napari-activations-screenshot.png}"
echo "napari.sh: no display here; running napari on a virtual X display (Xvfb) and saving a screenshot."
exec xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/napari_demo.py --screenshot "$shot" "$@"
