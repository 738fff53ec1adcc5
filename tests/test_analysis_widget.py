"""The "Activation analysis" dock widget in a real napari viewer (run under Xvfb):

xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/pytest tests/test_analysis_widget.py
"""

from __future__ import annotations

import numpy as np
import pytest

# Loaded before any viewer exists: importing torchvision after a viewer has made an OpenGL
# context crashes the process here (triton's LLVM against Mesa's libLLVM, under Xvfb).
import torchvision  # noqa: F401

import napari_activations as na

pytestmark = pytest.mark.gui

LAYER = "fire2-relu_squeeze1x1"  # 16 channels: small and quick


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 72, 3), dtype=np.uint8)
    img[20:40, 24:48] = (250, 30, 30)
    return img


@pytest.fixture
def setup(make_napari_viewer, qtbot, random_net, image):
    from napari_activations._analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    viewer.add_image(image, name="Image", rgb=True)
    act = na.show_activations(viewer, "Image", LAYER, network=random_net)
    widget = AnalysisWidget(viewer, network=random_net)
    viewer.window.add_dock_widget(widget, name="Activation analysis")
    return viewer, widget, act


def _wait(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _channel(viewer, layer):
    from napari_activations._analysis_layers import current_channel

    return current_channel(viewer, layer)


def test_widget_finds_the_activation_layer(setup):
    _, widget, act = setup
    assert widget.layer_combo.currentText() == act.name == f"Image: {LAYER}"
    assert widget.image_combo.currentText() == "Image"  # derived layers are not inputs
    assert "channel" in widget.describe()


def test_montage_tiles_every_channel_and_a_click_on_a_tile_moves_the_slider(setup):
    from napari_activations._analysis_layers import montage_of

    viewer, widget, act = setup
    widget.normalize_combo.setCurrentIndex(1)  # all together
    widget.show_montage()
    montage = viewer.layers[f"{act.name} montage"]
    labels = viewer.layers[f"{act.name} montage channels"]
    m = montage_of(montage)
    assert m.grid == (4, 4) and m.channels == 16
    assert list(labels.features["channel"]) == list(range(16))
    # beside the image, not over it
    assert montage.extent.world[0][-1] > act.extent.world[1][-1]
    for channel in (11, 3):
        y, x = m.tile_origin(channel)
        h, w = m.tile_shape
        world = montage.data_to_world((y + h / 2, x + w / 2))
        widget.on_viewer_click(world)
        assert _channel(viewer, act) == channel


def test_strongest_channels_are_listed_and_a_row_click_jumps(setup):
    viewer, widget, act = setup
    widget.k_spin.setValue(4)
    widget.by_combo.setCurrentIndex(1)  # mean
    widget.find_strongest()
    native = act.data.native
    want = list(np.argsort(-native.reshape(16, -1).mean(1))[:4])
    assert [c for c, _ in widget.strongest] == want
    assert widget.strongest_table.rowCount() == 4
    assert _channel(viewer, act) == want[0]
    widget.strongest_table.cellClicked.emit(2, 0)
    assert _channel(viewer, act) == want[2]


def test_region_ranking_from_shapes_fills_the_table(setup, qtbot):
    viewer, widget, act = setup
    viewer.add_shapes(
        [np.array([[20, 24], [20, 47], [39, 47], [39, 24]])], shape_type="rectangle", name="Region"
    )
    widget.region_combo.setCurrentText("Region")
    widget.rank_region()
    _wait(qtbot, widget)
    mask = np.zeros((64, 72), bool)
    mask[20:40, 24:48] = True
    want = na.rank_channels(act.data, region=mask)
    np.testing.assert_array_equal(widget.ranking["channel"], want["channel"])
    table = widget.region_table
    headers = [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())]
    assert headers == ["channel", "inside", "outside", "ratio"]
    assert table.rowCount() == 16
    assert _channel(viewer, act) == want["channel"][0]
    table.cellClicked.emit(5, 1)
    assert _channel(viewer, act) == want["channel"][5]


def test_region_from_labels_painted_on_a_channel(setup, qtbot):
    viewer, widget, act = setup
    labels = np.zeros((16, 64, 72), np.uint8)  # as napari's "new labels" button makes it,
    labels[3, 10:20, 10:30] = 1  # with the activation layer's axis labels
    viewer.add_labels(labels, name="Painted", axis_labels=act.axis_labels)
    widget.region_combo.setCurrentText("Painted")
    widget.rank_region()
    _wait(qtbot, widget)
    assert widget.ranking is not None and len(widget.ranking) == 16
    assert widget.ranking["inside"][0] == pytest.approx(
        np.asarray(act.data)[widget.ranking["channel"][0], 10:20, 10:30].mean(), rel=1e-4
    )


