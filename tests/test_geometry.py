"""Geometry derived from the torch.fx graph, checked against the gradients' support.

The oracle for SqueezeNet v1.1 is the hand-checked table in ``layers.py``; for every other
network it is the measurement: in a copy with identity activations, average pools and positive
weights, ``d(activation pixel i) / d(input)`` is non-zero exactly on the derived support.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torch.nn import functional as F

import napari_activations as na
from napari_activations.geometry import (
    AxisSupport,
    GeometryError,
    check_geometry,
    derive_geometry,
    measure_geometry,
)
from napari_activations.layers import LAYERS


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors gain nothing from threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _by_name(model: nn.Module, **kwargs) -> dict:
    return {row.name: row for row in derive_geometry(model, **kwargs)}


# --- SqueezeNet: the hand-checked table is the oracle ----------------------------------------


def test_squeezenet_derived_table_equals_the_hand_checked_one():
    rows = _by_name(tvm.squeezenet1_1(weights=None))
    compared = 0
    for info in LAYERS:
        if info.name == "prob":  # torchvision's SqueezeNet ends before the softmax
            continue
        row = rows[info.module if info.module in rows else info.module + ".cat"]
        assert (row.channels, row.after_relu, row.is_global) == (
            info.channels,
            info.after_relu,
            info.is_global,
        ), info.name
        if info.is_global:
            assert (row.stride, row.offset, row.receptive_field) == (None, None, None)
        else:
            assert row.stride == (info.stride, info.stride), info.name
            assert row.offset == (info.offset, info.offset), info.name
            assert row.receptive_field == (info.receptive_field,) * 2, info.name
        assert row.aligned and row.source == "traced"
        compared += 1
    assert compared == len(LAYERS) - 1


def test_node_names_are_those_of_torchvision_feature_extraction():
    from torchvision.models.feature_extraction import get_graph_node_names

    model = tvm.resnet18(weights=None)
    names = [row.name for row in derive_geometry(model)]
    _, eval_nodes = get_graph_node_names(model)
    assert names == [n for n in eval_nodes if n != "x"]
    assert "layer3.1.relu_1" in names


# --- every node of every network: derived == measured ----------------------------------------


class UNet(nn.Module):
    """A small U-Net: two poolings down, two transposed convolutions up, skips by concat."""

    def __init__(self, c: int = 4):
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1),
                nn.BatchNorm2d(o),
                nn.ReLU(),
                nn.Conv2d(o, o, 3, padding=1),
                nn.ReLU(),
            )

        self.enc1, self.enc2, self.bottom = block(1, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = block(4 * c, 2 * c)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec1 = block(2 * c, c)
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([e2, self.up2(b)], dim=1))
        d1 = self.dec1(torch.cat([e1, self.up1(d2)], dim=1))
        return self.head(d1)


class Upsampling(nn.Module):
    """Strided convolutions, nearest, bilinear and pixel-shuffle upsampling (to S = 1/2), and
    a strided convolution back to S = 1, which sees only some phases of the upsampled grid."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(8, 8, 3, stride=2)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.last = nn.Conv2d(2, 2, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.down2(self.down(x))
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = self.conv(y)
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.last(self.shuffle(y))


def _build(name: str) -> nn.Module:
    if name == "unet":
        return UNet()
    if name == "upsampling":
        return Upsampling()
    kwargs = (
        {"aux_logits": False, "init_weights": False}
        if name in ("googlenet", "inception_v3")
        else {}
    )
    return getattr(tvm, name)(weights=None, **kwargs)


# Every node of these is checked in every run. Of the others, to keep the run short, a sample
# of the nodes whose receptive field fits in MAX_SAMPLED_RF pixels (the first of each kind of
# operation and a few through that depth): the deep nodes' supports span hundreds to
# thousands of pixels and cost seconds each. NAPARI_ACTIVATIONS_GEOMETRY_ALL_NODES=1 checks
# every node of every network (many minutes on one core).
EVERY_NODE = ["squeezenet1_1", "resnet18", "unet", "upsampling"]
SAMPLED = [
    "alexnet",
    "vgg16",
    "resnet50",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "regnet_y_400mf",
]
ALL_NODES = os.environ.get("NAPARI_ACTIVATIONS_GEOMETRY_ALL_NODES") == "1"
MAX_SAMPLED_RF = 160


