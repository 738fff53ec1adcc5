"""napari alone (no plugin, no torch): add a 2048 x 2048 RGB image and a small grey image,
delete the big one 0.3 s later, keep drawing for 2 s. Prints "survived" when napari lived.

On this project's CI machine (Debian 12, Mesa 22.3.6 software OpenGL under Xvfb, napari 0.9.2,
vispy 0.17, PyQt6) it died in glDrawArrays in most runs while the machine was busy: this is
the crash of issue 9, section 4, without the plugin. Run: xvfb-run -a .venv/bin/python
scripts/napari_delete_crash.py
"""

import faulthandler
import time

import napari
import numpy as np
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


wait(0.3)
viewer.layers.remove("big")
wait(2.0)
viewer.close()
print("survived")
