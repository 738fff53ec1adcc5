"""Regenerate the screenshots of docs/tutorial.md (and the README's) from a real napari viewer.

Every picture is the reference workflow (docs/tutorial.md) done with the plugin: the
SqueezeNet activations widget and ``show_activations``, the built-in original Caffe weights
(the ones MATLAB's channel numbers refer to), the Face sample pair. Needs a display; with none,
run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/make_screenshots.py
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import napari
import numpy as np
import skimage.io
from qtpy.QtWidgets import QApplication

import napari_activations as na

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
WEIGHTS = "caffe"

CONV1_RED = 21  # MATLAB's channel 22: bright on red parts of the image
EYES = (13, 46)  # MATLAB's channels 14 and 47 of fire6-relu_squeeze1x1


def settle(widget=None) -> None:
    """Let the worker finish and napari draw."""
    while widget is not None and widget.busy:
        QApplication.processEvents()
        time.sleep(0.01)
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> int:
    # Loaded before the window opens (torch before OpenGL; see avoid_triton_llvm_crash).
    net = na.load_squeezenet(WEIGHTS, device="cpu")
    OUT.mkdir(parents=True, exist_ok=True)

    viewer = napari.Viewer(title="napari-activations")
    viewer.window.resize(1400, 900)
    (face,) = viewer.open_sample("napari-activations", "face")
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-activations", "SqueezeNet activations"
    )
    widget.set_network(net)
    caption = viewer.canvas.overlays.text
    caption.position = "top_left"
    caption.font_size = 11
    caption.color = "white"

    def shot(name: str, text: str = "", canvas_only: bool = True) -> None:
        caption.text, caption.visible = text, bool(text)
        settle(widget)
        viewer.reset_view()
        settle()
        image = viewer.screenshot(canvas_only=canvas_only, flash=False)
        path = OUT / f"tutorial-{name}.png"
        skimage.io.imsave(path, image[..., :3], check_contrast=False)
        print(f"wrote {path}")

    def channel(layer, index: int) -> None:
        viewer.dims.set_current_step(viewer.dims.ndim - layer.ndim, index)

    # 1. The widget on the Face sample, before Run.
    widget.set_network_layer("conv1")
    shot("1-widget", canvas_only=False)

    # 2. conv1 computed: 64 channels, the slider at the strongest one (edges).
    widget.run()
    settle(widget)
    conv1 = viewer.layers["Face: conv1"]
    strongest = viewer.dims.current_step[0]
    shot("2-conv1", canvas_only=False)
    shutil.copyfile(OUT / "tutorial-2-conv1.png", OUT / "readme.png")
    print(f"wrote {OUT / 'readme.png'}")
    dock.hide()  # the canvas alone from here on, as wide as the window allows
    shot("3-conv1-strongest", f"conv1, strongest channel {strongest} (MATLAB {strongest + 1})")

    # 3. Channel 22 (MATLAB): bright on the red parts.
    channel(conv1, CONV1_RED)
    shot("4-conv1-channel22", f"conv1, channel {CONV1_RED} (MATLAB {CONV1_RED + 1})")
    conv1.visible = False

    # 4. fire6-squeeze1x1 before its ReLU, then after it.
    pre = na.show_activations(viewer, face, "fire6-squeeze1x1", network=net)
    # The channel reaching furthest below zero: what the ReLU is about to remove.
    ch = int(np.argmin(pre.data.native.reshape(pre.data.shape[0], -1).min(axis=1)))
    channel(pre, ch)
    shot("5-fire6-squeeze1x1", f"fire6-squeeze1x1 (before ReLU), channel {ch}")
    pre.visible = False
    post = na.show_activations(viewer, face, "fire6-relu_squeeze1x1", network=net)
    channel(post, ch)
    shot("6-fire6-relu_squeeze1x1", f"fire6-relu_squeeze1x1 (after ReLU), channel {ch}")

    # 5. The eye channels, on the open-eye and the one-eye-covered face side by side.
    for name in ("Face: conv1", "Face: fire6-squeeze1x1"):
        viewer.layers.remove(name)
    (covered,) = viewer.open_sample("napari-activations", "face_one_eye_covered")
    post_covered = na.show_activations(
        viewer, covered, "fire6-relu_squeeze1x1", network=net, contrast="global"
    )
    na.show_activations(viewer, face, "fire6-relu_squeeze1x1", network=net, contrast="global")
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.stride = 2  # each image with its activation layer
    viewer.canvas.grid.shape = (1, 2)
    for index in EYES:
        channel(post, index)
        # One contrast range for both faces, so that brightness compares between them.
        high = max(float(layer.data.native[index].max()) for layer in (post, post_covered))
        post.contrast_limits = post_covered.contrast_limits = (0.0, high)
        shot(
            f"7-eyes-channel{index + 1}",
            f"fire6-relu_squeeze1x1, channel {index} (MATLAB {index + 1})",
        )
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
