"""Regenerate docs/images/networks-three.png from a real napari viewer.

The Face sample with a stride-8 layer of three networks, each computed by the activations
widget and shown over the image: SqueezeNet v1.1 ``fire4-concat`` (built-in trained weights),
ResNet-18 ``layer2.1.relu_1`` and ConvNeXt-Tiny ``features.3.2.add`` (random weights: trained
ones are a download). Needs a display; run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/make_network_screenshots.py
"""

from pathlib import Path

import napari
import numpy as np
import skimage.io
import skimage.transform
from make_screenshots import settle  # the same waiting for the worker and the drawing

import napari_activations as na

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"

SHOWN = [
    ("squeezenet1_1", "caffe", "fire4-concat", "built-in trained weights"),
    ("resnet18", None, "layer2.1.relu_1", "RANDOM weights"),
    ("convnext_tiny", None, "features.3.2.add", "RANDOM weights"),
]


def main() -> int:
    nets = [na.load_network(name, weights, device="cpu") for name, weights, *_ in SHOWN]
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-activations")
    viewer.window.resize(760, 820)
    (face,) = viewer.open_sample("napari-activations", "face")
    dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-activations", "SqueezeNet activations"
    )
    caption = viewer.canvas.overlays.text
    caption.position = "top_center"
    caption.font_size = 11
    caption.color = "white"
    panels = []
    for net, (_, _, layer, weights) in zip(nets, SHOWN, strict=True):
        widget.set_network(net)
        widget.set_network_layer(layer)
        widget.run()
        settle(widget)
        shown = viewer.layers[-1]
        for other in viewer.layers:
            other.visible = other is face or other is shown
        shown.colormap = "inferno"
        shown.opacity = 0.75
        info = net.find_layer(layer)
        caption.text = (
            f"{net.title}: {layer}\nstride {info.stride}, receptive field "
            f"{info.receptive_field}\n{weights}"
        )
        caption.visible = True
        dock.hide()  # the whole window for the canvas
        settle()
        viewer.reset_view()
        settle()
        image = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
        # the image's columns (the canvas around it is black), a margin either side
        columns = np.flatnonzero(image[image.shape[0] // 2].max(axis=-1) > 0)
        lo, hi = max(0, columns[0] - 12), min(image.shape[1], columns[-1] + 13)
        panels.append(image[:, lo:hi])
        dock.show()
    height = min(p.shape[0] for p in panels)
    scaled = [
        (skimage.transform.resize(p, (height, round(p.shape[1] * height / p.shape[0]))) * 255)
        .round()
        .astype(np.uint8)
        for p in panels
    ]
    gap = np.full((height, 8, 3), 255, dtype=np.uint8)
    row = np.concatenate([scaled[0], gap, scaled[1], gap, scaled[2]], axis=1)
    path = OUT / "networks-three.png"
    skimage.io.imsave(path, row, check_contrast=False)
    print(f"wrote {path.relative_to(ROOT)}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
