"""Export of activation layers in a real viewer, and what the widget remembers across launches.

The files are read back by ome-zarr's reader and opened in napari by napari-ome-zarr, and must
land where the activation layer is in world coordinates. napari's settings go to the test
run's own folder ($NAPARI_CONFIG, set in conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import napari_activations as na
from napari_activations._plugin_settings import (
    EXPORT_FOLDER,
    NETWORK,
    WEIGHTS_FILE,
    remember,
    remembered,
)

pytestmark = pytest.mark.gui

WIDGET = ("napari-activations", "SqueezeNet activations")


@pytest.fixture(scope="module", autouse=True)
def _network_before_any_viewer(random_net):
    return random_net


@pytest.fixture(autouse=True)
def _forget():
    """Each test starts, and leaves, with nothing remembered."""
    for key in (WEIGHTS_FILE, EXPORT_FOLDER, NETWORK):
        remember(key, "")
    yield
    for key in (WEIGHTS_FILE, EXPORT_FOLDER, NETWORK):
        remember(key, "")


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def placed(viewer, random_net):
    """An activation layer over an image with its own pixel size and origin."""
    img = np.random.default_rng(7).integers(0, 256, (60, 80), dtype=np.uint8)
    viewer.add_image(img, name="cells", scale=(0.5, 2.0), translate=(10.0, -4.0))
    return na.show_activations(viewer, "cells", "fire2-squeeze1x1", network=random_net)


def _ome_transform(path):
    """(scale, translation) of an OME-Zarr image, read by ome-zarr's reader."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node,) = list(Reader(parse_url(str(path)))())
    (transforms,) = node.metadata["coordinateTransformations"]
    by_type = {t["type"]: t for t in transforms}
    return np.array(by_type["scale"]["scale"]), np.array(by_type["translation"]["translation"])


def test_layer_export_lands_where_the_layer_is(viewer, placed, tmp_path):
    aligned, native = na.export_activation_layer(placed, tmp_path, ("aligned", "native"))
    assert (aligned.name, native.name) == (
        "cells_fire2-squeeze1x1.ome.zarr",
        "cells_fire2-squeeze1x1_native.ome.zarr",
    )
    stack = placed.data  # (C, H, W) for a 2D image

    # ome-zarr's reader: the aligned image has the layer's own scale and translation
    scale, translation = _ome_transform(aligned)
    np.testing.assert_allclose(scale, placed.scale)
    np.testing.assert_allclose(translation, placed.translate)
    # native pixel (i, j) lands on the world point of aligned pixel (O + S*i, O + S*j)
    scale, translation = _ome_transform(native)
    S, O = 4, 3  # fire2-squeeze1x1
    for i, j in [(0, 0), (4, 7), (13, 18)]:
        world = translation[1:] + scale[1:] * (i, j)
        np.testing.assert_allclose(world, placed.data_to_world((3, O + S * i, O + S * j))[1:])

    # napari-ome-zarr opens them in napari, one layer per channel, with the same values and
    # pixel sizes (napari-ome-zarr 0.10 with napari 0.9 drops the translation of images it
    # splits by channel: it hands napari an Affine object that split_channels does not repeat)
    from napari.components import ViewerModel

    model = ViewerModel()  # napari's own open path, without drawing 2 x 16 layers
    opened = model.open(aligned, plugin="napari-ome-zarr")
    assert len(opened) == stack.shape[0]
    np.testing.assert_array_equal(np.asarray(opened[5].data), np.asarray(stack[5]))
    np.testing.assert_allclose(opened[5].scale, placed.scale[1:])
    opened = model.open(native, plugin="napari-ome-zarr")
    np.testing.assert_array_equal(
        np.asarray(opened[3].data),
        stack.stack.native[3] if hasattr(stack, "stack") else stack.native[3],
    )
    np.testing.assert_allclose(opened[3].scale, np.multiply(placed.scale[1:], S))
    for i, j in [(0, 0), (4, 7), (13, 13)]:
        np.testing.assert_allclose(
            np.asarray(opened[3].data)[i, j], np.asarray(stack[3])[O + S * i, O + S * j], rtol=1e-6
        )


