"""Alignment: activation pixel i of a layer lands over input pixel O + S*i, not a plain stretch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_activations as na
from napari_activations.layers import find_layer, output_size

# One layer per stride class of REFERENCE.md: (S, O) = (2, 1), (4, 3), (8, 7), (16, 15).
STRIDE_CLASSES = ["conv1", "pool1", "pool3", "pool5"]
H, W = 227, 190


def _centroid_1d(profile: np.ndarray) -> float:
    return float((profile * np.arange(profile.size)).sum() / profile.sum())


def _one_hot_positions(layer: str, scale: float = 1.0):
    """Align a one-hot native map for every interior native pixel; yield (i, j, aligned)."""
    info = find_layer(layer)
    h, w = output_size(info, round(H * scale), round(W * scale))
    for i, j in [(1, 1), (h // 2, w // 3), (h - 2, w - 2)]:
        native = np.zeros((1, h, w), dtype=np.float32)
        native[0, i, j] = 1.0
        yield info, i, j, na.align(native, info, (H, W), (scale, scale))[0]


@pytest.mark.parametrize("layer", STRIDE_CLASSES)
def test_one_hot_lands_over_the_input_pixel_it_looks_at(layer):
    for info, i, j, aligned in _one_hot_positions(layer):
        S, O = info.stride, info.offset
        peak = np.unravel_index(aligned.argmax(), aligned.shape)
        assert peak == (O + S * i, O + S * j), (layer, i, j)
        assert aligned.max() == 1.0
        # the bilinear tent is centred there too, to well within half a pixel
        assert abs(_centroid_1d(aligned.sum(axis=1)) - (O + S * i)) < 0.5
        assert abs(_centroid_1d(aligned.sum(axis=0)) - (O + S * j)) < 0.5


@pytest.mark.parametrize("scale", [0.5, 0.8, 2.0])
@pytest.mark.parametrize("layer", STRIDE_CLASSES)
def test_one_hot_lands_right_when_the_network_saw_a_scaled_image(layer, scale):
    """Network pixel x sits over image pixel (x + 0.5) / scale - 0.5."""
    for info, i, j, aligned in _one_hot_positions(layer, scale):
        S, O = info.stride, info.offset
        want_r = (O + S * i + 0.5) / scale - 0.5
        want_c = (O + S * j + 0.5) / scale - 0.5
        assert abs(_centroid_1d(aligned.sum(axis=1)) - want_r) < 0.5, (layer, scale, i)
        assert abs(_centroid_1d(aligned.sum(axis=0)) - want_c) < 0.5, (layer, scale, j)


@pytest.mark.parametrize("layer", STRIDE_CLASSES)
def test_edges_are_held(layer):
    info = find_layer(layer)
    S, O = info.stride, int(info.offset)
    h, w = output_size(info, H, W)
    rng = np.random.default_rng(0)
    native = rng.normal(size=(2, h, w)).astype(np.float32)
    aligned = na.align(native, info, (H, W))
    last_r, last_c = O + S * (h - 1), O + S * (w - 1)
    # before the first and after the last activation pixel: that pixel's value, unchanged
    np.testing.assert_array_equal(aligned[:, : O + 1, O], np.repeat(native[:, :1, 0], O + 1, 1))
    np.testing.assert_array_equal(
        aligned[:, last_r:, last_c], np.repeat(native[:, -1:, -1], H - last_r, 1)
    )
    # and on the grid points themselves, the activation values exactly
    np.testing.assert_array_equal(aligned[:, O::S, O::S][:, :h, :w], native)
    assert aligned.min() >= native.min() and aligned.max() <= native.max()


@pytest.mark.parametrize("layer", [*STRIDE_CLASSES, "fire9-concat"])
def test_whole_planes_equal_the_pixel_by_pixel_gather(layer):
    """The whole-plane kernel (``align_periodic``) gives the gather's
    numbers, on an image whose far edges end between activation pixels."""
    info = find_layer(layer)
    h, w = output_size(info, H, W)
    native = np.random.default_rng(1).normal(size=(2, 3, h, w)).astype(np.float32)
    whole = na.align(native, info, (H, W))
    gathered = na.align(native, info, (H, W), rows=np.arange(H))
    assert whole.shape == (2, 3, H, W)
    np.testing.assert_allclose(whole, gathered, rtol=0, atol=1e-6 * np.abs(native).max())


@pytest.mark.parametrize(
    "layer, min_error", [("pool3", 2.0), ("pool5", 4.0), ("fire9-concat", 4.0)]
)
def test_a_plain_stretch_misplaces_deep_layers(layer, min_error):
    """Why the alignment exists: imresize-style stretching puts pixel i in the wrong place."""
    from skimage.transform import resize

    info = find_layer(layer)
    worst = 0.0
    for _, i, _, aligned in _one_hot_positions(layer):
        native = np.zeros(output_size(info, H, W), dtype=np.float32)
        native[i, :] = 1.0
        stretched = resize(native, (H, W), order=1, mode="edge", anti_aliasing=False)
        truth = info.offset + info.stride * i
        assert abs(_centroid_1d(aligned.sum(axis=1)) - truth) < 0.5
        worst = max(worst, abs(_centroid_1d(stretched[:, 0]) - truth))
    assert worst > min_error


def test_global_layers_are_constant_over_the_image():
    info = find_layer("pool10")
    native = np.arange(1000, dtype=np.float32).reshape(1000, 1, 1)
    aligned = na.align(native[:5], info, (40, 30))
    assert aligned.shape == (5, 40, 30)
    np.testing.assert_array_equal(aligned, np.broadcast_to(native[:5], (5, 40, 30)))


# --- end to end: a network whose responses are symmetric ------------------------------


@pytest.fixture(scope="module")
def symmetric_net(random_net) -> na.Network:
    """SqueezeNet whose every convolution averages its inputs (positive, symmetric kernels).

    Its response to a symmetric spot is symmetric about the spot wherever the layer's grid is,
    so the aligned maps must peak exactly on the spot.
    """
    from torchvision.models import squeezenet1_1

    model = squeezenet1_1(weights=None).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                m.bias.zero_()
    return na.Network(
        model=model,
        weights="symmetric test weights",
        trained=False,
        categories=random_net.categories,
        device=torch.device("cpu"),
    )


def _spot_image(rows: list[int], cols: list[int], size: int = 260) -> np.ndarray:
    """Float RGB at exactly the ImageNet mean (normalised to 0) with a white spot."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    image[np.ix_(rows, cols)] = 1.0
    return image


