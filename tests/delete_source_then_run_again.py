"""Issue 9, section 4, as a user does it, in a process of its own (a crash must not kill pytest).

A 2048 x 2048 RGB image and a small grey image; fire9-concat runs on the big one, which is
deleted about 0.3 s later; when Run is available again, conv1 runs on the small one. Prints
"survived" and exits 0 when napari lived through it with the result shown.

Mesa's software OpenGL (llvmpipe, softpipe: Xvfb, CI) crashes in ``glDrawArrays`` at a redraw
soon after vispy deletes the GL program of a removed layer, with napari alone
(``scripts/napari_delete_crash.py``); the plugin keeps removed layers' GL programs on such
renderers (``napari_activations._mesa_workaround``). ``--upstream-crash`` turns that off, to
see napari's crash.
"""

import faulthandler
import os
import sys
import time

faulthandler.enable()

import napari  # noqa: E402
import numpy as np  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

if "--upstream-crash" in sys.argv:
    os.environ["NAPARI_ACTIVATIONS_KEEP_GL_PROGRAMS"] = "0"
viewer = napari.Viewer(show=True)
rng = np.random.default_rng(0)
viewer.add_image(rng.integers(0, 255, (2048, 2048, 3), dtype=np.uint8), name="big")
viewer.add_image(rng.random((64, 72)).astype(np.float32), name="small")
_, widget = viewer.window.add_plugin_dock_widget("napari-activations", "SqueezeNet activations")
widget.set_weights(None)
app = QApplication.instance()


def wait_until(condition, timeout=120.0):
    start = time.perf_counter()
    while not condition():
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - start > timeout:
            sys.exit("timed out")


widget.image_combo.setCurrentText("big")
widget.set_network_layer("fire9-concat")
widget.run_button.click()
started = time.perf_counter()
wait_until(lambda: time.perf_counter() - started > 0.3)
viewer.layers.remove("big")
wait_until(widget.run_button.isEnabled)
widget.image_combo.setCurrentText("small")
widget.set_network_layer("conv1")
widget.run_button.click()
wait_until(widget.run_button.isEnabled)
shown = time.perf_counter()
wait_until(lambda: time.perf_counter() - shown > 1.0)  # let the canvas draw the result
assert [layer.name for layer in viewer.layers] == ["small", "small: conv1"], viewer.layers
viewer.close()
from napari_activations import _mesa_workaround  # noqa: E402

software = _mesa_workaround._state["software"]  # None: no GL program was deleted or kept
print("survived", "software", software, "kept", _mesa_workaround.programs_kept())
