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
    assert meta["target"] == {"index": 285, "label": "Egyptian cat", "region": None}
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


# --- regions: a Shapes layer over the (scaled, translated) image --------------------------------

# Image pixels rows 60-120, columns 40-140 of the Face sample, drawn in world coordinates:
# the image has scale (0.5, 2) and translate (10, -7).
PIXELS = (slice(60, 121), slice(40, 141))
WORLD_RECTANGLE = np.array([[40.0, 73.0], [40.0, 273.0], [70.0, 273.0], [70.0, 73.0]])


@pytest.fixture
def region(viewer, face_layer):
    return viewer.add_shapes([WORLD_RECTANGLE], shape_type="rectangle", name="nose box")


def _pixel_mask(face_layer):
    mask = np.zeros(face_layer.data.shape[:2], dtype=bool)
    mask[PIXELS] = True
    return mask


def test_rank_classes_in_a_drawn_region_and_explain_the_score_there(
    viewer, widget, face_layer, region, random_net, qtbot
):
    import napari_activations as na
    from napari_activations._attribution_layers import ATTRIBUTION_KEY

    widget.region.region_combo.setCurrentText("nose box")
    widget.rank_in_region()
    wait(qtbot, widget)
    mask = _pixel_mask(face_layer)
    expected = na.rank_classes_in_region(random_net, face_layer.data, mask, k=5)
    assert widget.ranked_classes() == [name for _, name, _ in expected]
    # the whole image ranks differently: the region (placed under scale and translate) counts
    whole = na.rank_classes_in_region(random_net, face_layer.data, np.ones_like(mask), k=5)
    assert [n for _, n, _ in whole] != widget.ranked_classes()

    widget.region.rank_table.cellClicked.emit(1, 0)  # the second class, as a click does
    assert widget.target() == expected[1][1]
    widget.set_region("nose box")
    widget.set_method("occlusion")
    widget.window_spin.setValue(44)
    widget.stride_spin.setValue(44)
    widget.run()
    wait(qtbot, widget)
    name = f"Face: occlusion {expected[1][1]} in nose box"
    layer = viewer.layers[name]
    np.testing.assert_allclose(layer.extent.world, face_layer.extent.world)
    assert layer.metadata[ATTRIBUTION_KEY]["target"] == {
        "index": expected[1][0],
        "label": f"{expected[1][1]} in nose box",
        "region": "nose box",
    }
    goal = na.region_target(random_net, mask, expected[1][0])
    ours = na.occlusion_sensitivity(random_net, face_layer.data, goal, window=44, stride=44)
    np.testing.assert_allclose(layer.data, ours, rtol=0, atol=1e-4 * np.abs(ours).max())

    assert widget.region.rank_button.isEnabled()  # still usable after a run added a layer
    assert widget.ranked_classes()  # the ranking stays while image and region stay
    # the map can be probed: the value under a world position is the map's at that pixel
    y, x = 100, 50
    world = np.array([y, x]) * face_layer.scale + face_layer.translate
    assert layer.get_value(world, world=True) == pytest.approx(float(layer.data[y, x]))


def test_region_from_the_console_equals_the_api(viewer, face_layer, region, random_net):
    import napari_activations as na

    layer = na.show_attribution(
        viewer, "Face", "grad-cam", 3, network=random_net, region="nose box", layer="fire9-concat"
    )
    assert layer.name == f"Face: Grad-CAM {random_net.categories[3]} in nose box"
    goal = na.region_target(random_net, _pixel_mask(face_layer), 3)
    theirs = na.grad_cam(random_net, face_layer.data, goal, layer="fire9-concat")
    np.testing.assert_allclose(layer.data, theirs, rtol=0, atol=1e-4 * theirs.max())
    # At the class-score layer itself a region changes nothing: refused, saying what to use.
    whole = na.grad_cam(random_net, face_layer.data, 3)
    np.testing.assert_allclose(na.grad_cam(random_net, face_layer.data, goal), whole, rtol=1e-5)
    before = [lay.name for lay in viewer.layers]
    with pytest.raises(na.AttributionError, match="same map for any region.*occlusion"):
        na.show_attribution(viewer, "Face", "grad-cam", 3, network=random_net, region="nose box")
    assert [lay.name for lay in viewer.layers] == before


def test_bad_regions_are_plain_notifications(viewer, widget, face_layer, qtbot, notifications):
    original = face_layer.data.copy()
    widget.rank_in_region()  # no region layer yet
    viewer.add_shapes(name="empty")
    widget.region.region_combo.setCurrentText("empty")
    widget.rank_in_region()
    wait(qtbot, widget)
    viewer.add_shapes([WORLD_RECTANGLE + 5000], shape_type="rectangle", name="far away")
    widget.set_region("far away")
    widget.set_target("tabby")
    widget.run()
    wait(qtbot, widget)
    errors = [m for s, m in notifications if s == "error"]
    assert any("There is no region" in m and "Shapes layer" in m for m in errors)
    assert any("'empty' has no shapes; draw the region first" in m for m in errors)
    assert any("'far away' covers no pixel of 'Face'" in m for m in errors)
    assert not [n for n in viewer.layers if ":" in n.name]  # nothing was added
    np.testing.assert_array_equal(face_layer.data, original)
    assert widget.status_label.text().startswith("Ready.")


def test_a_ranking_is_cleared_when_the_image_or_the_region_changes(
    viewer, widget, face_layer, region, qtbot
):
    """A ranking names one image's classes in one region: shown beside another image (or
    region) it would tell the user something false."""
    viewer.add_shapes([[[0, 0], [0, 20], [20, 20], [20, 0]]], name="corner")
    viewer.add_image(np.zeros((40, 40), np.float32), name="other")
    for change in (
        lambda: widget.region.region_combo.setCurrentText("corner"),
        lambda: widget.image_combo.setCurrentText("other"),
    ):
        widget.image_combo.setCurrentText("Face")
        widget.region.region_combo.setCurrentText("nose box")
        widget.rank_in_region()
        wait(qtbot, widget)
        assert len(widget.ranked_classes()) == 5
        change()
        assert widget.ranked_classes() == []


def test_a_ranking_that_arrives_after_the_region_changed_is_dropped(
    viewer, widget, face_layer, region, qtbot
):
    viewer.add_shapes([[[0, 0], [0, 20], [20, 20], [20, 0]]], name="corner")
    widget.region.region_combo.setCurrentText("nose box")
    widget.rank_in_region()
    assert not widget.region.rank_button.isEnabled()  # busy: one ranking at a time
    widget.region.region_combo.setCurrentText("corner")  # before the result is delivered
    wait(qtbot, widget)
    assert widget.ranked_classes() == []  # the nose box's ranking is not shown for the corner
    assert widget.region.rank_button.isEnabled()