def test_stack_layer_export_keeps_the_plane_axis(viewer, random_net, tmp_path):
    import zarr

    planes = np.random.default_rng(8).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    viewer.add_image(planes, name="stack", scale=(5.0, 1.0, 1.0))
    layer = na.show_activations(viewer, "stack", "conv1", network=random_net)
    (path,) = na.export_activation_layer(layer, tmp_path)
    group = zarr.open_group(str(path), mode="r")
    ome = group.attrs.asdict()["ome"]["multiscales"][0]
    assert [a["name"] for a in ome["axes"]] == ["c", "z", "y", "x"]
    assert ome["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 5.0, 1.0, 1.0]
    np.testing.assert_array_equal(group["0"][:], np.asarray(layer.data))  # (C, Z, H, W)
    meta = group.attrs.asdict()["napari_activations"]
    assert meta["napari_layer"] == "stack: conv1" and meta["layer"]["name"] == "conv1"
    assert meta["network"] == "SqueezeNet v1.1" and meta["geometry"]["stride"] == 2
    assert meta["weights"]["trained"] is False and "std" in meta["normalisation"]


def test_only_activation_layers_are_exported(viewer, placed, tmp_path):
    with pytest.raises(na.ExportError, match="not an activation layer"):
        na.export_activation_layer(viewer.layers["cells"], tmp_path)
    points = viewer.add_points([[1, 2]])
    with pytest.raises(na.ExportError, match="not an activation layer"):
        na.export_activation_layer(points, tmp_path)
    assert os.listdir(tmp_path) == []


def test_existing_files_are_refused_before_anything_is_written(placed, tmp_path):
    (tmp_path / "cells_fire2-squeeze1x1_native.ome.zarr").mkdir()
    with pytest.raises(na.ExportError, match="exists already"):
        na.export_activation_layer(placed, tmp_path, ("aligned", "native"))
    assert os.listdir(tmp_path) == ["cells_fire2-squeeze1x1_native.ome.zarr"]


def _row(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    return widget, widget.export_row


def test_export_button_saves_the_selected_layer_and_remembers_the_folder(
    viewer, placed, tmp_path, qtbot, monkeypatch, notifications
):
    from qtpy.QtWidgets import QFileDialog

    starts = []

    def choose(parent, caption, start):
        starts.append(start)
        return str(tmp_path)

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", choose)
    widget, row = _row(viewer)
    viewer.layers.selection.active = placed
    row.kind_combo.setCurrentText("both")
    row.button.click()
    qtbot.waitUntil(lambda: not row.busy, timeout=60_000)
    assert sorted(os.listdir(tmp_path)) == [
        "cells_fire2-squeeze1x1.ome.zarr",
        "cells_fire2-squeeze1x1_native.ome.zarr",
    ]
    assert any("Saved" in m for _, m in notifications)
    assert remembered(EXPORT_FOLDER) == str(tmp_path)
    assert row.button.text() == "Export…"

    # the same export again: refused, in plain words, and the files are kept
    row.button.click()
    qtbot.waitUntil(lambda: not row.busy, timeout=60_000)
    errors = [m for s, m in notifications if "error" in s.lower()]
    assert errors and "exists already" in errors[-1]
    assert starts[1] == str(tmp_path)  # the second dialog opened where the first saved


def test_export_button_on_an_image_says_what_to_select(viewer, placed, monkeypatch, notifications):
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", lambda *a: pytest.fail("no folder should be asked for")
    )
    widget, row = _row(viewer)
    viewer.layers.selection.active = viewer.layers["cells"]
    row.button.click()
    errors = [m for s, m in notifications if "error" in s.lower()]
    assert errors and "not an activation layer" in errors[-1]
    viewer.layers.selection.clear()
    row.button.click()
    errors = [m for s, m in notifications if "error" in s.lower()]
    assert "Select an activation layer" in errors[-1]


def test_export_can_be_cancelled(viewer, placed, tmp_path, qtbot, monkeypatch):
    import napari_activations._export_widget as export_widget

    widget, row = _row(viewer)
    real = export_widget.iter_export_activation_layer

    def slow(*args, **kwargs):  # many small blocks, so that there is time to cancel
        return real(*args, **kwargs, memory_budget=20_000)

    monkeypatch.setattr(export_widget, "iter_export_activation_layer", slow)
    row.export(placed, str(tmp_path))
    with qtbot.waitSignal(row.worker.yielded, timeout=30_000):  # writing has begun
        pass
    row.button.click()  # "Cancel export"
    qtbot.waitUntil(lambda: not row.busy, timeout=30_000)
    assert os.listdir(tmp_path) == []


def test_weights_file_is_remembered_for_the_next_launch(viewer, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    weights = tmp_path / "my_squeezenet.pth"
    weights.write_bytes(b"not read in this test")
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", lambda *a: (str(weights), "PyTorch weights (*.pth *.pt)")
    )
    widget, _ = _row(viewer)
    widget.choose_weights_file()
    assert remembered(WEIGHTS_FILE) == str(weights)

    # the next launch of napari reads it from the settings file
    env = dict(os.environ)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from napari_activations._plugin_settings import remembered;"
            f"print(remembered({WEIGHTS_FILE!r}))",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == str(weights)

    from napari_activations._widget import ActivationsWidget

    again = ActivationsWidget(viewer)  # as a fresh widget at the next launch
    assert again.weights_choice.weights == str(weights)
    assert weights.name in again.weights_label.text()
    again.weights_choice.use_named_weights("torchvision")
    assert remembered(WEIGHTS_FILE) == ""
    remember(WEIGHTS_FILE, str(weights))
    again.weights_choice.default_button.click()
    assert remembered(WEIGHTS_FILE) == ""
    assert ActivationsWidget(viewer).weights_choice.weights == "DEFAULT"
    weights.unlink()
    remember(WEIGHTS_FILE, str(weights))  # a file that has gone: the default, not an error
    assert ActivationsWidget(viewer).weights_choice.weights == "DEFAULT"


def test_a_sheared_layer_keeps_its_shear_in_the_metadata(placed, tmp_path):
    import zarr

    placed.shear = [0.0, 0.0, 0.25]  # (C, H, W): rows sheared into columns
    with pytest.warns(UserWarning, match="OME-Zarr keeps only its scale and translation"):
        (path,) = na.export_activation_layer(placed, tmp_path)
    meta = zarr.open_group(str(path), mode="r").attrs.asdict()["napari_activations"]
    assert meta["napari_transform"]["shear"] == [0.0, 0.0, 0.25]


def test_a_second_export_waits_and_closing_mid_export_breaks_nothing(
    viewer, placed, tmp_path, qtbot, monkeypatch, notifications
):
    """A second export while one runs is refused plainly; closing the widget mid-export stops
    it, removes the half-written image and raises nothing (its row is gone)."""
    import napari_activations._export_widget as export_widget

    widget, row = _row(viewer)
    real = export_widget.iter_export_activation_layer

    def slow(*args, **kwargs):  # many small blocks, so that the export is still running
        return real(*args, **kwargs, memory_budget=20_000)

    monkeypatch.setattr(export_widget, "iter_export_activation_layer", slow)
    row.export(placed, str(tmp_path))
    first = row.worker
    with qtbot.waitSignal(first.yielded, timeout=30_000):  # writing has begun
        pass
    row.export(placed, str(tmp_path / "second"))
    assert row.worker is first
    assert ("error", "An export is running: wait for it, or cancel it, first.") in notifications
    viewer.window.remove_dock_widget(widget)
    widget.deleteLater()
    qtbot.waitUntil(lambda: not first.is_running, timeout=30_000)
    qtbot.wait(100)
    assert os.listdir(tmp_path) == []
    assert not [n for n in notifications if n[0] == "error" and "export is running" not in n[1]]
