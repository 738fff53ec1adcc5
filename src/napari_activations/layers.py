"""The SqueezeNet v1.1 layer table: names, channels and geometry of every layer.

Pure Python (no torch, no napari): the widget reads it to fill its menus before any network is
loaded. Geometry is derived from the architecture, not typed in by hand:

- ``stride`` (S) and ``offset`` (O): activation pixel ``i`` sits over input pixel ``O + S * i``
  (the centre of its receptive field), along each spatial axis.
- ``receptive_field``: the side, in input pixels, of the square that one activation pixel sees.

Layers after the global average pool (``pool10``, ``prob``) have one pixel that sees the whole
image; their geometry fields are ``None``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LayerInfo",
    "LAYERS",
    "find_layer",
    "layer_names",
    "output_size",
    "minimum_input_size",
    "UnknownLayerError",
]


class UnknownLayerError(KeyError, ValueError):
    """Raised for a layer name that is in neither naming scheme."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as plain text
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a network (SqueezeNet v1.1's table here; other networks' tables are
    derived from their graphs by :mod:`napari_activations.architecture`).

    Attributes
    ----------
    name : str
        MATLAB / Caffe name, e.g. ``"fire6-squeeze1x1"``. The name used everywhere in this
        package: API, widget, layer names and metadata.
    module : str
        torchvision module path, e.g. ``"features.9.squeeze"`` (``"softmax"`` for ``prob``).
    channels : int
        Number of output channels.
    stride : int or None
        Total stride S in input pixels.
    offset : float or None
        Input pixel (row or column) under activation pixel 0.
    receptive_field : int or None
        Receptive-field side in input pixels.
    after_relu : bool
        True if the values are non-negative by construction (after a ReLU or of ReLU outputs).
    block : str
        Group for menus: ``"conv1"``, ``"pool1"``, ``"fire2"``, ..., ``"classifier"`` (for
        other networks: the top-level module, e.g. ``"layer3"``).
    network : str
        The network it belongs to: ``"squeezenet1_1"``, ``"resnet50"``, ``"module:UNet"``.
    aligned : bool
        False where the layer has no single grid over the image (branches with different S or
        O merged, adaptive pooling to several pixels): shown stretched over the image.
    note : str
        Why a layer is not aligned, or ``""``.
    unit : int or None
        Tiles of this layer start at multiples of this many input pixels (the least common
        multiple of the strides on the way, so a tile's grid is the image's, shifted by whole
        pixels). None: the stride.
    global_context : bool
        Also depends on the whole image through a global gate (squeeze-and-excitation).
    op : str
        What the layer computes (``"Conv2d"``, ``"add"``, ...), where derived from a graph.
    geometry_source : str
        ``"table"`` (SqueezeNet's hand-checked table), ``"traced"`` (derived from the graph)
        or ``"measured"`` (gradients, for models that cannot be traced).
    """

    name: str
    module: str
    channels: int
    stride: int | None
    offset: float | None
    receptive_field: int | None
    after_relu: bool
    block: str
    network: str = "squeezenet1_1"
    aligned: bool = True
    note: str = ""
    unit: int | None = None
    global_context: bool = False
    op: str = ""
    geometry_source: str = "table"
    arch: Any = field(default=None, compare=False, repr=False, hash=False)

    def metadata(self) -> dict[str, dict[str, Any]]:
        """Plain, JSON-able ``{"layer": ..., "geometry": ...}``: what an activation layer's
        napari metadata and an export's attributes say of the network layer."""
        return {
            "layer": {
                "name": self.name,
                "module": self.module,
                "channels": self.channels,
                "after_relu": self.after_relu,
                "block": self.block,
                "network": self.network,
            },
            "geometry": {
                "stride": self.stride,
                "offset": self.offset,
                "receptive_field": self.receptive_field,
                "aligned": self.aligned,
                "note": self.note,
                "source": self.geometry_source,
            },
        }

    @property
    def tile_unit(self) -> int:
        """Tiles start at multiples of this many input pixels (see ``unit``)."""
        if self.unit is not None:
            return int(self.unit)
        return max(1, math.ceil(self.stride)) if self.stride is not None else 1

    @property
    def is_global(self) -> bool:
        """True for layers whose single pixel sees the whole image (``pool10``, ``prob``)."""
        return self.stride is None and self.aligned

    @property
    def index(self) -> int:
        """Position in its network's layer table (network order)."""
        if self.arch is not None:
            return self.arch.index(self)
        return _INDEX[self.name]


# (kernel, stride, padding, ceil_mode) of the spatial operations, in order, and the channel
# widths of the fire modules: (squeeze, expand) for fire2 ... fire9.
_FIRE_WIDTHS = {
    2: (16, 64),
    3: (16, 64),
    4: (32, 128),
    5: (32, 128),
    6: (48, 192),
    7: (48, 192),
    8: (64, 256),
    9: (64, 256),
}
_FEATURE_INDEX = {
    "conv1": 0,
    "relu_conv1": 1,
    "pool1": 2,
    "fire2": 3,
    "fire3": 4,
    "pool3": 5,
    "fire4": 6,
    "fire5": 7,
    "pool5": 8,
    "fire6": 9,
    "fire7": 10,
    "fire8": 11,
    "fire9": 12,
}


def _build_table() -> tuple[LayerInfo, ...]:
    rows: list[LayerInfo] = []
    # Running geometry: total stride, offset, receptive field.
    stride, offset, rf = 1, 0.0, 1

    def conv(k: int, s: int, p: int) -> tuple[int, float, int]:
        return stride * s, offset + ((k - 1) / 2 - p) * stride, rf + (k - 1) * stride

    def add(
        name: str, module: str, ch: int, geom: tuple[int, float, int], relu: bool, block: str
    ) -> None:
        s, o, r = geom
        rows.append(LayerInfo(name, module, ch, s, float(o), r, relu, block))

    stride, offset, rf = conv(3, 2, 0)
    add("conv1", "features.0", 64, (stride, offset, rf), False, "conv1")
    add("relu_conv1", "features.1", 64, (stride, offset, rf), True, "conv1")
    channels = 64
    for block in [
        "pool1",
        "fire2",
        "fire3",
        "pool3",
        "fire4",
        "fire5",
        "pool5",
        "fire6",
        "fire7",
        "fire8",
        "fire9",
    ]:
        idx = _FEATURE_INDEX[block]
        if block.startswith("pool"):
            stride, offset, rf = conv(3, 2, 0)
            add(block, f"features.{idx}", channels, (stride, offset, rf), True, block)
            continue
        sq, ex = _FIRE_WIDTHS[int(block[4:])]
        m = f"features.{idx}"
        g1 = (stride, offset, rf)
        g3 = conv(3, 1, 1)
        add(f"{block}-squeeze1x1", f"{m}.squeeze", sq, g1, False, block)
        add(f"{block}-relu_squeeze1x1", f"{m}.squeeze_activation", sq, g1, True, block)
        add(f"{block}-expand1x1", f"{m}.expand1x1", ex, g1, False, block)
        add(f"{block}-relu_expand1x1", f"{m}.expand1x1_activation", ex, g1, True, block)
        add(f"{block}-expand3x3", f"{m}.expand3x3", ex, g3, False, block)
        add(f"{block}-relu_expand3x3", f"{m}.expand3x3_activation", ex, g3, True, block)
        stride, offset, rf = g3
        channels = 2 * ex
        add(f"{block}-concat", m, channels, g3, True, block)
    add("drop9", "classifier.0", channels, (stride, offset, rf), True, "classifier")
    add("conv10", "classifier.1", 1000, (stride, offset, rf), False, "classifier")
    add("relu_conv10", "classifier.2", 1000, (stride, offset, rf), True, "classifier")
    rows.append(LayerInfo("pool10", "classifier.3", 1000, None, None, None, True, "classifier"))
    rows.append(LayerInfo("prob", "softmax", 1000, None, None, None, True, "classifier"))
    return tuple(rows)


LAYERS: tuple[LayerInfo, ...] = _build_table()
"""Every layer of SqueezeNet v1.1, in network order."""

_INDEX = {info.name: i for i, info in enumerate(LAYERS)}
_BY_NAME = {
    **{info.name.lower(): info for info in LAYERS},
    **{info.module.lower(): info for info in LAYERS},
}


def layer_names() -> list[str]:
    """MATLAB / Caffe names of all layers, in network order."""
    return [info.name for info in LAYERS]


def find_layer(layer: str | LayerInfo) -> LayerInfo:
    """Look a layer up by its MATLAB / Caffe name or its torchvision module path.

    Names are case-insensitive; ``_`` and ``-`` are interchangeable after the block name only
    where that is unambiguous (``fire6_squeeze1x1`` works). Raises :class:`UnknownLayerError`
    listing the closest valid names.
    """
    if isinstance(layer, LayerInfo):
        return layer
    if not isinstance(layer, str):
        raise UnknownLayerError(
            f"A layer is named by a string such as 'conv1' or 'fire6-squeeze1x1', "
            f"not {type(layer).__name__}."
        )
    key = layer.strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    dashed = key.replace("_", "-", 1) if key.startswith("fire") else key
    if dashed in _BY_NAME:
        return _BY_NAME[dashed]
    candidates = list(_BY_NAME)
    close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.5)
    close_names = list(dict.fromkeys(_BY_NAME[c].name for c in close))
    hint = (
        f" Closest: {', '.join(repr(c) for c in close_names)}."
        if close_names
        else " Valid names run from 'conv1' to 'prob'; see napari_activations.LAYERS."
    )
    raise UnknownLayerError(f"SqueezeNet v1.1 has no layer {layer!r}.{hint}")