def test_compare_shows_both_images_side_by_side_with_a_difference(setup, qtbot, image):
    viewer, widget, act = setup
    covered = image.copy()
    covered[20:40, 24:48] = 128
    viewer.add_image(covered, name="Covered", rgb=True)
    viewer.add_shapes(
        [np.array([[20, 24], [20, 47], [39, 47], [39, 24]])], shape_type="rectangle", name="Region"
    )
    widget.set_ticked_images(["Image", "Covered"])
    assert [i.name for i in widget.ticked_images()] == ["Image", "Covered"]
    widget.compare_layer_combo.setCurrentText(LAYER)
    widget.compare_region_combo.setCurrentText("Region")
    widget.compare()
    _wait(qtbot, widget)
    diff = viewer.layers[f"Image − Covered: {LAYER}"]
    second = viewer.layers[f"Covered: {LAYER}"]
    assert viewer.canvas.grid.enabled and viewer.canvas.grid.stride == 2
    names = [layer.name for layer in viewer.layers]
    assert names[:5] == ["Image", act.name, "Covered", second.name, diff.name]
    a, b = np.asarray(act.data), np.asarray(second.data)
    np.testing.assert_allclose(np.asarray(diff.data), a - b, atol=1e-3)
    # The difference says which weights made it, in the activation layers' words.
    from napari_activations._analysis_layers import layer_metadata

    assert layer_metadata(diff)["weights"] == layer_metadata(act)["weights"]
    mask = np.zeros((64, 72), bool)
    mask[20:40, 24:48] = True
    want = na.rank_channels(act.data, region=mask, other=second.data)
    np.testing.assert_array_equal(widget.comparison_ranking["channel"], want["channel"])
    top = int(want["channel"][0])
    # one channel slider for all compared layers
    assert _channel(viewer, act) == _channel(viewer, second) == _channel(viewer, diff) == top
    widget.compare_table.cellClicked.emit(1, 0)
    assert _channel(viewer, second) == int(want["channel"][1])


def test_compare_needs_two_images(setup, monkeypatch):
    from _robustness import assert_error_notified, record_notifications

    viewer, widget, _ = setup
    notifications = record_notifications(monkeypatch)
    n_layers = len(viewer.layers)
    widget.set_ticked_images(["Image"])
    widget.compare()  # shows an error, starts nothing
    assert_error_notified(notifications, "Tick two or more image layers to compare")
    assert widget.worker is None
    assert len(viewer.layers) == n_layers


def test_compare_order_is_the_users_and_survives_new_layers(setup, image):
    viewer, widget, _ = setup
    viewer.add_image(image[::-1].copy(), name="Flipped", rgb=True)
    widget.set_ticked_images(["Flipped", "Image"])
    viewer.add_image(image, name="Another", rgb=True)
    assert [i.name for i in widget.ticked_images()] == ["Flipped", "Image"]
    assert widget.images_list.item(widget.images_list.count() - 1).text() == "Another"


def test_probe_plots_every_channel_at_the_clicked_pixel(setup):
    viewer, widget, act = setup
    widget.on_viewer_click(act.data_to_world((0, 30, 40)))
    want = na.probe(act.data, 30, 40)
    np.testing.assert_allclose(widget.probed, want)
    assert widget.probe_plot.labelled == [c for c, _ in na.top_channels(want, 5)]
    assert "(30, 40)" in widget.probe_label.text()
    widget.probe_plot.channel_clicked.emit(7)
    assert _channel(viewer, act) == 7
    widget.on_viewer_click((0, 500, 500))  # off the image: nothing changes
    np.testing.assert_allclose(widget.probed, want)


