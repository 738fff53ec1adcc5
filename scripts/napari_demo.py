"""Open napari with the plugin docked on the Face sample and conv1 computed (scripts/napari.sh).

The weights are the built-in original SqueezeNet v1.1 ones (MATLAB's), or the file named by
``$NAPARI_ACTIVATIONS_WEIGHTS`` where that is set; nothing is downloaded. Where that file
cannot be loaded, napari still opens with the widget, says why, and computes nothing.

    python scripts/napari_demo.py                      # an interactive napari
    python scripts/napari_demo.py --screenshot out.png # save the window and quit (no display)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def find_weights() -> tuple[str | None, str]:
    """(weights for load_squeezenet, where they come from), or (None, why there are none)."""
    from napari_activations.network import WEIGHTS_ENV, WeightsError, resolve_weights

    try:
        source = resolve_weights("DEFAULT")
    except WeightsError as exc:
        return None, str(exc)
    if isinstance(source, Path):
        return "DEFAULT", f"${WEIGHTS_ENV} = {os.environ[WEIGHTS_ENV].strip()}"
    return "caffe", "the built-in weights"


def how_to_fix() -> str:
    from napari_activations.network import WEIGHTS_ENV

    return (
        f"Unset {WEIGHTS_ENV} to use the built-in weights, point it at a SqueezeNet 1.1 "
        "state_dict file, or press 'Weights file…' in the widget."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--screenshot", type=Path, help="save a screenshot of the window here and quit"
    )
    parser.add_argument("--layer", default="conv1", help="network layer to compute")
    args = parser.parse_args()

    import napari_activations as na

    weights, origin = find_weights()
    net = None
    if weights is not None:
        try:
            # Loaded before the window opens: a broken file is reported here, at once.
            net = na.load_squeezenet(weights)
        except na.WeightsError as exc:
            weights, origin = None, f"The weights could not be loaded: {exc}"
    if net is None:
        print(
            f"napari-activations: {origin}\n{how_to_fix()}\n"
            "Opening napari without computing anything.",
            file=sys.stderr,
        )
    else:
        print(f"napari-activations: using {origin}: {net.description}")

    import napari
    from napari.utils.notifications import show_warning
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-activations")
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-activations", "face")
    _, widget = viewer.window.add_plugin_dock_widget("napari-activations", "SqueezeNet activations")
    if net is not None:
        widget.set_network(net)
        widget.set_network_layer(args.layer)
        widget.run()
    else:
        message = (
            f"{origin} Nothing was computed. Choose a weights file under 'Weights' "
            "in the SqueezeNet activations widget (see the terminal for more)."
        )
        widget.status_label.setText(message)
        show_warning(message)

    if args.screenshot is None:
        napari.run()
        return 0
    while widget.busy:
        QApplication.processEvents()
        time.sleep(0.01)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)
    viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
    print(f"napari-activations: screenshot saved to {args.screenshot.resolve()}")
    viewer.close()
    return 0 if net is not None else 1


if __name__ == "__main__":
    sys.exit(main())