def _sample(rows) -> list[str]:
    local = [r for r in rows if r.support is not None and max(r.receptive_field) <= MAX_SAMPLED_RF]
    picks, seen = [], set()
    for r in local:
        if r.op not in seen:
            seen.add(r.op)
            picks.append(r.name)
    picks += [r.name for r in local[len(local) // 4 :: max(1, len(local) // 4)]]
    # and the first node that sees differently along rows and columns (Inception's 1x7)
    picks += [
        r.name
        for r in rows
        if r.support is not None and r.receptive_field[0] != r.receptive_field[1]
    ][:1]
    return list(dict.fromkeys(picks + [local[-1].name]))


@pytest.mark.parametrize(
    "name", EVERY_NODE + [pytest.param(n, marks=pytest.mark.slow) for n in SAMPLED]
)
def test_derived_support_is_the_measured_one(name):
    model = _build(name)
    rows = derive_geometry(model, input_size=(128, 128))
    local = [r for r in rows if r.support is not None]
    assert local and all(r.source == "traced" for r in rows)
    assert all(r.aligned for r in rows if not r.note.startswith("adaptive pooling"))
    nodes = None if name in EVERY_NODE or ALL_NODES else _sample(rows)
    assert check_geometry(model, nodes) == []
    # a classifier's last spatial node is coarse; a U-Net's output is back at stride 1
    if name in ("unet", "upsampling"):
        assert local[-1].stride == (1.0, 1.0)
    else:
        assert local[-1].stride[0] >= 16
        assert rows[-1].is_global


def test_check_geometry_finds_a_wrong_derivation(monkeypatch):
    """The check can fail: with a transposed convolution's padding ignored, it does."""
    from napari_activations import geometry

    original = geometry._transposed_taps
    monkeypatch.setattr(geometry, "_transposed_taps", lambda k, s, p, d: original(k, s, 0, d))
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1)
    )
    mismatches = check_geometry(model)
    assert mismatches and {m.name for m in mismatches} == {"1"}


# --- what the numbers mean -------------------------------------------------------------------


def test_unet_decoder_returns_to_stride_one_through_half_strides():
    rows = _by_name(UNet(), input_size=(64, 64))
    assert rows["enc1.4"].stride == (1.0, 1.0) and rows["enc1.4"].offset == (0.0, 0.0)
    assert rows["pool"].stride == (2.0, 2.0) and rows["pool"].offset == (0.5, 0.5)
    assert rows["pool_1"].stride == (4.0, 4.0) and rows["pool_1"].offset == (1.5, 1.5)
    # each transposed 2x2/2 convolution halves S; its outputs sit a quarter pixel either side
    assert rows["up2"].stride == (2.0, 2.0) and rows["up2"].offset == (0.5, 0.5)
    assert rows["up1"].stride == (1.0, 1.0) and rows["up1"].offset == (0.0, 0.0)
    assert rows["cat"].aligned and rows["cat_1"].aligned
    head = rows["head"]
    assert head.stride == (1.0, 1.0) and head.offset == (0.0, 0.0) and head.aligned
    assert head.channels == 2 and not head.after_relu


def test_fractional_strides_are_exact_per_phase():
    rows = _by_name(Upsampling(), input_size=(64, 64))
    up = rows["interpolate"]  # nearest x2 after a total stride of 4
    assert up.stride == (2.0, 2.0)
    sup = up.support[0]
    assert sup.period == 2 and sup.step == 4
    # pixels 2k and 2k+1 both copy pixel k of the stride-4 layer
    assert sup.first(0) == sup.first(1) and sup.first(2) == sup.first(0) + 4


def test_branches_that_disagree_are_not_aligned():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 2, stride=2)  # O = 0.5
            self.b = nn.Conv2d(3, 4, 3, stride=2, padding=1)  # O = 0
            self.c = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.c(self.a(x) + self.b(x))

    rows = _by_name(Shifted(), input_size=(32, 32))
    assert rows["a"].aligned and rows["b"].aligned
    assert not rows["add"].aligned and "O=1/2" in rows["add"].note
    assert not rows["c"].aligned
    # still a true statement about which pixels each activation pixel sees
    assert check_geometry(Shifted()) == []


def test_global_nodes_and_squeeze_excitation():
    rows = _by_name(tvm.mobilenet_v3_small(weights=None), input_size=(64, 64))
    assert rows["avgpool"].is_global and rows["flatten"].is_global
    assert rows["classifier.3"].is_global and rows["classifier.3"].channels == 1000
    assert rows["avgpool"].aligned and rows["avgpool"].stride is None
    # the first block has a squeeze-and-excitation gate computed from the whole image
    assert not rows["features.0"].global_context
    assert rows["features.1.block.1"].global_context
    assert rows["features.1.block.1"].stride == rows["features.1.block.0"].stride


def test_adaptive_pool_to_a_grid_is_not_aligned():
    rows = _by_name(tvm.alexnet(weights=None), input_size=(128, 128))
    assert not rows["avgpool"].aligned and "input size" in rows["avgpool"].note
    assert rows["flatten"].is_global
    assert rows["features.12"].stride == (32.0, 32.0)


