"""Activations: shapes, input kinds, intensity scaling, exactness against torchvision, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import napari_activations as na
from napari_activations import alignment, compute
from napari_activations.alignment import align
from napari_activations.layers import LAYERS, find_layer, output_size

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A 72x96 RGB uint8 image with structure (gradients and noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:96]
    base = np.stack([yy * 3, xx * 2, (yy + xx) % 255], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


def _torchvision_reference(
    net: na.Network, rgb_float01: np.ndarray, names: list[str]
) -> dict[str, np.ndarray]:
    """Every requested layer from one full forward pass, with copying forward hooks."""
    model = copy.deepcopy(net.model)
    out: dict[str, np.ndarray] = {}
    handles = []
    for name in names:
        info = find_layer(name)
        if info.name == "prob":
            continue
        module = model.get_submodule(info.module)
        handles.append(
            module.register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, o[0].clone().numpy())
            )
        )
    x = (rgb_float01.astype(np.float32) - MEAN) / STD
    with torch.inference_mode():
        logits = model(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])
    for h in handles:
        h.remove()
    out["prob"] = torch.softmax(logits, 1)[0, :, None, None].numpy()
    return out


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding (the preprocessing may round differently)."""
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()) + 1e-7)


# --- shapes and input kinds ---------------------------------------------------------------


@pytest.mark.parametrize(
    "layer", ["conv1", "pool1", "fire6-squeeze1x1", "fire9-concat", "conv10", "pool10", "prob"]
)
def test_shape_is_channels_then_native_grid(random_net, rgb, layer):
    a = na.activations(random_net, rgb, layer)
    info = find_layer(layer)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert a.shape == (info.channels, *output_size(layer, 72, 96))
    assert np.isfinite(a).all()


def test_gray_is_the_gray_repeated_to_three_channels(random_net, rgb):
    gray = rgb[..., 1]
    a = na.activations(random_net, gray, "fire2-concat")
    assert a.shape == (128, *output_size("fire2-concat", 72, 96))
    np.testing.assert_array_equal(
        a, na.activations(random_net, np.repeat(gray[..., None], 3, axis=-1), "fire2-concat")
    )


def test_alpha_is_ignored(random_net, rgb):
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    expected = na.activations(random_net, rgb, "fire3-concat")
    np.testing.assert_array_equal(na.activations(random_net, rgba, "fire3-concat"), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_alpha_does_not_change_the_intensity_scaling(random_net, rgb, dtype):
    """An opaque alpha at the top of the dtype must not stretch the colours' own range."""
    colour = (
        (rgb.astype(np.float32) / 255 * 0.5) if dtype == np.float32 else rgb.astype(np.uint16) * 100
    )
    alpha = np.full(rgb.shape[:2] + (1,), 1.0 if dtype == np.float32 else 65535, dtype=dtype)
    rgba = np.concatenate([colour.astype(dtype), alpha], axis=-1)
    expected = na.activations(random_net, colour.astype(dtype), "conv1")
    np.testing.assert_array_equal(na.activations(random_net, rgba, "conv1"), expected)


def test_stacks_equal_per_plane_calls(random_net, rgb):
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 256, (2, 3, 40, 48), dtype=np.uint8)
    a = na.activations(random_net, stack, "pool3")
    assert a.shape == (2, 3, 128, *output_size("pool3", 40, 48))
    for idx in np.ndindex(2, 3):
        np.testing.assert_array_equal(a[idx], na.activations(random_net, stack[idx], "pool3"))

    colour = np.stack([rgb, rgb[::-1], 255 - rgb])
    a = na.activations(random_net, colour, "fire4-relu_squeeze1x1")
    assert a.shape == (3, 32, *output_size("fire4-relu_squeeze1x1", 72, 96))
    for t in range(3):
        np.testing.assert_array_equal(
            a[t], na.activations(random_net, colour[t], "fire4-relu_squeeze1x1")
        )


