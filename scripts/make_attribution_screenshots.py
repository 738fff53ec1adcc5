"""Regenerate the screenshots of docs/attribution.md from a real napari viewer.

Uses the built-in original Caffe weights. Needs a display; run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/make_attribution_screenshots.py

``--only region`` makes only the region screenshot.
"""

import copy
import sys
from pathlib import Path

import napari
import numpy as np
import skimage.data
import skimage.io
from qtpy.QtWidgets import QApplication

import napari_activations as na
from napari_activations._attribution_widget import AttributionWidget
from napari_activations._sample_data import load_sample

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
WEIGHTS = "caffe"


def pytorch_grad_cam_map(net, image, target: int, layer: str) -> np.ndarray:
    """pytorch-grad-cam's GradCAM as its users run it: normalised, stretched with cv2.resize."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from napari_activations.compute import network_input

    model = copy.deepcopy(net.model)
    for p in model.parameters():
        p.requires_grad_(True)
    x, *_ = network_input(net, image, layer)
    module = model.get_submodule(na.find_layer(layer).module)
    with GradCAM(model=model, target_layers=[module]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]


def main(only: str | None = None) -> None:
    net = na.load_squeezenet(WEIGHTS, device="cpu")
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    widget = AttributionWidget(viewer, network=net)
    viewer.window.add_dock_widget(widget, name="Class attribution")

    def settle() -> None:
        while widget.busy:
            QApplication.processEvents()
        for _ in range(5):
            QApplication.processEvents()

    def shot(name: str) -> None:
        settle()
        viewer.reset_view()
        settle()
        image = viewer.screenshot(canvas_only=False, flash=False)
        skimage.io.imsave(OUT / f"attribution-{name}.png", image[..., :3], check_contrast=False)
        print(f"wrote {OUT / f'attribution-{name}.png'}")

    def run(method: str, target: str, window: int = 0, stride: int = 0) -> None:
        widget.set_method(method)
        widget.set_target(target)
        widget.window_spin.setValue(window)  # 0: auto
        widget.stride_spin.setValue(stride)
        widget.run()
        settle()

    OUT.mkdir(parents=True, exist_ok=True)

    # 6. A region drawn over chelsea: classes ranked inside it, and the occlusion map of the
    # strongest one's score inside it
    cat = viewer.add_image(skimage.data.chelsea(), name="chelsea", rgb=True)
    viewer.add_shapes(
        [np.array([[40, 60], [40, 380], [300, 380], [300, 60]], dtype=float)],
        shape_type="rectangle",
        name="head",
        face_color="transparent",
        edge_color="cyan",
        edge_width=3,
    )
    widget.refresh_images()
    widget.image_combo.setCurrentText("chelsea")
    widget.region_combo.setCurrentText("head")
    widget.rank_in_region()
    settle()
    print("classes ranked in the head:", widget.ranked_classes())
    widget.rank_table.cellClicked.emit(0, 0)
    widget.set_region("head")
    run("occlusion", widget.target(), window=40, stride=20)
    shot("chelsea-region")
    viewer.layers.clear()
    widget.set_region(None)
    if only == "region":
        viewer.close()
        return

    # 1-2. chelsea: Grad-CAM and occlusion of "Egyptian cat", picked from the top 5
    cat = viewer.add_image(skimage.data.chelsea(), name="chelsea", rgb=True)
    widget.refresh_images()
    widget.image_combo.setCurrentText("chelsea")
    widget.fill_top5()
    settle()
    run("grad-cam", "Egyptian cat")
    shot("chelsea-grad-cam")
    viewer.layers["chelsea: Grad-CAM Egyptian cat"].visible = False
    run("occlusion", "Egyptian cat")
    shot("chelsea-occlusion")
    viewer.layers.clear()

    # 3-4. The Face sample: its top class, and what covering the eyes does
    face = viewer.add_image(load_sample("face"), name="Face", rgb=True)
    widget.refresh_images()
    widget.image_combo.setCurrentText("Face")
    widget.fill_top5()
    settle()
    top = widget.target()
    run("grad-cam", top)
    shot("face-grad-cam")
    viewer.layers[f"Face: Grad-CAM {top}"].visible = False
    run("occlusion", "sunglasses", window=24, stride=12)
    shot("face-occlusion")
    viewer.layers.clear()

    # 5. A deep layer: pytorch-grad-cam's map stretched to the image, beside ours placed
    image = skimage.data.chelsea()
    layer, cls = "fire9-concat", net.categories.index("Egyptian cat")
    theirs = pytorch_grad_cam_map(net, image, cls, layer)
    ours = na.grad_cam(net, image, cls, layer=layer)
    kwargs = {"colormap": "magma", "opacity": 0.6, "blending": "translucent"}
    viewer.add_image(image, name="chelsea", rgb=True)
    viewer.add_image(theirs, name="pytorch-grad-cam (cv2.resize stretch)", **kwargs)
    viewer.add_image(image, name="chelsea ", rgb=True)
    ours = (ours - ours.min()) / (ours.max() - ours.min())  # normalised as pytorch-grad-cam does
    viewer.add_image(ours, name="ours (placed at O + S*i)", **kwargs)
    viewer.grid.enabled = True
    viewer.grid.stride = 2
    viewer.grid.shape = (1, 2)
    shot("stretched-vs-placed")
    rows, cols = np.mgrid[: ours.shape[0], : ours.shape[1]]
    for name, m in (("pytorch-grad-cam", theirs), ("ours", ours)):
        print(
            f"{layer}: centroid of {name}'s map (row, col): "
            f"({(m * rows).sum() / m.sum():.1f}, {(m * cols).sum() / m.sum():.1f})"
        )
    print(f"{layer}: largest difference of the two maps: {np.abs(theirs - ours).max():.3f} (of 1)")
    viewer.close()
    del face, cat


if __name__ == "__main__":
    main(sys.argv[2] if sys.argv[1:2] == ["--only"] else None)