def _spatial_ops(info: LayerInfo) -> list[tuple[int, int, int, bool]]:
    """(kernel, stride, padding, ceil_mode) of the size-changing operations up to ``info``.

    Only conv1 and the three max pools change the size; the padded 3x3 expands keep it.
    """
    ops: list[tuple[int, int, int, bool]] = [(3, 2, 0, False)]
    for row in LAYERS[: info.index + 1]:
        if row.name in ("pool1", "pool3", "pool5"):
            ops.append((3, 2, 0, True))
    return ops


def _size_after(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    # PyTorch's own rule; in ceil mode a last window that starts inside the input counts even
    # where it overhangs the end (a 2-pixel input to a 3x3/2 pool gives one pixel).
    span = n + 2 * p - k
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:  # PyTorch drops a window that starts in padding
        out -= 1
    return max(out, 0)


def output_size(layer: str | LayerInfo, height: int, width: int) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of ``layer``'s activation for an input of ``height x width``.

    Returns ``(0, 0)`` where the input is too small for the layer. ``layer`` may be a row of
    any network (its own network computes the size); a name is SqueezeNet's.
    """
    info = find_layer(layer)
    if info.arch is not None:
        return info.arch.output_size(info, height, width)
    sizes = []
    for n in (int(height), int(width)):
        for k, s, p, c in _spatial_ops(info):
            n = _size_after(n, k, s, p, c)
        sizes.append(n)
    if min(sizes) <= 0:
        return (0, 0)
    if info.is_global:
        return (1, 1)
    return (sizes[0], sizes[1])


def minimum_input_size(layer: str | LayerInfo) -> int:
    """Smallest image side (pixels) for which ``layer`` has at least one activation pixel."""
    info = find_layer(layer)
    if info.arch is not None:
        return info.arch.minimum_input_size(info)
    n = 1
    while output_size(info, n, n)[0] < 1:
        n += 1
    return n