def test_rgb_override(random_net):
    small = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    # napari's rule: a 24x24 image with a last axis of 3 is a stack of 24 planes of 24x3
    assert not na.is_rgb(small.shape)
    assert na.activations(random_net, small, "conv1").shape == (24, 64, 11, 1)
    assert na.activations(random_net, small, "conv1", rgb=True).shape == (64, 11, 11)
    big = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert na.is_rgb(big.shape)
    assert na.activations(random_net, big, "conv1", rgb=False).shape == (40, 64, 19, 1)
    with pytest.raises(na.ImageError, match="last axis of 3"):
        na.activations(random_net, big[..., :2], "conv1", rgb=True)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64, bool]
)
def test_any_real_dtype(random_net, rgb, dtype):
    image = rgb[..., 0] > 128 if dtype is bool else rgb[..., 0].astype(dtype)
    a = na.activations(random_net, image, "fire2-squeeze1x1")
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert a.shape == (16, *output_size("fire2-squeeze1x1", 72, 96))


def test_non_uint8_images_are_scaled_by_their_own_range(random_net, rgb):
    """Any affine change of intensities (other than uint8) gives the same activations."""
    expected = na.activations(random_net, rgb, "fire2-concat")
    for image in (rgb.astype(np.float64) * 2.5 - 100, rgb.astype(np.int32) * 7 + 1000):
        # uint8 rgb spans 0..255 exactly, so its own range is the 0..255 scaling
        assert rgb.min() == 0 and rgb.max() == 255
        _close(na.activations(random_net, image, "fire2-concat"), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.uint16])
def test_scaling_is_not_rounded_at_the_image_precision(random_net, rgb, dtype):
    """A float16 (or integer) image gives what the same values as float64 give."""
    scale, offset = (0.7 / 255, 0.1) if dtype == np.float16 else (3, 1000)
    image = (rgb.astype(np.float64) * scale + offset).astype(dtype)
    _close(
        na.activations(random_net, image, "conv1"),
        na.activations(random_net, image.astype(np.float64), "conv1"),
    )


def test_intensity_range_maps_low_and_high_to_black_and_white(random_net, rgb):
    u8 = (rgb // 2).astype(np.uint8)  # 0..127: own range would stretch it, 0..255 does not
    expected = na.activations(random_net, u8, "fire3-concat")
    u16 = u8.astype(np.uint16) * 257
    _close(na.activations(random_net, u16, "fire3-concat", intensity_range=(0, 65535)), expected)
    f = u8.astype(np.float32) / 255 * 4 - 1  # -1..1 from 0..255
    _close(na.activations(random_net, f, "fire3-concat", intensity_range=(-1, 3)), expected)
    # without a range, the uint16 image would be stretched to its own min..max instead
    stretched = na.activations(random_net, u16, "fire3-concat")
    assert not np.allclose(stretched, expected, rtol=1e-3)


def test_intensity_range_clips_and_nan_counts_as_low(random_net, rgb):
    f = rgb.astype(np.float32)
    low_high = (50.0, 200.0)
    clipped = np.clip(f, *low_high)
    expected = na.activations(random_net, clipped, "conv1", intensity_range=low_high)
    _close(na.activations(random_net, f, "conv1", intensity_range=low_high), expected)
    with_nan = clipped.copy()
    with_nan[10:20, 10:20] = np.nan
    at_low = clipped.copy()
    at_low[10:20, 10:20] = low_high[0]
    _close(
        na.activations(random_net, with_nan, "conv1", intensity_range=low_high),
        na.activations(random_net, at_low, "conv1", intensity_range=low_high),
    )


@pytest.mark.parametrize("bad", [(1, 1), (2, 1), (0, np.inf), "ab", (1,)])
def test_bad_intensity_range_is_an_image_error(random_net, rgb, bad):
    with pytest.raises(na.ImageError, match="intensity_range"):
        na.activations(random_net, rgb, "conv1", intensity_range=bad)


def test_constant_image_gives_finite_activations(random_net):
    a = na.activations(random_net, np.full((40, 40), 7.0), "fire2-concat")
    assert np.isfinite(a).all()


def test_input_is_never_modified(random_net, rgb):
    images = [
        rgb,
        rgb[..., 0].astype(np.float32),
        rgb.astype(np.float32),
        np.concatenate([rgb, rgb[..., :1]], axis=-1).astype(np.float32),
        rgb.astype(np.float64),
        rgb[..., 0] > 100,
        rgb.astype(np.uint16),
    ]
    for image in images:
        before = image.copy()
        na.activations(random_net, image, "fire2-squeeze1x1")
        na.activations(random_net, image, "conv1", intensity_range=(10, 100), resize=True)
        np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_uint8_layouts_give_the_same_activations(random_net, rgb, backend):
    """Read-only, flipped (negative strides), sliced and channels-first-in-memory uint8
    images go through the same conversion as a plain C-contiguous copy, without warnings."""
    import warnings

    read_only = rgb.copy()
    read_only.flags.writeable = False
    flipped = rgb[::-1, ::-1]
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1)).transpose(1, 2, 0)  # (H, W, 3) view
    wide = np.concatenate([rgb, rgb], axis=1)[:, ::2]  # strided columns
    for image in (read_only, flipped, planar, wide):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = na.activations(random_net, image, "conv1", backend=backend)
        want = na.activations(random_net, np.ascontiguousarray(image), "conv1", backend=backend)
        np.testing.assert_array_equal(got, want)


