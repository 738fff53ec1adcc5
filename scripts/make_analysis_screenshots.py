"""Regenerate the screenshots of docs/analysis.md from a real napari viewer.

Uses the built-in original Caffe weights. Needs a display; run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python scripts/make_analysis_screenshots.py
"""

from pathlib import Path

import napari
import numpy as np
import skimage.io
from qtpy.QtWidgets import QApplication

import napari_activations as na
from napari_activations._analysis_widget import AnalysisWidget
from napari_activations._sample_data import load_sample

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
WEIGHTS = "caffe"
# An ellipse around the image-left eye of the Face sample, the one the second sample covers.
EYE = np.array([[61, 67], [61, 99], [80, 99], [80, 67]])


def main() -> None:
    net = na.load_squeezenet(WEIGHTS, device="cpu")
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    face = viewer.add_image(load_sample("face"), name="Face", rgb=True)
    covered = viewer.add_image(
        load_sample("face_one_eye_covered"), name="Face, one eye covered", rgb=True, visible=False
    )
    widget = AnalysisWidget(viewer, network=net)
    viewer.window.add_dock_widget(widget, name="Activation analysis")

    def settle() -> None:
        while widget.worker is not None:
            QApplication.processEvents()
        for _ in range(5):
            QApplication.processEvents()

    def shot(name: str) -> None:
        settle()
        viewer.reset_view()
        settle()
        image = viewer.screenshot(canvas_only=False, flash=False)
        skimage.io.imsave(OUT / f"analysis-{name}.png", image[..., :3], check_contrast=False)
        print(f"wrote {OUT / f'analysis-{name}.png'}")

    OUT.mkdir(parents=True, exist_ok=True)

    # 1. conv1: the 8x8 montage and the strongest channel (by maximum)
    conv1 = na.show_activations(viewer, face, "conv1", network=net)
    widget.layer_combo.setCurrentText(conv1.name)
    widget.show_montage()
    widget.find_strongest()
    shot("montage")
    for name in (f"{conv1.name} montage", f"{conv1.name} montage channels", conv1.name):
        viewer.layers.remove(name)

    # 2. fire6-relu_squeeze1x1: which channels see the eye? Region ranking.
    act = na.show_activations(viewer, face, "fire6-relu_squeeze1x1", network=net)
    viewer.add_shapes(
        [EYE],
        shape_type="ellipse",
        name="Eye",
        edge_color="cyan",
        face_color="transparent",
        edge_width=1,
    )
    widget.refresh_layers()
    widget.layer_combo.setCurrentText(act.name)
    widget.tabs.setCurrentIndex(1)
    widget.region_tab.region_combo.setCurrentText("Eye")
    widget.border_check.setChecked(True)  # the whole face counts, as in the docs' code
    widget.rank_region()
    settle()
    shot("region")
    widget.border_check.setChecked(False)

    # 3. Compare the face pair, ranked by the drop inside the eye region
    covered.visible = True
    widget.tabs.setCurrentIndex(2)
    widget.set_ticked_images(["Face", "Face, one eye covered"])
    widget.compare_tab.compare_layer_combo.setCurrentText("fire6-relu_squeeze1x1")
    widget.compare_tab.compare_region_combo.setCurrentText("Eye")
    widget.compare()
    settle()
    shot("compare")

    # 4. Probe a pixel on the (uncovered) eye; the network table and the classification
    viewer.canvas.grid.enabled = False
    covered.visible = False
    widget.layer_combo.setCurrentText(act.name)
    widget.tabs.setCurrentIndex(3)
    widget.on_viewer_click(act.data_to_world((0, 71, 83)))
    shot("probe")
    widget.tabs.setCurrentIndex(4)
    widget.network_tab.image_combo.setCurrentText("Face")
    widget.classify()
    shot("network")
    viewer.close()


if __name__ == "__main__":
    main()
