"""Attribution in a real napari viewer (Xvfb): the widget, the layer, and the console call.

Random weights: these tests are about the plugin's behaviour, not what the network learned.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

WIDGET = ("napari-activations", "Class attribution")


@pytest.fixture(scope="module", autouse=True)
def _network_before_any_viewer(random_net):
    return random_net


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def face_layer(viewer):
    (layer,) = viewer.open_sample("napari-activations", "face")
    layer.scale = (0.5, 2.0)
    layer.translate = (10.0, -7.0)
    return layer


@pytest.fixture
def widget(viewer, random_net, face_layer):
    _, w = viewer.window.add_plugin_dock_widget(*WIDGET)
    w.set_network(random_net)
    return w


@pytest.fixture
def notifications(monkeypatch):
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []
    original = notification_manager.dispatch

    def record(notification):
        seen.append((str(notification.severity), str(notification.message)))
        return original(notification)

    monkeypatch.setattr(notification_manager, "dispatch", record)
    return seen


def wait(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def test_grad_cam_layer_over_the_image_updated_in_place(viewer, widget, face_layer, qtbot):
    from napari_activations._attribution_layers import ATTRIBUTION_KEY

    widget.set_method("grad-cam")
    widget.set_target("Egyptian cat")
    widget.run()
    wait(qtbot, widget)
    layer = viewer.layers["Face: Grad-CAM Egyptian cat"]
    assert layer.data.shape == face_layer.data.shape[:2]
    np.testing.assert_allclose(layer.extent.world, face_layer.extent.world)
    meta = layer.metadata[ATTRIBUTION_KEY]
    assert meta["method"] == "Grad-CAM" and meta["layer"] == "relu_conv10"
    assert meta["target"] == {"index": 285, "label": "Egyptian cat"}
    assert meta["weights"]["trained"] is False
    assert layer.colormap.name == "activation magma"  # fades to see-through near zero
    assert layer.contrast_limits[0] == 0.0
    n_layers = len(viewer.layers)
    before = np.asarray(layer.data).copy()
    layer.opacity = 0.3  # the user's choice survives an update
    widget.layer_combo.setCurrentText("fire9-concat")
    widget.run()
    wait(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert viewer.layers["Face: Grad-CAM Egyptian cat"] is layer
    assert layer.metadata[ATTRIBUTION_KEY]["layer"] == "fire9-concat"
    assert layer.opacity == 0.3
    assert not np.array_equal(np.asarray(layer.data), before)
    assert widget.image_combo.count() == 1  # the map is not offered as an image


def test_occlusion_from_the_console_is_signed_and_placed(viewer, face_layer, random_net):
    import napari_activations as na

    layer = na.show_attribution(
        viewer, "Face", "occlusion", 3, network=random_net, window=44, stride=44
    )
    assert layer.name == f"Face: occlusion {random_net.categories[3]}"
    low, high = layer.contrast_limits
    assert low == -high and high > 0
    assert layer.colormap.name == "activation blue-red"
    np.testing.assert_allclose(layer.extent.world, face_layer.extent.world)


def test_top5_fills_the_class_choice(widget, qtbot):
    widget.fill_top5()
    wait(qtbot, widget)
    assert widget.target_combo.count() == 5
    assert isinstance(widget.target(), str) and widget.target() in widget._network.categories


def test_bad_target_and_window_are_plain_notifications(
    viewer, widget, face_layer, qtbot, notifications
):
    original = face_layer.data.copy()
    n_layers = len(viewer.layers)
    widget.set_target("egyptain cat")
    widget.run()
    wait(qtbot, widget)
    widget.set_method("occlusion")
    widget.set_target("tabby")
    widget.window_spin.setValue(500)
    widget.run()
    wait(qtbot, widget)
    errors = [m for s, m in notifications if s == "error"]
    assert any("No category named 'egyptain cat'" in m and "Egyptian cat" in m for m in errors)
    assert any("window (500x500 pixels) is larger than the image" in m for m in errors)
    assert len(viewer.layers) == n_layers
    np.testing.assert_array_equal(face_layer.data, original)
    assert widget.status_label.text().startswith("Ready.")


def test_cancel_after_the_last_step_but_before_the_result_adds_nothing(
    viewer, widget, face_layer, qtbot, notifications
):
    """Cancel pressed while the finished worker's result waits in Qt's event queue: the
    attribution widget runs through the same helper as the others, so nothing is added."""
    import time

    widget.set_method("grad-cam")
    widget.set_target("Egyptian cat")
    widget.run()
    worker = widget.worker
    deadline = time.monotonic() + 120
    for running in (True, False):  # started, then done; no Qt events: the result is queued
        while worker.is_running != running and time.monotonic() < deadline:
            time.sleep(0.001)
    assert not worker.is_running and time.monotonic() < deadline
    widget.cancel()
    wait(qtbot, widget)
    assert list(viewer.layers) == [face_layer]
    assert any("cancelled" in m for _, m in notifications)
    assert widget.status_label.text() == "Cancelled."
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