# --- pre-ReLU values and exactness ------------------------------------------------------


def _relu_pairs() -> list[tuple[str, str]]:
    names = {i.name for i in LAYERS}
    pairs = []
    for info in LAYERS:
        if info.after_relu:
            continue
        block, _, part = info.name.rpartition("-")
        post = f"{block}-relu_{part}" if block else f"relu_{part}"
        assert post in names, info.name
        pairs.append((info.name, post))
    return pairs


def test_every_pre_relu_layer_has_a_post_relu_partner():
    assert len(_relu_pairs()) == 2 + 8 * 3


@pytest.mark.parametrize("pre, post", _relu_pairs())
def test_pre_relu_is_really_before_the_relu(random_net, rgb, pre, post):
    a = na.activations(random_net, rgb, pre)
    b = na.activations(random_net, rgb, post)
    assert (a < 0).any(), f"{pre} has no negative values: it is the post-ReLU map"
    assert (b >= 0).all()
    np.testing.assert_array_equal(np.maximum(a, 0), b)  # bit-exact


def test_after_relu_layers_are_never_negative(random_net, rgb):
    small = rgb[:40, :48]  # deep enough for every layer, cheap for all 45
    for info in LAYERS:
        if info.after_relu:
            assert na.activations(random_net, small, info).min() >= 0, info.name


SAMPLE = [
    "conv1",
    "relu_conv1",
    "pool1",
    "fire2-squeeze1x1",
    "fire3-expand3x3",
    "fire5-expand1x1",
    "fire6-squeeze1x1",
    "fire6-concat",
    "pool5",
    "fire9-concat",
    "drop9",
    "conv10",
    "relu_conv10",
    "pool10",
    "prob",
]


def test_equals_a_full_torchvision_forward_pass(random_net, rgb):
    reference = _torchvision_reference(random_net, rgb / 255.0, SAMPLE)
    for name in SAMPLE:
        _close(na.activations(random_net, rgb, name), reference[name])


def test_real_weights_equal_a_full_torchvision_forward_pass(real_net, face):
    names = ["conv1", "fire6-squeeze1x1", "fire6-concat", "conv10", "pool10", "prob"]
    reference = _torchvision_reference(real_net, face / 255.0, names)
    for name in names:
        _close(na.activations(real_net, face, name), reference[name])


