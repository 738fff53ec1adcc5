"""Export to OME-Zarr (no viewer): values, placement and metadata read back by real readers,
streaming in bounded blocks, and bad targets."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import napari_activations as na
from napari_activations import export as export_module
from napari_activations.alignment import AlignedActivations, axis_map


def read_ome(path):
    """(data, axes names, scale, translation, napari_activations attribute) via ome-zarr."""
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node,) = list(Reader(parse_url(str(path)))())
    (transforms,) = node.metadata["coordinateTransformations"]
    by_type = {t["type"]: t for t in transforms}
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    return (
        np.asarray(node.data[0]),
        [a["name"] for a in node.metadata["axes"]],
        by_type["scale"]["scale"],
        by_type["translation"]["translation"],
        attrs["napari_activations"],
    )


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def stack(random_net, image):
    return na.activations(random_net, image, "fire3-concat", resize=True)


def test_aligned_stack_reads_back_equal_with_its_placement_and_metadata(
    tmp_path, random_net, stack
):
    path = na.export_activations(
        stack, tmp_path / "a.ome.zarr", scale=(0.5, 2.0), translate=(10.0, -4.0), network=random_net
    )
    data, axes, scale, translation, meta = read_ome(path)
    assert axes == ["c", "y", "x"]
    np.testing.assert_array_equal(data, np.asarray(stack))
    assert scale == [1.0, 0.5, 2.0] and translation == [0.0, 10.0, -4.0]
    assert meta["layer"]["name"] == "fire3-concat"
    assert meta["geometry"] == {
        "stride": 4,
        "offset": 3.0,
        "receptive_field": 23,
        "aligned": True,
        "note": "",
        "source": "table",
        "native_shape": list(stack.native.shape),
    }
    assert meta["input_scale"] == [1.0, 1.0]
    assert meta["weights"]["trained"] is False
    assert meta["normalisation"]["mean"] == list(random_net.mean)
    assert meta["export"]["kind"] == "aligned"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def test_native_maps_sit_over_the_image_pixels_they_came_from(tmp_path, stack):
    path = na.export_activations(
        stack, tmp_path / "n.ome.zarr", kind="native", scale=(0.5, 2.0), translate=(10.0, -4.0)
    )
    data, axes, scale, translation, meta = read_ome(path)
    np.testing.assert_array_equal(data, stack.native)
    # activation pixel i is over image pixel O + S*i = 3 + 4i, in world units
    assert scale == [1.0, 0.5 * 4, 2.0 * 4]
    assert translation == [0.0, 10.0 + 0.5 * 3, -4.0 + 2.0 * 3]
    on_grid = np.asarray(stack)[:, 3::4, 3::4]  # the image pixels under activation pixels
    h, w = on_grid.shape[1:]
    np.testing.assert_allclose(on_grid, data[:, :h, :w], rtol=1e-6, atol=1e-6)
    assert meta["export"]["kind"] == "native"


def test_native_placement_with_an_input_scale(random_net, image, tmp_path):
    stack = na.activations(random_net, image, "fire5-concat", resize=True, input_scale=0.7)
    path = na.export_activations(stack, tmp_path / "n.ome.zarr", kind="native")
    _, _, scale, translation, meta = read_ome(path)
    assert meta["input_scale"] == list(stack.scale)
    for axis in (1, 2):
        n_img, n_act = stack.image_shape[axis - 1], stack.native.shape[axis]
        world = translation[axis] + scale[axis] * np.arange(n_act)  # image pixel coordinates
        # the alignment's own interpolation table puts activation pixel i exactly there
        m = axis_map(n_img, n_act, stack.layer, stack.scale[axis - 1], index=world)
        np.testing.assert_allclose(m.lo + m.w, np.arange(n_act), atol=1e-5)


def test_global_layer_pixel_covers_the_image(random_net, image, tmp_path):
    stack = na.activations(random_net, image, "pool10", resize=True)
    path = na.export_activations(stack, tmp_path / "g.ome.zarr", kind="native")
    data, _, scale, translation, _ = read_ome(path)
    assert data.shape == (1000, 1, 1)
    assert scale[1:] == [70.0, 90.0] and translation[1:] == [34.5, 44.5]


def test_stack_axes_follow_ome_zarr_order(random_net, tmp_path):
    planes = np.random.default_rng(4).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    stack = na.activations(random_net, planes, "conv1", resize=True)  # lazy (Z, C, H, W)
    path = na.export_activations(stack, tmp_path / "z.ome.zarr", scale=(3.0, 1.0, 1.0))
    data, axes, scale, _, _ = read_ome(path)
    assert axes == ["c", "z", "y", "x"] and scale == [1.0, 3.0, 1.0, 1.0]
    np.testing.assert_array_equal(data, np.moveaxis(np.asarray(stack), 0, 1))
    path = na.export_activations(stack, tmp_path / "t.ome.zarr", lead_axes=("t",))
    data, axes, _, _, _ = read_ome(path)
    assert axes == ["t", "c", "y", "x"]
    np.testing.assert_array_equal(data, np.asarray(stack))


def test_lazy_stack_streams_in_blocks_within_the_budget(random_net, monkeypatch, tmp_path):
    planes = np.random.default_rng(5).integers(0, 256, (3, 96, 128), dtype=np.uint8)
    stack = na.activations(random_net, planes, "fire2-squeeze1x1", resize=True)
    expected = np.moveaxis(np.asarray(stack), 0, 1)
    stack = na.activations(random_net, planes, "fire2-squeeze1x1", resize=True)
    passes_before = stack.native.forward_passes

    def refuse(*args, **kwargs):
        raise AssertionError("the whole stack was materialised")

    blocks = []
    real_align = export_module.align

    def counting_align(native, *args, **kwargs):
        out = real_align(native, *args, **kwargs)
        blocks.append(out.nbytes)
        return out

    monkeypatch.setattr(AlignedActivations, "__array__", refuse)
    monkeypatch.setattr(export_module, "align", counting_align)
    budget = 400_000  # bytes; the whole stack is 3 x 16 x 96 x 128 x 4 = 2.4 MB
    path = na.export_activations(stack, tmp_path / "s.ome.zarr", memory_budget=budget)
    monkeypatch.undo()
    assert len(blocks) == 3 * 8 and max(blocks) <= budget // 4  # 2 channels of 49 kB a block
    assert sum(blocks) == expected.nbytes  # every value computed once
    assert stack.native.forward_passes - passes_before == 2  # plane 0 was computed already
    np.testing.assert_array_equal(read_ome(path)[0], expected)


def test_big_planes_are_cut_into_row_bands(random_net, tmp_path):
    img = np.random.default_rng(6).integers(0, 256, (300, 40), dtype=np.uint8)
    stack = na.activations(random_net, img, "fire2-squeeze1x1", resize=True)
    # a quarter of the budget holds 150 rows of one channel: the gather path, in row bands
    path = na.export_activations(stack, tmp_path / "b.ome.zarr", memory_budget=4 * 40 * 4 * 150)
    np.testing.assert_allclose(read_ome(path)[0], np.asarray(stack), rtol=1e-6, atol=1e-6)


def test_cancelling_leaves_nothing(stack, tmp_path):
    gen = na.iter_export_activations(stack, tmp_path / "c.ome.zarr", memory_budget=100_000)
    for _ in range(3):
        next(gen)
    gen.close()
    assert os.listdir(tmp_path) == []


def test_existing_target_is_refused_and_kept(stack, tmp_path):
    target = tmp_path / "a.ome.zarr"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(na.ExportError, match="exists already"):
        na.export_activations(stack, target)
    with pytest.raises(na.ExportError, match="not a Zarr store"):
        na.export_activations(stack, target, overwrite=True)
    assert (target / "mine.txt").read_text() == "keep me"
    na.export_activations(stack, tmp_path / "b.ome.zarr")
    na.export_activations(stack, tmp_path / "b.ome.zarr", kind="native", overwrite=True)
    assert read_ome(tmp_path / "b.ome.zarr")[4]["export"]["kind"] == "native"


def test_missing_and_unwritable_folders(stack, tmp_path):
    with pytest.raises(na.ExportError, match="does not exist"):
        na.export_activations(stack, tmp_path / "nowhere" / "a.ome.zarr")
    (tmp_path / "file").write_text("")
    with pytest.raises(na.ExportError, match="does not exist"):
        na.export_activations(stack, tmp_path / "file" / "a.ome.zarr")
    if not sys.platform.startswith("linux"):
        return
    # sysfs refuses new folders even to root
    with pytest.raises(na.ExportError, match="Cannot write in '/sys'"):
        na.export_activations(stack, "/sys/a.ome.zarr")


def test_wrong_arguments_say_what_to_do(random_net, image, stack, tmp_path):
    native = na.activations(random_net, image, "conv1")
    with pytest.raises(na.ExportError, match="resize=True"):
        na.export_activations(native, tmp_path / "a.ome.zarr")
    with pytest.raises(na.ExportError, match="kind must be one of"):
        na.export_activations(stack, tmp_path / "a.ome.zarr", kind="both")
    with pytest.raises(na.ExportError, match="2 values"):
        na.export_activations(stack, tmp_path / "a.ome.zarr", scale=(1.0, 1.0, 1.0))
    with pytest.raises(na.ExportError, match="positive"):
        na.export_activations(stack, tmp_path / "a.ome.zarr", scale=(0.0, 1.0))
    deep = AlignedActivations(np.zeros((2, 2, 2, 3, 4, 4), np.float32), stack.layer, (8, 8))
    with pytest.raises(na.ExportError, match="at most 5 axes"):
        na.export_activations(deep, tmp_path / "a.ome.zarr")
    assert os.listdir(tmp_path) == []
