"""The plugin in a real napari viewer (run under Xvfb): widget, activation layer, console API.

Random weights throughout (the ``random_net`` fixture, or ``weights=None``): these tests are
about the plugin's behaviour, not about what the network learned.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

WIDGET = ("napari-activations", "SqueezeNet activations")


@pytest.fixture(scope="module", autouse=True)
def _network_before_any_viewer(random_net):
    """Load torch before the first viewer exists, as the conftest's networks need it."""
    return random_net


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def face_layer(viewer):
    (layer,) = viewer.open_sample("napari-activations", "face")
    return layer


@pytest.fixture
def widget(viewer, random_net):
    _, w = viewer.window.add_plugin_dock_widget(*WIDGET)
    w.set_weights(None)  # random weights, as random_net; nothing is downloaded
    return w


def run_and_wait(qtbot, widget, timeout=30_000):
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def world_extent(layer):
    return np.asarray(layer.extent.world)


# -- the widget -----------------------------------------------------------------------------


def test_widget_docks_from_manifest_and_offers_only_image_layers(viewer, qtbot):
    from napari_activations._widget import ActivationsWidget

    viewer.add_labels(np.zeros((40, 40), dtype=np.uint8), name="labels")
    viewer.add_points([[1, 1]], name="points")
    first = viewer.add_image(np.zeros((40, 40)), name="first")
    second = viewer.add_image(np.zeros((50, 60)), name="second")
    _, w = viewer.window.add_plugin_dock_widget(*WIDGET)
    assert isinstance(w, ActivationsWidget)
    offered = [w.image_combo.itemText(i) for i in range(w.image_combo.count())]
    assert offered == ["first", "second"]
    assert w.selected_image() == second  # the active layer when the widget opened
    viewer.layers.selection.active = first
    assert w.selected_image() == first  # follows the selection
    viewer.add_image(np.zeros((30, 30)), name="third")
    assert w.selected_image().name == "third"
    viewer.layers["third"].name = "renamed"
    first.name = "first renamed"  # a layer that was there before the widget
    offered = [w.image_combo.itemText(i) for i in range(w.image_combo.count())]
    assert "renamed" in offered and "first renamed" in offered


def test_layer_menu_groups_by_block_with_channels_and_size(viewer, face_layer, widget):
    model = widget.layer_combo.model()
    rows = [model.item(r) for r in range(model.rowCount())]
    headers = [r.text() for r in rows if not r.isSelectable()]
    assert headers[:4] == ["conv1", "pool1", "fire2", "fire3"] and headers[-1] == "classifier"
    texts = {r.text().split()[0]: r.text() for r in rows if r.isSelectable()}
    from napari_activations.layers import LAYERS

    assert len(texts) == len(LAYERS)
    assert "64 ch, 109×89" in texts["conv1"]  # for the 220 x 180 face
    assert "48 ch" in texts["fire6-squeeze1x1"]
    widget.scale_spin.setValue(2.0)
    assert "219×179" in model.item(1).text()


def test_run_on_the_face_sample(viewer, qtbot, face_layer, widget, notifications):
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    layer = viewer.layers["Face: conv1"]
    assert layer.data.shape == (64, 220, 180)
    np.testing.assert_allclose(world_extent(layer)[:, 1:], world_extent(face_layer))
    assert layer.axis_labels[0] == "conv1 channel"
    meta = layer.metadata["napari_activations"]
    assert meta["layer"] == {
        "name": "conv1",
        "module": "features.0",
        "channels": 64,
        "after_relu": False,
        "block": "conv1",
        "network": "squeezenet1_1",
    }
    assert meta["weights"]["trained"] is False
    # Starts at the strongest channel, with that channel's own (zero-centred) contrast.
    native = layer.data.native
    strongest = int(native.reshape(64, -1).max(axis=1).argmax())
    assert viewer.dims.current_step[0] == strongest
    m = np.abs(native[strongest]).max()
    np.testing.assert_allclose(layer.contrast_limits, (-m, m), rtol=1e-6)
    # The contrast follows the channel slider (mat2gray per channel).
    other = (strongest + 1) % 64
    viewer.dims.set_current_step(0, other)
    m = np.abs(native[other]).max()
    np.testing.assert_allclose(layer.contrast_limits, (-m, m), rtol=1e-6)
    # Untrained weights are not presented as meaningful.
    assert any("untrained" in message for _, message in notifications)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "Face: conv1" in widget.status_label.text()