def test_forward_stops_at_the_requested_layer(random_net, rgb):
    """The torch walk runs no module past the layer (hooks see torch's modules only)."""
    fire3 = random_net.model.features[4]
    watched = {
        "fire3": fire3,
        "fire3.squeeze": fire3.squeeze,
        "fire3.expand1x1": fire3.expand1x1,
        "fire3.expand3x3": fire3.expand3x3,
        "classifier": random_net.model.classifier,
    }
    called: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda m, i, name=name: called.append(name))
        for name, m in watched.items()
    ]
    try:
        na.activations(random_net, rgb, "fire2-concat", backend="torch")
        assert called == []
        na.activations(random_net, rgb, "fire3-squeeze1x1", backend="torch")
        assert called == ["fire3.squeeze"]  # and neither expand runs
        called.clear()
        na.activations(random_net, rgb, "fire3-concat", backend="torch")
        assert "classifier" not in called and "fire3.expand3x3" in called
    finally:
        for h in handles:
            h.remove()


def test_progress_is_reported_and_counts_to_the_end(random_net, rgb):
    stack = np.stack([rgb, rgb])
    gen = na.iter_activations(random_net, stack, "pool3")
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert steps[0].done == 0 and steps[-1].done == steps[-1].total
    assert [p.done for p in steps] == list(range(len(steps)))
    assert steps[-1].total > 0 and "pool3" in steps[-1].message
    np.testing.assert_array_equal(result, na.activations(random_net, stack, "pool3"))


