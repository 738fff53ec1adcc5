"""The layer table: names, order, channels and geometry, checked against REFERENCE.md and torch."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

import napari_activations as na
from napari_activations.layers import LAYERS, find_layer, minimum_input_size, output_size

# REFERENCE.md: blocks in network order; fire blocks with their (squeeze, expand) widths.
FIRES = {
    2: (16, 64),
    3: (16, 64),
    4: (32, 128),
    5: (32, 128),
    6: (48, 192),
    7: (48, 192),
    8: (64, 256),
    9: (64, 256),
}
FIRE_PARTS = [
    "squeeze1x1",
    "relu_squeeze1x1",
    "expand1x1",
    "relu_expand1x1",
    "expand3x3",
    "relu_expand3x3",
    "concat",
]
FIRE_MODULES = [
    "squeeze",
    "squeeze_activation",
    "expand1x1",
    "expand1x1_activation",
    "expand3x3",
    "expand3x3_activation",
    None,
]
FEATURE_INDEX = {2: 3, 3: 4, 4: 6, 5: 7, 6: 9, 7: 10, 8: 11, 9: 12}


def _expected_table() -> list[tuple[str, str, int]]:
    """(name, torchvision module, channels) of every layer, written out from REFERENCE.md."""
    rows = [
        ("conv1", "features.0", 64),
        ("relu_conv1", "features.1", 64),
        ("pool1", "features.2", 64),
    ]
    for n, (sq, ex) in FIRES.items():
        m = f"features.{FEATURE_INDEX[n]}"
        widths = [sq, sq, ex, ex, ex, ex, 2 * ex]
        for part, sub, ch in zip(FIRE_PARTS, FIRE_MODULES, widths, strict=False):
            rows.append((f"fire{n}-{part}", m if sub is None else f"{m}.{sub}", ch))
        if n == 3:
            rows.append(("pool3", "features.5", 128))
        if n == 5:
            rows.append(("pool5", "features.8", 256))
    rows += [
        ("drop9", "classifier.0", 512),
        ("conv10", "classifier.1", 1000),
        ("relu_conv10", "classifier.2", 1000),
        ("pool10", "classifier.3", 1000),
        ("prob", "softmax", 1000),
    ]
    return rows


def test_table_has_every_reference_layer_in_network_order():
    expected = _expected_table()
    assert [(i.name, i.module, i.channels) for i in LAYERS] == expected
    assert len(LAYERS) == 3 + 8 * 7 + 2 + 5
    assert na.layer_names() == [name for name, _, _ in expected]
    assert [info.index for info in LAYERS] == list(range(len(LAYERS)))


def _expected_geometry(name: str) -> tuple[int, int] | None:
    """(S, O) per REFERENCE.md: (2, 1) conv1; (4, 3) pool1..fire3; (8, 7) ..fire5; (16, 15) on."""
    if name in ("pool10", "prob"):
        return None
    if name in ("conv1", "relu_conv1"):
        return 2, 1
    if name == "pool1" or name.startswith(("fire2", "fire3")):
        return 4, 3
    if name == "pool3" or name.startswith(("fire4", "fire5")):
        return 8, 7
    return 16, 15


@pytest.mark.parametrize("info", LAYERS, ids=lambda i: i.name)
def test_stride_and_offset_follow_the_reference(info):
    expected = _expected_geometry(info.name)
    if expected is None:
        assert info.is_global
        assert (info.stride, info.offset, info.receptive_field) == (None, None, None)
    else:
        assert not info.is_global
        assert (info.stride, info.offset) == expected


def test_after_relu_marks_exactly_the_values_that_cannot_be_negative():
    pre = {"conv1", "conv10"} | {
        f"fire{n}-{p}" for n in FIRES for p in ("squeeze1x1", "expand1x1", "expand3x3")
    }
    assert {i.name for i in LAYERS if not i.after_relu} == pre


@pytest.mark.parametrize(
    "name",
    [
        "fire6-squeeze1x1",
        "features.9.squeeze",
        "FIRE6-Squeeze1x1",
        "fire6_squeeze1x1",
        " fire6-squeeze1x1 ",
    ],
)
def test_layers_are_found_by_either_name(name):
    info = find_layer(name)
    assert (info.name, info.module) == ("fire6-squeeze1x1", "features.9.squeeze")
    assert find_layer(info) is info


def test_every_layer_is_found_by_its_module_path():
    for info in LAYERS:
        assert find_layer(info.module) is info
        assert find_layer(info.name) is info


@pytest.mark.parametrize(
    "wrong, close",
    [
        ("fire6-squeze1x1", "fire6-squeeze1x1"),
        ("conv_1", "conv1"),
        ("fire9-concatenate", "fire9-concat"),
    ],
)
def test_unknown_name_lists_close_names(wrong, close):
    with pytest.raises(na.UnknownLayerError) as err:
        find_layer(wrong)
    message = str(err.value)
    assert repr(wrong) in message
    assert repr(close) in message
    # Both a KeyError (lookup) and a ValueError (bad argument) to callers.
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


def test_unknown_name_without_close_match_says_where_to_look():
    with pytest.raises(na.UnknownLayerError, match="conv1.*prob"):
        find_layer("zzzzzzzzzzzz")
    with pytest.raises(na.UnknownLayerError, match="string"):
        find_layer(6)


# --- geometry against torch -------------------------------------------------------------


def _linear_model(seed: int = 0) -> nn.Module:
    """SqueezeNet with positive weights, no ReLU and average instead of max pools.

    Every input pixel in a receptive field then moves the output, so the gradient's support
    is the receptive field itself.
    """
    from torchvision.models import squeezenet1_1

    torch.manual_seed(seed)
    model = squeezenet1_1(weights=None).eval()
    for p in model.parameters():
        p.requires_grad_(False)
        p.copy_(p.abs() + 0.01)
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(
                    parent,
                    name,
                    nn.AvgPool2d(child.kernel_size, child.stride, ceil_mode=child.ceil_mode),
                )
    return model


def _record(model: nn.Module, names) -> tuple[dict, list]:
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        module = model.get_submodule(find_layer(name).module)
        handles.append(
            module.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o))
        )
    return out, handles


@pytest.fixture
def one_thread():
    """Small tensors gain nothing from threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_receptive_field_and_centre_match_the_gradient_support(one_thread):
    """Activation pixel i sees a receptive_field-wide window centred on input pixel O + S*i."""
    model = _linear_model()
    spatial = [i for i in LAYERS if not i.is_global and not i.module.startswith("classifier")]
    out, handles = _record(model, [i.name for i in spatial])
    n = 240
    x = torch.ones(1, 3, n, n, requires_grad=True)
    try:
        model.features(x)
    finally:
        for h in handles:
            h.remove()
    for info in spatial:
        S, O, R = info.stride, info.offset, info.receptive_field
        # the first activation pixel whose receptive field lies inside the image
        i = max(0, -int(-((R - 1) / 2 - O) // S))
        assert O + S * i + (R - 1) / 2 < n, info.name
        (g,) = torch.autograd.grad(out[info.name][0, :, i, i].sum(), x, retain_graph=True)
        rows = torch.nonzero(g[0].abs().sum(dim=(0, 2)))[:, 0]
        cols = torch.nonzero(g[0].abs().sum(dim=(0, 1)))[:, 0]
        for support in (rows, cols):
            first, last = int(support[0]), int(support[-1])
            assert last - first + 1 == R, info.name
            assert (first + last) / 2 == O + S * i, info.name
    # the numbers themselves, for the reader: conv1 sees 3x3, fire9 sees 207x207
    assert find_layer("conv1").receptive_field == 3
    assert find_layer("fire9-concat").receptive_field == 207


SIZES = [(n, n) for n in range(1, 72)] + [(227, 227), (101, 67), (64, 300), (513, 250)]


def test_output_size_and_minimum_size_agree_with_torch(random_net, one_thread):
    names = [i.name for i in LAYERS if i.name != "prob"]
    model = copy.deepcopy(random_net.model)
    out, handles = _record(model, names)
    minimum = {name: minimum_input_size(name) for name in names}
    try:
        for h, w in SIZES:
            out.clear()
            # contextlib.suppress: an input too small for some layer
            with torch.inference_mode(), contextlib.suppress(RuntimeError):
                model(torch.zeros(1, 3, h, w))
            for name in names:
                expected = tuple(out[name].shape[-2:]) if name in out else (0, 0)
                if 0 in expected:
                    expected = (0, 0)
                assert output_size(name, h, w) == expected, (name, h, w)
                if h == w:
                    assert (expected != (0, 0)) == (h >= minimum[name]), (name, h)
    finally:
        for handle in handles:
            handle.remove()
    assert output_size("prob", 227, 227) == (1, 1)
    assert minimum_input_size("prob") == minimum_input_size("fire9-concat")
    assert minimum_input_size("conv1") == 3


def test_network_exposes_the_table(random_net):
    assert random_net.layers is LAYERS


def test_layer_table_needs_no_torch():
    """The widget fills its menus from the table before any network is loaded."""
    import subprocess
    import sys

    code = (
        "import sys, napari_activations as na\n"
        "assert len(na.LAYERS) == 66 and na.find_layer('features.9.squeeze').channels == 48\n"
        "assert na.output_size('fire9-concat', 227, 227) == (14, 14)\n"
        "assert na.minimum_input_size('prob') > 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
