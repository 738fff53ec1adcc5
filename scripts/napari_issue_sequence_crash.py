"""napari alone (no plugin, no torch), with issue 9's timing: a 2048 x 2048 RGB image and a small
grey image are shown for 2 s; a progress bar opens (as a Run does), the big image is deleted 0.3 s
later, the bar closes; then a (64, h, w) layer is added above the small image (as conv1's result
is) and drawn for 1 s. Prints "survived" when napari lived.

Run: xvfb-run -a .venv/bin/python scripts/napari_issue_sequence_crash.py
"""

import faulthandler
import time

import napari
import numpy as np
from napari.utils import progress
from qtpy.QtWidgets import QApplication

faulthandler.enable()
viewer = napari.Viewer(show=True)
rng = np.random.default_rng(0)
viewer.add_image(rng.integers(0, 255, (2048, 2048, 3), dtype=np.uint8), name="big")
viewer.add_image(rng.random((64, 72)).astype(np.float32), name="small")
app = QApplication.instance()


def wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


wait(2.0)  # the images are on screen before the Run
bar = progress(total=0, desc="Computing fire9-concat")
wait(0.3)
viewer.layers.remove("big")
wait(0.5)
bar.close()
wait(1.0)
bar = progress(total=0, desc="Computing conv1")
wait(0.3)
viewer.add_image(rng.random((64, 64, 72)).astype(np.float32), name="small: conv1")
bar.close()
wait(1.0)
viewer.close()
print("survived")
