"""n single-channel image layers as the input channels of a network that takes n channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import napari_activations as na
from napari_activations._napari_layers import LayerInputError


class FiveChannels(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(5, 4, 3, stride=2, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


@pytest.fixture(scope="module")
def five():
    return na.load_network(FiveChannels(), device="cpu")


def _layers(viewer, n):
    rng = np.random.default_rng(2)
    data = (rng.random((n, 40, 48)) * 1000).astype(np.uint16)
    names = [f"c{i}" for i in range(n)]
    layers = viewer.add_image(data, channel_axis=0, name=names)
    for i, layer in enumerate(layers):
        layer.contrast_limits = (10.0 * i, 900.0 - 50 * i)
    return data, names, layers


@pytest.mark.gui
def test_five_channel_layers_are_the_networks_five_channels(make_napari_viewer, five):
    viewer = make_napari_viewer()
    data, names, layers = _layers(viewer, 5)
    out = na.show_activations(viewer, names, five.find_layer("relu"), network=five)
    # what the network saw: each layer scaled by its own contrast limits, in order
    planes = np.stack(
        [
            np.clip((d.astype(np.float32) - lo) / (hi - lo), 0, 1)
            for d, (lo, hi) in zip(data, [tuple(x.contrast_limits) for x in layers], strict=True)
        ],
        axis=-1,
    )
    want = na.activations(
        five, planes, "relu", intensity_range=(0.0, 1.0), channel_axis=-1, resize=True
    )
    np.testing.assert_allclose(np.asarray(out.data), np.asarray(want), atol=1e-6)
    np.testing.assert_array_equal(layers[0].data, data[0])  # the user's layers untouched


@pytest.mark.gui
def test_the_wrong_number_of_channel_layers_says_how_many(make_napari_viewer, five):
    viewer = make_napari_viewer()
    _, names, _ = _layers(viewer, 3)
    with pytest.raises(
        LayerInputError, match="takes 5 input channels.*choose one image layer, or 5"
    ):
        na.show_activations(viewer, names, five.find_layer("relu"), network=five)
    assert len(viewer.layers) == 3