@pytest.mark.parametrize("scale, translate", [((0.5, 2.0), (10.0, -5.0)), ((3.0, 3.0), (0, 7))])
def test_world_extent_matches_a_scaled_translated_image(viewer, qtbot, widget, scale, translate):
    image = viewer.add_image(
        np.random.default_rng(0).random((60, 45)), name="cells", scale=scale, translate=translate
    )
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    layer = viewer.layers["cells: conv1"]
    assert layer.data.shape == (64, 60, 45)
    np.testing.assert_allclose(world_extent(layer)[:, 1:], world_extent(image))
    np.testing.assert_allclose(layer.scale[1:], scale)


def strongest_channel(native) -> int:
    return int(np.asarray(native).reshape(native.shape[0], -1).max(axis=1).argmax())


def test_rerun_updates_and_another_layer_adds(viewer, qtbot, face_layer, widget):
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    first = viewer.layers["Face: conv1"]
    # The user's choices survive an update: colormap, blending, opacity and channel.
    first.colormap = "viridis"
    first.blending = "additive"
    first.opacity = 0.35
    chosen = (strongest_channel(first.data.native) + 1) % 64
    viewer.dims.set_current_step(0, chosen)
    widget.scale_spin.setValue(0.5)
    run_and_wait(qtbot, widget)
    assert viewer.layers["Face: conv1"] is first
    assert first.metadata["napari_activations"]["input_scale"] == 0.5
    assert strongest_channel(first.data.native) != chosen  # a new layer would start there
    assert first.colormap.name == "viridis"
    assert first.blending == "additive"
    assert first.opacity == pytest.approx(0.35)
    assert viewer.dims.current_step[0] == chosen
    # ... and the contrast is the kept channel's own range in the new run's data.
    channel = np.asarray(first.data.native[chosen])
    m = float(np.abs(channel).max())
    np.testing.assert_allclose(first.contrast_limits, (-m, m), rtol=1e-5)
    assert len(viewer.layers) == 2
    widget.set_network_layer("fire2-relu_squeeze1x1")
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == 3
    post = viewer.layers["Face: fire2-relu_squeeze1x1"]
    # Its own channel axis, left of conv1's, on which it lies as one plane (docs/tutorial.md).
    assert post.data.shape == (16, 1, 220, 180)
    assert post.colormap.name == "activation magma" and post.contrast_limits[0] >= 0


def test_new_results_go_on_top_of_earlier_ones(viewer, qtbot, face_layer, widget):
    """The tutorial's order (conv1, then fire6-squeeze1x1): the latest result is on top."""
    other = viewer.add_image(np.zeros((30, 30), np.float32), name="other")
    widget.image_combo.setCurrentText("Face")
    for network_layer in ("conv1", "fire6-squeeze1x1"):
        widget.set_network_layer(network_layer)
        run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == [
        "Face",
        "other",
        "Face: conv1",
        "Face: fire6-squeeze1x1",
    ]
    # Updating an earlier result leaves it where it is.
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    assert viewer.layers[-1].name == "Face: fire6-squeeze1x1"
    assert other in viewer.layers


