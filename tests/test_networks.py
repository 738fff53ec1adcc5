"""What holds for every network (issue 11, section 5), with random weights (``weights=None``).

Over every network of :func:`napari_activations.list_networks` and two small user models
(in-place ReLUs; a U-Net with transposed convolutions, see ``_models.py``), for a few
representative layers each (the first convolution, a merge half-way down, a ReLU with its
input, the last local layer, the last global layer):

- shifting the image by whole tile units shifts the interior activation pixels by whole pixels;
- ``relu(pre) == post`` exactly where a ReLU follows, on both backends, and the pre-ReLU layer
  has negative values (in-place ReLUs do not leak into it);
- tiled equals untiled within 1e-4 of the layer's maximum, global layers included (ResNet's
  ``fc`` from its tiled ``layer4``); layers that cannot be tiled (squeeze-and-excitation
  gates, no single grid) are computed in one pass instead;
- the lazy ``resize=True`` result indexes as numpy does;
- ONNX Runtime gives torch's values within 1e-5 of the layer's maximum;
- the caller's image is never changed.

Geometry derived from each graph is compared with the measured one in ``test_geometry.py``
(and for every node of every network by ``scripts/check_all_geometry.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _models import SmallCNN, SmallUNet

import napari_activations as na
from napari_activations import tiling
from napari_activations.backends import BackendFallbackWarning

NETWORKS = [*na.list_networks(), "module:SmallCNN", "module:SmallUNet"]
ROLES = ("first", "merge", "post", "channels_last", "last", "unaligned", "global")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from threads, and on a shared machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def networks():
    loaded: dict[str, na.Network] = {}

    def get(name: str) -> na.Network:
        if name not in loaded:
            if name == "module:SmallCNN":
                loaded[name] = na.load_network(SmallCNN(), weights=None)
            elif name == "module:SmallUNet":
                loaded[name] = na.load_network(SmallUNet(), weights=None)
            else:
                loaded[name] = na.load_network(name, weights=None, device="cpu")
        return loaded[name]

    return get


def representative(net: na.Network) -> dict[str, na.LayerInfo]:
    """The layers a network is tested at (roles without such a layer are left out)."""
    local = [r for r in net.layers if r.aligned and not r.is_global]
    convs = [r for r in local if "conv" in r.op.lower() or r.geometry_source == "table"]
    merges = [r for r in local if r.op in ("add", "cat") or r.name.endswith("-concat")]
    posts = [r for r in local if net.arch.pre_relu(r) is not None]
    picks = {"first": convs[0], "last": local[-1]}
    if merges:
        picks["merge"] = merges[len(merges) // 2]
    if posts:
        picks["post"] = posts[len(posts) // 2]
    # ConvNeXt's blocks run their LayerNorm and Linear layers channels-last
    last_dim = [r for r in local if r.op in ("Linear", "LayerNorm", "Permute")]
    if last_dim:
        picks["channels_last"] = last_dim[len(last_dim) // 2]
    # AlexNet's and VGG's adaptive pool to 6x6 / 7x7: no single grid, stretched
    unaligned = [r for r in net.layers if not r.aligned]
    if unaligned:
        picks["unaligned"] = unaligned[0]
    if net.layers[-1].is_global:
        picks["global"] = net.layers[-1]
    return picks


def _image(net: na.Network, h: int, w: int, seed: int = 0) -> np.ndarray:
    shape = (h, w, 3) if net.in_channels == 3 else (h, w)
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _act(net, image, layer, **kwargs):
    """Activations with fixed intensities (0..1), so that crops are scaled alike."""
    rgb = True if net.in_channels == 3 else None
    return na.activations(net, image, layer, rgb=rgb, intensity_range=(0.0, 1.0), **kwargs)


def _side(net: na.Network, info: na.LayerInfo, minimum: int = 16) -> int:
    """A side the network runs on: at least its minimum, a multiple of the tile unit (U-Nets
    need multiples of their depth's stride)."""
    m = max(minimum, net.arch.minimum_input_size(info))
    unit = max(r.tile_unit for r in net.layers if r.stride is not None)
    return -(-m // unit) * unit


def _interior(info: na.LayerInfo, n_act: int, n_img: int) -> np.ndarray:
    centres = info.offset + info.stride * np.arange(n_act)
    half = (info.receptive_field - 1) / 2
    return np.flatnonzero((centres - half >= 0) & (centres + half <= n_img - 1))


# The roles each network has (checked against its layers by test_roles_are_those_listed).
ROLES_OF = {
    "squeezenet1_1": ("first", "merge", "post", "last", "global"),
    "alexnet": ("first", "post", "last", "unaligned", "global"),
    "vgg16": ("first", "post", "last", "unaligned", "global"),
    "resnet18": ("first", "merge", "post", "last", "global"),
    "resnet50": ("first", "merge", "post", "last", "global"),
    "googlenet": ("first", "merge", "post", "last", "global"),
    "inception_v3": ("first", "merge", "post", "last", "global"),
    "mobilenet_v2": ("first", "merge", "last", "global"),
    "mobilenet_v3_large": ("first", "merge", "last", "global"),
    "mobilenet_v3_small": ("first", "merge", "last", "global"),
    "efficientnet_b0": ("first", "merge", "last", "global"),
    "densenet121": ("first", "merge", "post", "last", "global"),
    "convnext_tiny": ("first", "merge", "channels_last", "last", "global"),
    "regnet_y_400mf": ("first", "merge", "post", "last", "global"),
    "module:SmallCNN": ("first", "merge", "post", "last", "global"),
    "module:SmallUNet": ("first", "merge", "post", "last"),
}


def _cases():
    return [(name, role) for name in NETWORKS for role in ROLES_OF[name]]


@pytest.mark.parametrize("name", NETWORKS)
def test_roles_are_those_listed(networks, name):
    assert tuple(r for r in ROLES if r in representative(networks(name))) == ROLES_OF[name]


@pytest.fixture(scope="module")
def results():
    """Per (network, layer): the untiled torch activations of the test image, computed once."""
    return {}


def _strip(net, info):
    """A strip image: as tall as the layer needs, as wide as its receptive field plus three
    tile units of shift room (the shift is along the columns only)."""
    h = _side(net, info)
    unit = max(r.tile_unit for r in net.layers if r.stride is not None)
    rf = info.receptive_field if not info.is_global else 0
    w = -(-(int(rf) + 3 * info.tile_unit + 8) // unit) * unit
    return _image(net, h, max(w, h))


@pytest.mark.parametrize(("name", "role"), _cases())
def test_layer_properties(networks, name, role):
    net = networks(name)
    info = representative(net)[role]
    if not info.aligned:
        _check_unaligned(net, info)
        return
    if info.is_global:  # square, with room for two tiles of the context layer
        context = tiling.forward_layer(info)
        image = _image(net, *(2 * [_side(net, info) + 2 * context.tile_unit]))
    else:
        image = _strip(net, info)
    before = image.copy()
    full = _act(net, image, info, backend="torch")
    assert np.array_equal(image, before), "the caller's image was changed"
    assert np.isfinite(full).all()
    scale = float(np.abs(full).max())
    assert scale > 0

    # tiled equals untiled (or, where tiles cannot be exact, the layer is not tiled)
    # two or three tiles along the strip (each carries a halo of half a receptive field)
    unit = tiling.forward_layer(info).tile_unit
    tile = max(1, image.shape[1] // 2 // unit) * unit
    if tiling.can_tile(info):
        assert tiling.tile_count(info, image.shape[:2], tile) > 1
    else:
        geo = tiling.forward_layer(info)
        assert geo.global_context or not geo.aligned or geo.is_global
    tiled = _act(net, image, info, backend="torch", tile=tile)
    np.testing.assert_allclose(tiled, full, rtol=0, atol=1e-4 * scale)

    # relu(pre) == post, with negative values before the ReLU
    pre_info = net.arch.pre_relu(info)
    if pre_info is not None:
        pre = _act(net, image, pre_info, backend="torch")
        assert (pre < 0).any(), f"{pre_info.name} has no negative value: not before the ReLU"
        np.testing.assert_array_equal(np.maximum(pre, 0), full)

    if info.is_global:
        return
    # shift by one tile unit along the columns: interior pixels move by whole pixels
    unit = info.tile_unit
    k = int(round(unit / info.stride))
    if info.global_context:  # gates from the whole image: no local shift property
        assert info.op in ("SqueezeExcitation",) or name in GATED
        return
    crop = image[:, unit:]
    part = _act(net, crop, info, backend="torch")
    cols = _interior(info, part.shape[2], crop.shape[1])
    assert cols.size, "the strip has no interior pixel"
    np.testing.assert_allclose(part[:, :, cols], full[:, :, cols + k], rtol=0, atol=1e-5 * scale)


GATED = {"mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf"}


def _onnx_layer(net: na.Network) -> na.LayerInfo:
    picks = representative(net)
    return picks.get("post") or picks.get("merge") or picks["last"]


@pytest.mark.parametrize("name", NETWORKS)
def test_onnx_equals_torch_and_lazy_indexing_equals_numpy(networks, name):
    """One layer per network on ONNX Runtime (a ReLU with its input where there is one):
    torch's values within 1e-5 of the maximum, ``relu(pre) == post`` there too, and the
    aligned (``resize=True``) result indexes as numpy does."""
    net = networks(name)
    info = _onnx_layer(net)
    side = _side(net, info, minimum=32)
    image = _image(net, side, side + info.tile_unit, seed=1)
    before = image.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)  # no silent fallback
        fast = _act(net, image, info, backend="onnxruntime", resize=True)
        assert fast.backend == "onnxruntime"
        pre_info = net.arch.pre_relu(info)
        pre = _act(net, image, pre_info, backend="onnxruntime") if pre_info else None
    assert np.array_equal(image, before)
    native = _act(net, image, info, backend="onnxruntime")
    ref = _act(net, image, info, backend="torch")
    np.testing.assert_allclose(native, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    if pre is not None:
        assert (pre < 0).any()
        np.testing.assert_array_equal(np.maximum(pre, 0), native)

    whole = np.asarray(fast)
    assert whole.shape == (info.channels, *image.shape[:2])
    C, H, W = whole.shape
    top = float(np.abs(whole).max())
    for key in [
        (0,),
        (slice(None), slice(2, H - 1, 3), slice(None, None, -2)),
        (np.array([C - 1, 0]), -1),
        (Ellipsis, np.array([0, W - 1])),
        (slice(1, None), np.array([1, 0, H - 1]), slice(0, 5)),
    ]:
        # the same interpolation on fewer pixels: equal up to float32 rounding
        np.testing.assert_allclose(
            fast[key], whole[key], rtol=1e-6, atol=1e-6 * top, err_msg=str(key)
        )


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("resnet18", ["bn1", "layer1.0.bn2", "layer1.0.add"]),
        ("module:SmallCNN", ["conv1", "bn2", "conv3"]),
    ],
)
def test_in_place_relus_leave_pre_relu_layers_negative(networks, name, layers, backend):
    """ResNet's ``relu`` and the user model's ``nn.ReLU(inplace=True)`` / ``F.relu_`` overwrite
    their input in a plain forward pass; the layer before them keeps its negative values."""
    net = networks(name)
    image = _image(net, 48, 48, seed=2)
    for layer in layers:
        values = _act(net, image, layer, backend=backend)
        assert (values < 0).mean() > 0.1, layer


def test_squeeze_excitation_layers_are_computed_whole_not_in_tiles(networks):
    """EfficientNet's gates see the whole image: tiles would each compute their own (off by
    up to 3e-4 of the maximum before), so such a layer runs in one pass, and a budget it
    cannot fit in is refused with the reason."""
    net = networks("efficientnet_b0")
    info = net.find_layer("features.5.1.add")
    assert info.global_context and not tiling.can_tile(info)
    assert not tiling.can_tile(net.layers[-1])  # fc pools a gated layer
    with pytest.raises(MemoryError, match="squeeze-and-excitation"):
        tiling.choose_tile(info, 4096, 4096, "16MiB")
    image = _image(net, 64, 96)
    np.testing.assert_array_equal(
        _act(net, image, info, backend="torch", tile=32), _act(net, image, info, backend="torch")
    )
    with pytest.raises(na.ImageError, match="squeeze-and-excitation"):
        _act(net, image, info, backend="torch", memory_budget="100KiB")


def test_measure_geometry_takes_a_network_and_its_layer_names(networks):
    """The measured geometry equals the derived (ResNet) and hand-checked (SqueezeNet) rows."""
    for name, layer in [("squeezenet1_1", "fire3-concat"), ("resnet18", "layer1.0.add")]:
        net = networks(name)
        info = net.find_layer(layer)
        measured = na.measure_geometry(net, layer)
        assert measured.stride == (info.stride,) * 2
        assert measured.offset == (info.offset,) * 2
        assert measured.receptive_field == (info.receptive_field,) * 2
    with pytest.raises(na.UnknownLayerError, match="has no layer 'nope'"):
        na.measure_geometry(networks("resnet18"), "nope")


# --- bad input: a plain message of the package's own, never a raw torch traceback ----------


class _Gate(torch.nn.Module):
    """A leaf module whose every pixel depends on the whole image."""

    def forward(self, x):
        return x * x.mean()


class _Untraceable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.gate = _Gate()

    def forward(self, x):
        y = self.conv(x)
        if y.mean() > 1e9:  # data-dependent: torch.fx cannot trace it
            y = y * 2
        return self.gate(y)


class _FiveChannels(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(5, 4, 3)

    def forward(self, x):
        return self.conv(x)


class _Raises(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise RuntimeError("boom")


def test_untraceable_and_unmeasurable_model_is_a_plain_geometry_error():
    with pytest.raises(na.GeometryError, match=r"cannot trace _Untraceable.*'gate'.*traceable"):
        na.load_network(_Untraceable())


def test_five_channel_model_given_rgb_says_what_to_pass():
    net = na.load_network(_FiveChannels())
    rgb = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(na.ImageError, match="5 input channels; this image has 3"):
        na.activations(net, rgb, "conv")
    assert na.activations(net, rgb[..., 0], "conv").shape == (4, 38, 38)  # gray: broadcast


def test_state_dict_of_another_architecture_is_a_weights_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(__import__("torchvision").models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(na.WeightsError, match="not a ResNet-18 state_dict.*network it was saved"):
        na.load_network("resnet18", weights=path)


def test_misspelt_network_names_the_closest():
    with pytest.raises(na.UnknownNetworkError, match="'resnet-19'.*'resnet18'.*list_networks"):
        na.load_network("resnet-19")


def test_module_whose_forward_raises_is_a_plain_geometry_error():
    with pytest.raises(na.GeometryError, match="RuntimeError: boom.*fix the model"):
        na.load_network(_Raises())


def test_unet_on_a_size_it_cannot_take_says_which_sizes_work(networks):
    """A U-Net's skip connections need sides divisible by 4: 16x47 is not too small (the
    message said it needed 4x4 before), it is the wrong size."""
    net = networks("module:SmallUNet")
    image = _image(net, 16, 47)
    with pytest.raises(na.ImageError, match=r"16x47 input \(RuntimeError: .*multiples of 4"):
        _act(net, image, "out")
    assert _act(net, image[:, :44], "out").shape == (2, 16, 44)


def test_a_field_taller_than_wide_keeps_one_grid(networks):
    """Inception v3's 1x7 and 7x1 convolutions: one stride and offset on both axes, so the
    layer is aligned (it was shown stretched), with the larger side as its field (the halo of
    a tile and the interior on the safe side) and both sides in the note; tiles equal the
    whole image."""
    net = networks("inception_v3")
    info = net.find_layer("Mixed_6b.branch7x7_2.conv")
    assert info.aligned and info.stride == 16
    assert "receptive field" in info.note and "x" in info.note
    image = _image(net, 96, 288)
    full = _act(net, image, info, backend="torch")
    tiled = _act(net, image, info, backend="torch", tile=96)
    np.testing.assert_allclose(tiled, full, rtol=0, atol=1e-4 * float(np.abs(full).max()))


def _check_unaligned(net: na.Network, info: na.LayerInfo) -> None:
    """A layer without a single grid: never tiled, stretched over the image, lazily indexed
    as numpy indexes the whole."""
    assert info.note and info.stride is None and not tiling.can_tile(info)
    image = _image(net, *(2 * [_side(net, info, minimum=64)]))
    before = image.copy()
    full = _act(net, image, info, backend="torch")
    np.testing.assert_array_equal(_act(net, image, info, backend="torch", tile=32), full)
    stretched = _act(net, image, info, backend="torch", resize=True)
    assert np.array_equal(image, before)
    whole = np.asarray(stretched)
    assert whole.shape == (info.channels, *image.shape[:2])
    for key in [(0,), (slice(1, 3), slice(None, None, -3), np.array([0, 5]))]:
        np.testing.assert_allclose(stretched[key], whole[key], rtol=1e-6, atol=1e-6)