def test_probe_follows_the_mouse_while_hovering(setup, qtbot):
    """Mouse moves on napari's canvas probe the pixel under the cursor, once ticked."""
    viewer, widget, act = setup
    viewer.reset_view()
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    w, h = scene.size

    def hover(x: float, y: float) -> tuple[int, int]:
        """Moves the mouse to canvas pixel (x, y); returns the image pixel under it."""
        scene.events.mouse_move(pos=(x, y), modifiers=(), button=None)
        qtbot.wait(30)  # napari throttles mouse moves (5 ms)
        _, row, col = np.round(act.world_to_data(viewer.cursor.position)).astype(int)
        assert 0 <= row < 64 and 0 <= col < 72, (row, col)  # over the image
        return row, col

    hover(w / 2, h / 2)
    assert widget.probed is None  # a click probes; hovering only once ticked
    widget.hover_check.setChecked(True)
    pixels = [hover(w / 2, h / 2), hover(w / 2 + 0.2 * w, h / 2 - 0.2 * h)]
    assert pixels[0] != pixels[1] and widget.probed is not None
    np.testing.assert_allclose(widget.probed, na.probe(act.data, *pixels[1]))
    assert f"({pixels[1][0]}, {pixels[1][1]})" in widget.probe_label.text()
    widget.hover_check.setChecked(False)
    hover(w / 2, h / 2)
    np.testing.assert_allclose(widget.probed, na.probe(act.data, *pixels[1]))


def test_network_table_lists_every_layer_and_a_row_chooses_it_for_run(setup, qtbot, random_net):
    from napari_activations._widget import ActivationsWidget

    viewer, widget, _ = setup
    main = ActivationsWidget(viewer, network=random_net)
    viewer.window.add_dock_widget(main, name="SqueezeNet activations")
    table = widget.network_table
    assert table.rowCount() == len(na.LAYERS)
    assert table.item(0, 0).text() == "conv1" and table.item(0, 1).text() == "31x35"
    row = na.layer_names().index("fire6-squeeze1x1")
    widget.choose_network_row(row)
    assert main.selected_layer().name == "fire6-squeeze1x1"
    assert widget.compare_layer_combo.currentText() == "fire6-squeeze1x1"


def test_classification_shows_five_classes(setup, qtbot):
    _, widget, _ = setup
    widget.classify()
    _wait(qtbot, widget)
    assert len(widget.classes) == 5
    assert len(widget.classes_label.text().splitlines()) == 5


def test_the_plane_shown_is_the_plane_analysed(make_napari_viewer):
    from napari_activations._analysis_widget import AnalysisWidget
    from napari_activations._layer_kinds import METADATA_KEY

    viewer = make_napari_viewer()
    acts = np.zeros((3, 2, 20, 24), np.float32)  # (C, Z, H, W), as a stack layer holds it
    acts[2, 0, 5, 5] = 9  # plane 0: channel 2 is strongest
    acts[1, 1, 7, 8] = 4  # plane 1: channel 1 is strongest
    act = viewer.add_image(
        acts, name="Stack: conv1", metadata={METADATA_KEY: {"layer": {"name": "conv1"}}}
    )
    widget = AnalysisWidget(viewer)
    assert widget.layer_combo.currentText() == act.name
    plane_axis = viewer.dims.ndim - 3
    for plane, channel, pixel in ((0, 2, (5, 5)), (1, 1, (7, 8))):
        viewer.dims.set_current_step(plane_axis, plane)
        widget.find_strongest()
        assert widget.strongest[0] == (channel, float(acts[channel, plane][pixel]))
        viewer.dims.set_current_step(plane_axis, plane)  # find_strongest moved the channel
        widget.on_viewer_click(act.data_to_world((0, plane) + pixel))
        np.testing.assert_array_equal(widget.probed, acts[:, plane][(slice(None),) + pixel])


def test_stacks_are_analysed_plane_by_plane(make_napari_viewer, random_net):
    from napari_activations._analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    stack = np.random.default_rng(1).integers(0, 255, (2, 48, 40), dtype=np.uint8)
    viewer.add_image(stack, name="Stack")
    act = na.show_activations(viewer, "Stack", LAYER, network=random_net)
    assert act.data.shape == (16, 2, 48, 40)  # (C, Z, H, W): Z stays under its slider
    widget = AnalysisWidget(viewer, network=random_net)
    plane_axis = viewer.dims.ndim - 3
    viewer.dims.set_current_step(plane_axis, 1)
    want = na.activations(random_net, stack[1], LAYER, resize=True)
    widget.find_strongest()
    rows, cols = want.native_interior()  # the border where zero padding shows is left out
    expected = na.strongest_channels(want.native[..., rows, cols], 5)
    assert [c for c, _ in widget.strongest] == [c for c, _ in expected]
    np.testing.assert_allclose(
        [v for _, v in widget.strongest], [v for _, v in expected], rtol=1e-5
    )
    widget.on_viewer_click(act.data_to_world((0, 1, 30, 20)))
    np.testing.assert_allclose(widget.probed, na.probe(want, 30, 20), rtol=1e-5, atol=1e-4)
    widget.show_montage()
    assert viewer.layers[f"{act.name} montage"].data.shape == na.montage(want.native).image.shape