def test_replace_keeps_one_activation_layer_per_image(
    viewer, qtbot, face_layer, widget, random_net
):
    import napari_activations as na

    cells = viewer.add_image(np.random.default_rng(4).random((40, 50)), name="cells")
    cells_conv1 = na.show_activations(viewer, cells, "conv1", network=random_net)
    assert not widget.replace_check.isChecked()  # by default earlier results stay
    widget.image_combo.setCurrentText("Face")
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    widget.replace_check.setChecked(True)
    widget.set_network_layer("pool1")
    run_and_wait(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert "Face: conv1" not in names and names[-1] == "Face: pool1"
    assert cells_conv1 in viewer.layers  # another image's result is not touched
    # The same from the console.
    na.show_activations(viewer, "Face", "fire2-squeeze1x1", network=random_net, replace=True)
    assert [layer.name for layer in viewer.layers] == [
        "Face",
        "cells",
        "cells: conv1",
        "Face: fire2-squeeze1x1",
    ]


def test_status_line_never_names_a_layer_that_is_gone(viewer, qtbot, face_layer, widget):
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    assert "Showing 'Face: conv1'" in widget.status_label.text()
    viewer.layers.remove("Face: conv1")
    assert "Showing" not in widget.status_label.text()
    run_and_wait(qtbot, widget)
    viewer.layers.remove("Face")  # no image layer left
    text = widget.status_label.text()
    assert "Showing" not in text and "No image layer" in text
    viewer.open_sample("napari-activations", "face")
    assert widget.status_label.text() == "Ready."


def test_intensity_range_is_the_layers_contrast_limits(viewer, qtbot, widget, random_net):
    import napari_activations as na

    data = np.random.default_rng(2).random((64, 64)).astype(np.float32) * 1000
    image = viewer.add_image(data, name="img", contrast_limits=(100, 400))
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    expected = na.activations(random_net, data, "conv1", intensity_range=(100, 400))
    np.testing.assert_allclose(viewer.layers["img: conv1"].data.native, expected, rtol=1e-5)
    assert image.contrast_limits == [100, 400]


# -- errors ---------------------------------------------------------------------------------


def assert_error_shown(notifications, *words):
    errors = [m for severity, m in notifications if "error" in severity.lower()]
    assert errors, notifications
    assert all(w in errors[-1] for w in words), errors[-1]


def test_no_image_is_an_error_notification(viewer, qtbot, widget, notifications):
    widget.run()
    assert not widget.busy
    assert_error_shown(notifications, "no image")
    assert len(viewer.layers) == 0


def test_image_too_small_is_an_error_notification(viewer, qtbot, widget, notifications):
    viewer.add_image(np.zeros((12, 12)), name="tiny")
    widget.set_network_layer("fire9-concat")
    run_and_wait(qtbot, widget)
    assert_error_shown(notifications, "too small", "fire9-concat")
    assert list(viewer.layers) == [viewer.layers["tiny"]]
    assert widget.run_button.isEnabled()


def test_unreadable_weights_are_an_error_notification(
    viewer, qtbot, face_layer, widget, notifications, tmp_path
):
    bad = tmp_path / "weights.pth"
    bad.write_text("not weights")
    widget.set_weights(bad)
    # The weights line names the file, never a folder of the user's machine.
    assert widget.weights_label.text() == "file weights.pth"
    run_and_wait(qtbot, widget)
    assert_error_shown(notifications, str(bad))
    assert len(viewer.layers) == 1 and widget.run_button.isEnabled()


def test_failed_download_is_an_error_notification(
    viewer, qtbot, face_layer, widget, notifications, monkeypatch
):
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    widget.set_weights("torchvision")
    run_and_wait(qtbot, widget)
    assert_error_shown(
        notifications, "Could not get torchvision's pretrained", "NAPARI_ACTIVATIONS_WEIGHTS"
    )
    assert len(viewer.layers) == 1 and widget.run_button.isEnabled()


# -- interruptions --------------------------------------------------------------------------


def start_and_interrupt(qtbot, widget, interrupt):
    """Run, and call ``interrupt`` from the GUI thread at the first progress step."""
    widget.run()
    worker = widget.worker
    fired = []

    def once(_):
        if not fired:
            fired.append(True)
            interrupt()

    worker.yielded.connect(once)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    qtbot.wait(50)  # let queued signals land
    return fired


def test_source_deleted_mid_run_adds_nothing(viewer, qtbot, face_layer, widget):
    widget.set_network_layer("fire9-concat")
    fired = start_and_interrupt(qtbot, widget, lambda: viewer.layers.remove(face_layer))
    assert fired
    assert len(viewer.layers) == 0
    assert not widget.busy and widget.run_button.isEnabled()
    # ... and the widget still works afterwards.
    viewer.open_sample("napari-activations", "face")
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    assert "Face: conv1" in viewer.layers


def test_cancel_adds_nothing(viewer, qtbot, face_layer, widget, notifications):
    widget.set_network_layer("fire9-concat")
    assert start_and_interrupt(qtbot, widget, widget.cancel)
    assert len(viewer.layers) == 1
    assert any("cancelled" in m for _, m in notifications)
    assert widget.run_button.isEnabled()


def test_cancel_after_the_last_step_but_before_the_result_still_adds_nothing(
    viewer, qtbot, face_layer, widget, notifications
):
    """Cancel pressed while the finished worker's result waits in the event queue."""
    import time

    widget.set_network_layer("conv1")
    widget.run()
    worker = widget.worker
    deadline = time.monotonic() + 120
    # Started, then done (a worker not started yet is not running either); no Qt events
    # meanwhile, so the result waits in the queue.
    for running in (True, False):
        while worker.is_running != running and time.monotonic() < deadline:
            time.sleep(0.001)
    assert not worker.is_running and time.monotonic() < deadline
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert list(viewer.layers) == [face_layer]
    assert any("cancelled" in m for _, m in notifications)
    assert widget.status_label.text() == "Cancelled."


def test_viewer_closed_mid_run_breaks_nothing(make_napari_viewer, qtbot, random_net):
    from napari_activations._widget import ActivationsWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-activations", "face")
    w = ActivationsWidget(viewer, network=random_net)
    viewer.window.add_dock_widget(w)
    w.set_network_layer("fire9-concat")
    assert start_and_interrupt(qtbot, w, viewer.close)
    assert "Face: fire9-concat" not in [layer.name for layer in viewer.layers]


# -- console and drawing --------------------------------------------------------------------


def test_show_activations_from_the_console(viewer, qtbot, face_layer, widget, random_net):
    import napari_activations as na

    layer = na.show_activations(viewer, "Face", "conv1", network=random_net)
    assert layer is viewer.layers["Face: conv1"] and layer.data.shape == (64, 220, 180)
    again = na.show_activations(
        viewer, face_layer, "features.0", network=random_net, contrast="global"
    )
    assert again is layer and len(viewer.layers) == 2
    lo, hi = layer.contrast_limits  # one range, the whole layer's, centred on zero
    assert hi == pytest.approx(np.abs(layer.data.native).max()) and lo == -hi
    # The widget updates the layer the console made: one code path.
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == 2
    with pytest.raises(ValueError, match="no layer named"):
        na.show_activations(viewer, "Nope", "conv1", network=random_net)


def test_stack_keeps_its_axes_under_the_image_sliders(viewer, qtbot, widget):
    stack = viewer.add_image(np.random.default_rng(3).random((6, 40, 50)), name="stack")
    widget.set_network_layer("conv1")
    # Contrast per plane: no planes sampled for the stack's contrast (tests/test_microscopy.py).
    widget.stack_contrast_combo.setCurrentIndex(widget.stack_contrast_combo.findData("plane"))
    run_and_wait(qtbot, widget)
    layer = viewer.layers["stack: conv1"]
    assert layer.data.shape == (64, 6, 40, 50)
    np.testing.assert_allclose(world_extent(layer)[:, 1:], world_extent(stack))
    plane = np.asarray(layer.data[5, 2])
    np.testing.assert_allclose(plane, layer.data.stack[2, 5], rtol=1e-6)
    # Planes are computed as they are looked at, not all at once on napari's thread: the
    # first plane, the one on screen and the one just read; not all six.
    assert 1 <= layer.data.native.forward_passes <= 3


def test_stack_contrast_follows_the_channel_slider_not_the_plane_slider(viewer, random_net):
    import napari_activations as na

    stack = np.random.default_rng(4).random((3, 40, 50)).astype(np.float32)
    viewer.add_image(stack, name="stack")
    layer = na.show_activations(
        viewer, "stack", "fire2-relu_squeeze1x1", network=random_net, include_border=True
    )
    assert layer.data.shape == (16, 3, 40, 50)  # (C, Z, H, W)
    # Whole-stack contrast (the default) from sampled planes: here all three, border counted.
    native = np.asarray(layer.data.native)  # (Z, C, h, w)
    low, high = native.min(axis=(0, 2, 3)), native.max(axis=(0, 2, 3))
    first = native[0]
    # Two channels with ranges of their own, neither the one shown first nor channel 0.
    picks = [
        int(c)
        for c in np.argsort(-high)
        if high[c] > low[c] and c not in (0, strongest_channel(first))
    ][:2]
    assert len(picks) == 2 and len({high[0], high[picks[0]], high[picks[1]]}) == 3
    for channel in picks:
        viewer.dims.set_current_step(0, channel)
        np.testing.assert_allclose(layer.contrast_limits, (low[channel], high[channel]), rtol=1e-6)
    # The plane slider moves the plane, not the contrast.
    for plane in (2, 1):
        viewer.dims.set_current_step(1, plane)
        np.testing.assert_allclose(
            layer.contrast_limits, (low[picks[-1]], high[picks[-1]]), rtol=1e-6
        )


def test_overlay_is_drawn(make_napari_viewer, qtbot, random_net):
    viewer = make_napari_viewer(show=True)  # a hidden canvas draws nothing under Xvfb
    viewer.open_sample("napari-activations", "face")
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.set_weights(None)
    widget.set_network_layer("conv1")
    run_and_wait(qtbot, widget)
    layer = viewer.layers["Face: conv1"]

    def shot():
        qtbot.wait(100)
        return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)

    # The docked widgets narrow the canvas after the sample was framed: give the window room
    # and frame the face again, so that it fills the canvas whatever the docks' widths.
    viewer.window.resize(1500, 1100)
    qtbot.wait(100)
    viewer.reset_view()
    layer.visible = False  # the image alone, on the same canvas (channel slider included)
    alone = shot()
    drawn = alone.max(axis=-1) > 30
    assert drawn.mean() > 0.25, (drawn.mean(), drawn.shape)  # the face is drawn, across the canvas
    layer.visible = True
    overlaid = shot()
    # The dock can reflow between the shots (its status line), resizing the canvas a little.
    h, w = min(alone.shape[0], overlaid.shape[0]), min(alone.shape[1], overlaid.shape[1])
    alone, overlaid = alone[:h, :w], overlaid[:h, :w]
    changed = np.abs(alone - overlaid).max(axis=-1) > 30
    assert changed.mean() > 0.05, changed.mean()
    # Where the face is, the face still shows through: the overlay is not opaque.
    assert np.corrcoef(alone.mean(-1).ravel(), overlaid.mean(-1).ravel())[0, 1] > 0.2