@pytest.mark.parametrize(
    "layer",
    [
        "conv1",
        "pool1",
        "fire3-concat",
        "pool3",
        "fire5-concat",
        "pool5",
        "fire9-concat",
        "relu_conv10",
    ],
)
def test_deep_layers_line_up_with_the_image(symmetric_net, layer):
    info = find_layer(layer)
    S, O = info.stride, int(info.offset)
    p = O + S * ((130 - O) // S)  # a grid point near the middle
    image = _spot_image([p], [p])
    A = na.activations(symmetric_net, image, layer, resize=True, intensity_range=(0, 1))
    a = A[0]
    assert a.max() > 0
    top = np.argwhere(a == a.max())
    assert (top.min(0) <= p).all() and (top.max(0) >= p).all(), (top.min(0), top.max(0))
    profile = a.sum(axis=1)
    assert abs(_centroid_1d(profile) - p) < 0.5
    assert abs(_centroid_1d(a.sum(axis=0)) - p) < 0.5


@pytest.mark.parametrize("layer", ["conv1", "pool3", "fire6-concat"])
def test_deep_layers_line_up_at_half_input_scale(symmetric_net, layer):
    """A 2x2 spot on image pixels 2m, 2m+1 is one network pixel m at input_scale=0.5."""
    info = find_layer(layer)
    S, O = info.stride, int(info.offset)
    m = O + S * ((65 - O) // S)
    image = _spot_image([2 * m, 2 * m + 1], [2 * m, 2 * m + 1])
    A = na.activations(
        symmetric_net, image, layer, resize=True, input_scale=0.5, intensity_range=(0, 1)
    )
    a = A[0]
    assert A.shape[-2:] == image.shape[:2]
    assert abs(_centroid_1d(a.sum(axis=1)) - (2 * m + 0.5)) < 0.5
    assert abs(_centroid_1d(a.sum(axis=0)) - (2 * m + 0.5)) < 0.5
    np.testing.assert_allclose(a[2 * m], a[2 * m + 1], rtol=1e-5, atol=1e-6)