def test_interleaved_and_concurrent_calls_do_not_mix_their_inputs(random_net):
    """Inputs share memory between calls of a thread; each result must still be its own."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(4)]
    expected = [na.activations(random_net, im, "fire3-concat") for im in images]
    gens = [na.iter_activations(random_net, im, "fire3-concat") for im in images]
    results: list = [None] * len(gens)
    while any(r is None for r in results):  # one step of each in turn, in one thread
        for k, gen in enumerate(gens):
            if results[k] is None:
                try:
                    next(gen)
                except StopIteration as stop:
                    results[k] = stop.value
    for got, want in zip(results, expected, strict=False):
        np.testing.assert_array_equal(got, want)
    with ThreadPoolExecutor(4) as pool:
        for got, want in zip(
            pool.map(lambda im: na.activations(random_net, im, "fire3-concat"), images * 2),
            expected * 2,
            strict=False,
        ):
            np.testing.assert_array_equal(got, want)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["conv1", "pool3", "fire9-concat", "prob"])
def test_too_small_image_names_the_minimum_size(random_net, layer):
    need = na.minimum_input_size(layer)
    with pytest.raises(na.ImageError) as err:
        na.activations(random_net, np.zeros((need - 1, 50)), layer)
    assert f"{need}x{need}" in str(err.value) and layer in str(err.value)
    assert na.activations(random_net, np.zeros((need, need)), layer).shape[-2:] != (0, 0)


def test_input_scale_that_shrinks_below_the_minimum_says_so(random_net):
    with pytest.raises(na.ImageError, match="input_scale=0.1"):
        na.activations(random_net, np.zeros((64, 64)), "fire9-concat", input_scale=0.1)


def test_complex_image_is_an_image_error(random_net):
    with pytest.raises(na.ImageError, match="complex"):
        na.activations(random_net, np.zeros((40, 40), dtype=np.complex64), "conv1")


@pytest.mark.parametrize(
    "image", [np.zeros((0, 40)), np.zeros(40), np.array(["a"] * 1600).reshape(40, 40)]
)
def test_unusable_images_are_image_errors(random_net, image):
    with pytest.raises(na.ImageError):
        na.activations(random_net, image, "conv1")


@pytest.mark.parametrize("scale", [0, -1, float("nan"), "2"])
def test_bad_input_scale_is_an_image_error(random_net, scale):
    with pytest.raises(na.ImageError, match="input_scale"):
        na.activations(random_net, np.zeros((40, 40)), "conv1", input_scale=scale)


def test_unknown_layer_lists_close_names(random_net, rgb):
    with pytest.raises(na.UnknownLayerError, match="fire6-squeeze1x1"):
        na.activations(random_net, rgb, "fire6-squeez1x1")


# --- resize and input_scale ---------------------------------------------------------------


def test_resize_gives_a_lazy_array_on_the_image_grid(random_net, rgb):
    native = na.activations(random_net, rgb, "fire4-concat")
    A = na.activations(random_net, rgb, "fire4-concat", resize=True)
    assert isinstance(A, na.AlignedActivations)
    assert A.shape == (256, 72, 96) and A.dtype == np.float32 and A.ndim == 3
    np.testing.assert_array_equal(A.native, native)
    full = np.asarray(A)
    assert full.shape == A.shape and full.dtype == np.float32
    np.testing.assert_array_equal(full, na.align(native, find_layer("fire4-concat"), (72, 96)))


KEYS = [
    5,
    -1,
    (3, 10),
    (3, 10, 20),
    (-2, -3, -4),
    slice(2, 9, 3),
    (Ellipsis, 7),
    (Ellipsis, slice(5, 20), slice(None, None, 3)),
    (1, Ellipsis),
    (slice(None), 0, 1),
    (np.int64(4), slice(60, 200)),
    (slice(0, 4), [0, 5, 71], slice(None)),
    (2, Ellipsis, 95),
    (None, 3),
    (),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_slices_equal_slices_of_the_full_array(random_net, rgb, key):
    A = na.activations(random_net, rgb, "pool3", resize=True)
    full = np.asarray(A)
    got = A[key]
    # Whole planes go through PyTorch's bilinear kernel, partial ones through a numpy gather:
    # the same interpolation, rounded differently in the last bits.
    np.testing.assert_allclose(got, full[key], rtol=1e-5, atol=1e-6 * np.abs(full).max())


@pytest.mark.parametrize(
    "key",
    [(1, 2), (1, 2, 5, 6), (Ellipsis, slice(3, 30, 4)), (0,), (-1, Ellipsis, -1, slice(None))],
    ids=repr,
)
def test_stack_slices_equal_slices_of_the_full_array(random_net, key):
    stack = np.random.default_rng(4).integers(0, 256, (3, 40, 50), dtype=np.uint8)
    A = na.activations(random_net, stack, "fire2-squeeze1x1", resize=True)
    assert A.shape == (3, 16, 40, 50) and len(A) == 3
    full = np.asarray(A)
    np.testing.assert_allclose(A[key], full[key], rtol=1e-5, atol=1e-6 * np.abs(full).max())


def test_lazy_stack_keeps_the_last_four_planes_looked_at(random_net, monkeypatch):
    """Planes are computed when read; where the stack does not fit in the cache, the four most
    recently read are kept (docs/scale.md), so going back and forth between neighbours costs
    nothing, and memory stays bounded."""
    monkeypatch.setattr(compute, "STACK_CACHE_BYTES", 0)  # room for no more than the four
    stack = np.random.default_rng(5).integers(0, 256, (6, 24, 28), dtype=np.uint8)
    A = na.activations(random_net, stack, "conv1", resize=True)
    native = A.native
    assert native.forward_passes == 1  # the first plane, for the layer's first view

    def read(plane: int) -> int:
        """Reads a plane; returns how many forward passes that took."""
        before = native.forward_passes
        value = np.asarray(A[plane])
        np.testing.assert_allclose(value, want[plane], rtol=1e-5, atol=1e-6)
        return native.forward_passes - before

    want = [np.asarray(na.activations(random_net, p, "conv1", resize=True)) for p in stack]
    assert [read(z) for z in range(6)] == [0, 1, 1, 1, 1, 1]  # now kept: 2, 3, 4, 5
    assert [read(5), read(2)] == [0, 0]  # 2 is now the most recent
    assert read(0) == 1  # evicts the least recently read: 3
    assert [read(2), read(4), read(3)] == [0, 0, 1]


def test_a_volume_of_one_channel_resizes_that_channel_once_per_plane(random_net, monkeypatch):
    """napari's 3D view reads one channel of every plane on each channel move: once each
    plane was computed, a move runs no forward pass (a stack that fits in the cache keeps
    every plane) and resizes that one channel of each plane, once."""
    stack = np.random.default_rng(6).integers(0, 256, (6, 24, 28), dtype=np.uint8)
    A = na.activations(random_net, stack, "conv1", resize=True)
    native = A.native
    want = np.asarray(A)  # every plane, computed once
    assert native.forward_passes == 6
    resized = []

    def counting_align(source, *args, **kwargs):
        resized.append(source.shape)
        return align(source, *args, **kwargs)

    monkeypatch.setattr(alignment, "align", counting_align)
    for c in (5, 17, 40):
        np.testing.assert_allclose(A[:, c], want[:, c], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(A[:, c : c + 1], want[:, c : c + 1], rtol=1e-5, atol=1e-6)
    assert native.forward_passes == 6
    h, w = native.shape[-2:]
    assert resized == [(6, h, w), (6, 1, h, w)] * 3
    every = np.asarray(native)
    for key in [(slice(None), 3), (slice(1, None), 3, slice(2, 5)), (4, -1), (slice(2, 2), 3)]:
        assert np.array_equal(native[key], every[key]) and native[key].shape == every[key].shape
    assert np.array_equal(native[:, [1, 2], 0], every[:, [1, 2], 0])


def test_out_of_range_index_is_an_index_error(random_net, rgb):
    A = na.activations(random_net, rgb, "conv1", resize=True)
    with pytest.raises(IndexError):
        A[0, 72]
    with pytest.raises(IndexError):
        A[0, 0, 0, 0]


@pytest.mark.parametrize("scale", [0.5, 0.75, 2.0])
def test_input_scale_keeps_the_output_on_the_original_grid(random_net, rgb, scale):
    A = na.activations(random_net, rgb, "fire3-concat", resize=True, input_scale=scale)
    h, w = round(72 * scale), round(96 * scale)
    assert A.shape == (128, 72, 96)
    assert A.native.shape == (128, *output_size("fire3-concat", h, w))
    assert A.scale == (h / 72, w / 96)
    native = na.activations(random_net, rgb, "fire3-concat", input_scale=scale)
    np.testing.assert_array_equal(native, A.native)


def test_input_scale_shows_the_network_a_resized_image(random_net, rgb):
    """Scaling by 2 equals computing on the image enlarged to twice its size."""
    import torch.nn.functional as F

    x = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))[None]
    big = F.interpolate(x, size=(144, 192), mode="bilinear", align_corners=False)
    big = big[0].numpy().transpose(1, 2, 0)
    _close(
        na.activations(random_net, rgb, "fire2-concat", input_scale=2.0),
        na.activations(random_net, big, "fire2-concat", intensity_range=(0, 255)),
    )


# --- classify -----------------------------------------------------------------------------


def test_classify_returns_sorted_top_k(random_net, rgb):
    top = na.classify(random_net, rgb, top=7)
    assert len(top) == 7
    names, probs = zip(*top, strict=False)
    assert all(n in random_net.categories for n in names) and len(set(names)) == 7
    assert list(probs) == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert len(na.classify(random_net, rgb, top=5000)) == 1000
    assert len(na.classify(random_net, rgb[..., 0], top=1)) == 1


def test_classify_uses_the_whole_image_at_227(random_net, rgb):
    """The top class is the argmax of prob for the image resized to 227x227."""
    import torch.nn.functional as F

    x = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))[None]
    big = F.interpolate(x, size=(227, 227), mode="bilinear", align_corners=False)
    big = big[0].numpy().transpose(1, 2, 0)
    prob = na.activations(random_net, big, "prob", intensity_range=(0, 255))[:, 0, 0]
    ((name, p),) = na.classify(random_net, rgb, top=1)
    assert name == random_net.categories[int(prob.argmax())]
    assert p == pytest.approx(float(prob.max()), rel=1e-4)


def test_classify_refuses_stacks(random_net, rgb):
    with pytest.raises(na.ImageError, match="one image"):
        na.classify(random_net, np.stack([rgb, rgb]))