def test_torch_loads_only_when_the_widget_first_computes():
    """napari with the widget docked and a sample open has not imported torch yet."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.open_sample('napari-activations', 'face')\n"
        "_, w = viewer.window.add_plugin_dock_widget('napari-activations', "
        "'SqueezeNet activations')\n"
        "w.set_network_layer('fire6-squeeze1x1')\n"
        "print('torch' in sys.modules, 'torchvision' in sys.modules,"
        " 'onnxruntime' in sys.modules)\n"
        "viewer.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False False False"


def test_backend_choice_reaches_the_compute_and_the_metadata(
    viewer, qtbot, face_layer, widget, notifications
):
    widget.set_network_layer("conv1")
    widget.set_device("cpu")
    results = {}
    for backend in ("torch", "onnxruntime"):
        widget.set_backend(backend)
        run_and_wait(qtbot, widget)
        layer = viewer.layers["Face: conv1"]
        assert layer.metadata["napari_activations"]["backend"]["name"] == backend
        results[backend] = np.asarray(layer.data.native)
    scale = np.abs(results["torch"]).max()
    assert np.abs(results["onnxruntime"] - results["torch"]).max() <= 1e-5 * scale
    widget.set_backend("auto", "float16")  # half precision on the CPU: a plain refusal
    run_and_wait(qtbot, widget)
    assert_error_shown(notifications, "GPU only")
    assert widget.run_button.isEnabled()
    with pytest.raises(ValueError, match="backend must be one of"):
        widget.set_backend("tensorrt")


def test_device_choice_reaches_the_network(
    viewer, qtbot, face_layer, widget, notifications, monkeypatch
):
    import torch

    from napari_activations import network

    # On a machine without a GPU "auto" gives the CPU as well: what counts is that the
    # widget asks for the device chosen.
    asked: list = []
    load = network.load_squeezenet

    def recording_load(*args, **kwargs):
        asked.append(kwargs.get("device"))
        return load(*args, **kwargs)

    monkeypatch.setattr(network, "load_squeezenet", recording_load)
    widget.set_network_layer("conv1")
    widget.set_device("cpu")
    run_and_wait(qtbot, widget)
    assert asked == ["cpu"]
    assert "Face: conv1" in viewer.layers
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the missing-device message cannot be shown")
    widget.set_device("cuda")
    run_and_wait(qtbot, widget)
    assert_error_shown(notifications, "cuda", "auto")
    assert widget.run_button.isEnabled()


# -- a run whose signals arrive while napari builds or moves its progress bar ---------------


def test_result_is_never_added_inside_the_progress_bar_update(viewer, qtbot, monkeypatch, widget):
    """napari's activity dialog processes Qt events while it builds or moves a progress bar,
    so a quick run's result and end arrived inside the progress callback: the layer was
    inserted from there (issue 9, section 4) and a bar made there was never closed."""
    import inspect

    from napari.utils import progress

    from napari_activations import _widget

    viewer.add_image(np.random.default_rng(5).random((40, 48)).astype(np.float32), name="small")
    nested: list[bool] = []
    original = _widget.add_activation_layer

    def recording(*args, **kwargs):
        nested.append(any(f.function == "show_progress" for f in inspect.stack()))
        return original(*args, **kwargs)

    monkeypatch.setattr(_widget, "add_activation_layer", recording)
    open_before = set(progress._all_instances)
    for network_layer in ("conv1", "pool1", "conv1"):
        widget.set_network_layer(network_layer)
        run_and_wait(qtbot, widget)
    qtbot.wait(50)
    assert nested == [False, False, False]
    assert "small: pool1" in viewer.layers and not widget.busy
    assert set(progress._all_instances) - open_before == set()  # every bar was closed


@pytest.mark.slow
def test_deleting_the_source_mid_run_then_running_again():
    """Issue 9, section 4, step by step, in a process of its own, so that a crash fails this
    test instead of killing pytest. On Mesa's software OpenGL, deleting a GL program crashes
    napari even without the plugin; the plugin keeps removed layers' programs there
    (napari_activations._mesa_workaround; docs/scale.md)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("delete_source_then_run_again.py")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and "survived" in proc.stdout, (
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    # The deleted image's GL program went through the plugin's guard: kept on Mesa's software
    # OpenGL (this CI's renderer), deleted elsewhere.
    software, kept = proc.stdout.split("software")[-1].split("kept")
    assert software.strip() in ("True", "False"), proc.stdout
    assert (int(kept) >= 1) == (software.strip() == "True"), proc.stdout


# -- a viewer of mixed layers: every slider moves only what it names --------------------------


def _views(viewer) -> dict[str, np.ndarray]:
    """What each layer draws now (its current slice); napari slices synchronously here."""
    views = {}
    for layer in viewer.layers:
        assert not layer._slice.empty, f"{layer.name!r} draws nothing at {viewer.dims.point}"
        views[layer.name] = np.array(layer._slice.image.raw, dtype=float)
    return views


def test_mixed_viewer_sliders_move_only_what_they_name(viewer, random_net):
    """A 2D RGB image, a (60, H, W) stack and a (16, H, W, 3) RGB stack, with activations of
    each (issue 9, section 2): each channel slider moves only its network layer's channels,
    the plane slider only the stacks' planes, and no layer ever draws nothing or black."""
    import napari_activations as na

    rng = np.random.default_rng(7)
    h, w = 40, 48
    viewer.add_image(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), name="photo")
    viewer.add_image(rng.random((60, h, w)).astype(np.float32), name="stack")
    viewer.add_image(rng.integers(0, 255, (16, h, w, 3), dtype=np.uint8), name="rgb stack")
    for image, network_layer in (
        ("photo", "conv1"),
        ("stack", "conv1"),
        ("rgb stack", "conv1"),
        ("photo", "fire2-squeeze1x1"),
        ("stack", "fire2-squeeze1x1"),
    ):
        na.show_activations(viewer, image, network_layer, network=random_net)
    labels = viewer.dims.axis_labels
    sliders = [
        axis
        for axis in range(viewer.dims.ndim)
        if viewer.dims.nsteps[axis] > 1 and axis not in viewer.dims.displayed
    ]
    moves = {
        "conv1 channel": {"photo: conv1", "stack: conv1", "rgb stack: conv1"},
        "fire2-squeeze1x1 channel": {"photo: fire2-squeeze1x1", "stack: fire2-squeeze1x1"},
        "-3": {"stack", "rgb stack", "stack: conv1", "rgb stack: conv1", "stack: fire2-squeeze1x1"},
    }
    assert sorted(labels[axis] for axis in sliders) == sorted(moves)
    assert viewer.dims.nsteps[labels.index("-3")] == 60  # the planes, not the channels
    assert viewer.dims.nsteps[labels.index("conv1 channel")] == 64
    assert viewer.dims.nsteps[labels.index("fire2-squeeze1x1 channel")] == 16
    for axis in sliders:
        for value in (3, 15):  # 15: the last plane of the shorter stack
            before = _views(viewer)
            start = viewer.dims.current_step[axis]
            viewer.dims.set_current_step(axis, value if value != start else value - 1)
            after = _views(viewer)
            changed = {
                name
                for name in before
                if before[name].shape != after[name].shape
                or not np.array_equal(before[name], after[name])
            }
            assert changed == moves[labels[axis]], (labels[axis], value)
            for name, view in after.items():
                assert view.max() > view.min(), f"{name!r} is one flat colour"
    # The widest channel position on one slider leaves every other layer where it was.
    viewer.dims.set_current_step(labels.index("conv1 channel"), 63)
    assert all(v.size for v in _views(viewer).values())


def test_mixed_viewer_is_drawn_with_each_layer_visible(make_napari_viewer, random_net):
    """On screen: moving a 2D image's activations to channel 63 leaves a 20-plane stack on
    its plane (it once moved the stack to plane 63, and the canvas went black)."""
    import napari_activations as na

    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(8)
    viewer.add_image(rng.random((30, 36)).astype(np.float32), name="stack plane 0")
    stack = viewer.add_image(rng.random((20, 30, 36)).astype(np.float32), name="stack")
    layer = na.show_activations(viewer, "stack plane 0", "conv1", network=random_net)
    na.show_activations(viewer, stack, "conv1", network=random_net)
    z = viewer.dims.ndim - stack.ndim  # the planes axis
    viewer.dims.set_current_step(z, 19)
    viewer.dims.set_current_step(viewer.dims.ndim - layer.ndim, 63)
    assert viewer.dims.current_step[z] == 19
    for shown in (layer, stack):
        for other in viewer.layers:
            other.visible = other is shown
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        assert shot.std() > 5, f"{shown.name!r} is not drawn"
