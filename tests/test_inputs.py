"""Inputs that are not RGB: networks of 1 or n input channels, n planes stacked on one axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import napari_activations as na


class Net(nn.Module):
    """Two convolutions, the second with stride 2, on ``c`` input channels."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x)))


@pytest.fixture(scope="module")
def net5() -> na.Network:
    torch.manual_seed(0)
    return na.load_network(Net(5), device="cpu", mean=(0.5,) * 5, std=(0.25,) * 5)


def _planes(n: int, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _expected(net: na.Network, planes: np.ndarray) -> np.ndarray:
    """The documented input convention written again: uint8 / 255, (x - mean) / std."""
    x = planes.astype(np.float64) / 255.0
    mean = np.reshape(net.mean, (-1, 1, 1))
    std = np.reshape(net.std, (-1, 1, 1))
    x = torch.from_numpy(((x - mean) / std).astype(np.float32))[None]
    with torch.inference_mode():
        return net.model(x)[0].numpy()


def test_n_planes_stacked_on_any_axis_feed_the_n_channels(net5):
    planes = _planes(5)
    want = _expected(net5, planes)
    first = na.activations(net5, planes, "conv2", channel_axis=0, backend="torch")
    np.testing.assert_allclose(first, want, rtol=0, atol=1e-5)
    last = np.moveaxis(planes, 0, -1).copy()
    got = na.activations(net5, last, "conv2", channel_axis=-1, backend="torch")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the order of the channels matters: the network sees them as given
    swapped = na.activations(net5, planes[::-1], "conv2", channel_axis=0, backend="torch")
    assert not np.allclose(swapped, want, atol=1e-3)


def test_a_stack_of_n_channel_images_and_its_aligned_result(net5):
    stack = np.stack([_planes(5, seed=1), _planes(5, seed=2)])  # (T, C, H, W)
    before = stack.copy()
    out = na.activations(net5, stack, "conv2", channel_axis=1, resize=True, backend="torch")
    assert out.shape == (2, 4, 40, 48)
    native = na.activations(net5, stack[1], "conv2", channel_axis=0, backend="torch")
    np.testing.assert_allclose(
        np.asarray(out[1]),
        np.asarray(na.align(native, net5.find_layer("conv2"), (40, 48))),
        atol=1e-6,
    )
    np.testing.assert_array_equal(stack, before)  # the caller's image is untouched


def test_a_dask_image_with_a_channel_axis(net5):
    da = pytest.importorskip("dask.array")
    planes = _planes(5)
    lazy = na.activations(net5, da.from_array(planes, chunks=(5, 20, 24)), "conv1", channel_axis=0)
    np.testing.assert_allclose(
        np.asarray(lazy), na.activations(net5, planes, "conv1", channel_axis=0), atol=1e-5
    )


def test_gray_feeds_every_channel(net5):
    gray = _planes(1)[0]
    got = na.activations(net5, gray, "conv2", backend="torch")
    np.testing.assert_allclose(got, _expected(net5, np.repeat(gray[None], 5, 0)), atol=1e-5)


def test_a_one_channel_network_takes_gray_as_it_is():
    torch.manual_seed(1)
    net = na.load_network(Net(1), device="cpu")
    gray = _planes(1)[0]
    got = na.activations(net, gray, "conv2", backend="torch")
    np.testing.assert_allclose(got, _expected(net, gray[None]), atol=1e-5)
    with pytest.raises(na.ImageError, match=r"takes 1 input channel; this image has 3 \(RGB\)"):
        na.activations(net, np.zeros((40, 40, 3), np.uint8), "conv2")


def test_a_five_channel_network_given_rgb_says_so(net5):
    rgb = np.zeros((40, 48, 3), np.uint8)
    with pytest.raises(na.ImageError, match=r"takes 5 input channels; this image has 3 \(RGB\)"):
        na.activations(net5, rgb, "conv2")
    with pytest.raises(na.ImageError, match="channel_axis"):
        na.activations(net5, rgb, "conv2")


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (_planes(4), {"channel_axis": 0}, "takes 5 input channels; this image has 4 along"),
        (_planes(5), {"channel_axis": 3}, "channel_axis must be an axis of the image"),
        (_planes(5), {"channel_axis": 1.5}, "channel_axis must be an axis of the image"),
        (_planes(5)[:, 0], {"channel_axis": 0}, "needs \\(H, W\\) and a channel axis"),
        (_planes(3).transpose(1, 2, 0), {"channel_axis": -1, "rgb": True}, "not both"),
    ],
)
def test_bad_channel_axes_are_refused_plainly(net5, image, kwargs, message):
    with pytest.raises(na.ImageError, match=message):
        na.activations(net5, image, "conv2", **kwargs)


def test_an_rgb_network_takes_rgb_through_channel_axis_too():
    net = na.load_squeezenet(None, device="cpu")
    rgb = np.random.default_rng(3).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    np.testing.assert_allclose(
        na.activations(net, rgb, "conv1", channel_axis=0, backend="torch"),
        na.activations(net, rgb.transpose(1, 2, 0), "conv1", backend="torch"),
        atol=1e-6,
    )