def test_channels_last_nodes_keep_their_geometry():
    rows = _by_name(tvm.convnext_tiny(weights=None), input_size=(64, 64))
    permuted = rows["features.1.0.block.1"]  # (N, H, W, C) after torchvision's Permute
    assert permuted.dims == (1, 2) and permuted.channels == 96
    assert permuted.stride == rows["features.1.0.block.0"].stride == (4.0, 4.0)


# --- measured geometry: the fallback and the public check ------------------------------------


def test_measure_geometry_finds_the_derived_values_from_gradients_alone():
    model = tvm.squeezenet1_1(weights=None)
    measured = measure_geometry(model, "features.5")
    derived = _by_name(model)["features.5"]
    assert measured.source == "measured"
    assert (measured.stride, measured.offset, measured.receptive_field, measured.channels) == (
        derived.stride,
        derived.offset,
        derived.receptive_field,
        derived.channels,
    )


def test_measure_geometry_finds_a_half_stride():
    measured = measure_geometry(UNet(), "up2")
    assert measured.stride == (2.0, 2.0)
    measured = measure_geometry(UNet(), "up1")
    derived = _by_name(UNet(), input_size=(64, 64))["up1"]
    assert (measured.stride, measured.offset, measured.receptive_field) == (
        derived.stride,
        derived.offset,
        derived.receptive_field,
    )


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.pool(torch.relu(self.conv(x)))
        if y.mean() > 1e9:  # never true, but fx cannot know
            y = y * 2
        return self.head(y)


def test_untraceable_model_falls_back_to_hooks_and_measurement():
    rows = derive_geometry(Untraceable(), input_size=(64, 64))
    assert [r.name for r in rows] == ["conv", "pool", "head"]
    assert all(r.source == "measured" for r in rows)
    by = {r.name: r for r in rows}
    # the same layers as SqueezeNet's conv1 / pool1, then a padded 3x3
    assert by["conv"].stride == (2.0, 2.0) and by["conv"].offset == (1.0, 1.0)
    assert by["pool"].stride == (4.0, 4.0) and by["pool"].offset == (3.0, 3.0)
    assert by["pool"].receptive_field == (7.0, 7.0)
    assert by["head"].receptive_field == (15.0, 15.0) and by["head"].channels == 4


def test_untraceable_model_without_fallback_says_what_to_do():
    with pytest.raises(GeometryError, match="cannot trace.*fallback=True"):
        derive_geometry(Untraceable(), fallback=False)


def test_bad_input_is_a_plain_message():
    model = tvm.resnet18(weights=None)
    with pytest.raises(GeometryError, match="no node 'layer9'"):
        measure_geometry(model, "layer9")
    with pytest.raises(GeometryError, match="cannot run on a 5-channel.*in_channels="):
        derive_geometry(model, in_channels=5)
    with pytest.raises(GeometryError, match="no node named 'nope'"):
        check_geometry(model, ["nope"])


def test_the_model_is_left_as_it_was():
    model = tvm.resnet18(weights=None).train()
    model.layer1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    derive_geometry(model, input_size=(64, 64))
    check_geometry(model, ["layer1.0.conv1"])
    measure_geometry(model, "maxpool")
    assert model.training and not model.layer1.training and model.layer2.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


def test_axis_support_stride_offset_and_field():
    a = AxisSupport.identity().gather(lambda j: [2 * j + t for t in range(3)], 1, 2)
    assert (a.stride, a.offset, a.receptive_field) == (2, 1, 3)
    up = a.gather(lambda j: [j // 2], 2, 1)
    assert up.stride == 1 and up.period == 2
    assert up.offset == 0.5 and up.receptive_field == 4


# --- the public API --------------------------------------------------------------------------


def test_lazy_api_exposes_geometry_without_importing_torch():
    code = (
        "import sys, napari_activations as na\n"
        "assert {'derive_geometry', 'measure_geometry', 'check_geometry', 'NodeGeometry',"
        " 'GeometryError'} <= set(dir(na))\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert na.derive_geometry is derive_geometry and na.measure_geometry is measure_geometry


class _RuntimeNormalisedShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return F.layer_norm(y, y.shape[1:])  # normalized_shape computed while tracing


def test_a_call_no_rule_can_read_is_a_plain_geometry_error():
    """A rule that cannot read a call's arguments (here layer_norm's shape, a graph node)
    says which node and what to do, instead of a raw TypeError."""
    with pytest.raises(na.GeometryError, match=r"at node 'layer_norm' \(layer_norm\).*measure"):
        na.derive_geometry(_RuntimeNormalisedShape(), input_size=(32, 32))
