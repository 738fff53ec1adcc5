"""Each network layer's channels on a slider of their own, in a viewer of mixed layers.

napari lines up layers by their trailing axes (NumPy broadcasting): a ``(64, H, W)`` activation
layer and a ``(60, H, W)`` stack share their first axis, so one slider would move the
activations' channel and the stack's planes at once. napari 0.9 labels the viewer's axes from
the layers' ``axis_labels``, but it still aligns by position, not by label.

So this module gives the channel axis of every activation layer a place of its own, to the left
of every image axis in the viewer: one channel axis per network layer (``conv1 channel``,
``fire6-squeeze1x1 channel`` ...), shared by the activation and difference layers of that network
layer (channel 14 of conv1 is the same filter on every image), never by anything else. Between
its channel axis and its image axes, a layer gets one-plane axes where other layers have axes
(a stack's planes, another network layer's channels). Such an axis spans the other layers'
whole range on it (scale = that range, translate = its middle), so every slider position reads
the one plane: the layer behaves as napari broadcasts a layer that lacks an axis. The viewer's
axes are labelled by what they move: the images' own labels, and ``<network layer> channel``.

:func:`arrange_channel_axes` lays the viewer out again whenever a layer comes or goes, or the
viewer's ranges change; it keeps every slider where it was.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layer_kinds import channel_metadata

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "arrange_channel_axes",
    "channel_axis_label",
    "follow_viewer",
    "image_ndim",
    "network_layer_label",
]

# Viewers whose layer list is followed (each once), and viewers being laid out right now.
_FOLLOWED: weakref.WeakSet = weakref.WeakSet()
_BUSY: weakref.WeakSet = weakref.WeakSet()


def is_channel_layer(layer: Any) -> bool:
    """An activation or difference layer: its first axis is a network layer's channels."""
    return channel_metadata(layer) is not None and hasattr(getattr(layer, "data", None), "native")


def channel_axis_label(network_layer: str) -> str:
    """The viewer's label of a network layer's channel axis, e.g. ``"conv1 channel"``."""
    return f"{network_layer} channel"


def network_layer_label(name: str, network: str | None = None, title: str | None = None) -> str:
    """How napari names a network layer: its name for SqueezeNet v1.1 (the default network,
    ``"conv1"``), followed by its network's title for any other (``"conv1 (ResNet-18)"``:
    conv1 of ResNet-18 is another filter bank than SqueezeNet's)."""
    if not network or network == "squeezenet1_1":
        return name
    if not title:  # metadata that names the network only: its usual title
        from .network import NETWORK_TITLES

        title = NETWORK_TITLES.get(network) or network.removeprefix("module:")
    return f"{name} ({title})"


def _pad(layer: Layer) -> int:
    return int(getattr(layer.data, "pad", 0))


def image_ndim(layer: Layer) -> int:
    """How many of a channel layer's axes are its image's (the last ones)."""
    return layer.ndim - 1 - _pad(layer)


def _group(layer: Layer) -> str:
    meta = channel_metadata(layer)
    described, title = meta["layer"], meta.get("network")
    title = title if isinstance(title, str) else None
    return network_layer_label(str(described["name"]), described.get("network"), title)


def _order(layer: Layer) -> tuple:
    """Where the layer's network layer comes: SqueezeNet's first, then by network and depth."""
    meta = channel_metadata(layer)
    described = meta["layer"]
    network = described.get("network") or "squeezenet1_1"
    index = meta.get("layer_index")
    if index is None:
        index = _network_order(str(described["name"]))
    return (network != "squeezenet1_1", network, int(index))


def _real_axes(layer: Layer) -> set[int]:
    """A layer's own axes as positions from the right (-1 is the last), padding excluded."""
    if not is_channel_layer(layer):
        return set(range(-layer.ndim, 0))
    return {-layer.ndim} | set(range(-image_ndim(layer), 0))


def _span(viewer: napari.Viewer, position: int, skip: Layer) -> tuple[float, float, Any]:
    """``(scale, translate, unit)`` of a one-plane axis covering every layer's range there."""
    lows, highs, unit = [], [], "pixel"
    for layer in viewer.layers:
        if layer is skip or position not in _real_axes(layer):
            continue
        axis = layer.ndim + position
        lows.append(float(layer.extent.world[0][axis]))
        highs.append(float(layer.extent.world[1][axis]))
        unit = layer.units[axis]
    if not lows:
        return 1.0, 0.0, unit
    low, high = min(lows), max(highs)
    # Wider than the range by a margin, so rounding at its ends still lands on the plane.
    return (high - low) + 2.0, (low + high) / 2.0, unit


def _transform(layer: Layer, pad: int, spans: list[tuple[float, float, Any]]) -> dict[str, Any]:
    """The layer's transform with its one-plane axes replaced by ``spans`` (left to right)."""
    old = _pad(layer)
    keep = [0] + list(range(1 + old, layer.ndim))  # channel axis, then the image axes
    n = 1 + pad + len(keep) - 1

    def square(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=float)[np.ix_(keep, keep)]
        out = np.eye(n)
        idx = [0] + list(range(1 + pad, n))
        out[np.ix_(idx, idx)] = m
        return out

    affine = np.asarray(layer.affine.affine_matrix, dtype=float)
    linear, shift = square(affine[:-1, :-1]), np.zeros(n)
    shift[[0] + list(range(1 + pad, n))] = affine[:-1, -1][keep]
    new_affine = np.eye(n + 1)
    new_affine[:-1, :-1], new_affine[:-1, -1] = linear, shift
    shear = np.asarray(layer.shear, dtype=float)
    if shear.ndim == 1:  # upper-triangular values, as napari stores them
        full = np.eye(layer.ndim)
        full[np.triu_indices(layer.ndim, 1)] = shear
        shear = full
    scale = np.asarray(layer.scale, dtype=float)[keep]
    translate = np.asarray(layer.translate, dtype=float)[keep]
    units = [str(u) for u in layer.units]
    units = [units[i] for i in keep]
    return {
        "scale": (scale[0], *(s for s, _, _ in spans), *scale[1:]),
        "translate": (translate[0], *(t for _, t, _ in spans), *translate[1:]),
        "rotate": square(layer.rotate),
        "shear": square(shear),
        "affine": new_affine,
        "units": (units[0], *(str(u) for _, _, u in spans), *units[1:]),
    }


def _labels(viewer: napari.Viewer, base: int, groups: list[str]) -> list[str]:
    """Labels of the viewer's axes, left to right: channel axes, then the images' axes.

    An image axis takes the first label a user's layer gives it (then an activation layer's,
    which came from its image), else napari's default name, its position from the right.
    """
    labels: dict[int, str] = {}
    ordered = sorted(viewer.layers, key=is_channel_layer)  # the user's layers first
    for layer in ordered:
        for position in sorted(_real_axes(layer)):
            if is_channel_layer(layer) and position == -layer.ndim:
                continue
            label = str(layer.axis_labels[layer.ndim + position])
            if label != str(position):
                labels.setdefault(position, label)
    image = [labels.get(p, str(p)) for p in range(-base, 0)]
    return [channel_axis_label(g) for g in reversed(groups)] + image


def _user_image_ndim(layer: Layer) -> int:
    """A user's layer's axes right of any axis labelled as a channel axis here.

    napari's "new labels" button copies the selected layer's shape and axis labels: a Labels
    layer made over an activation layer lies on its channel axis, and must not push it left.
    """
    labels = [str(label) for label in layer.axis_labels]
    marked = [i for i, label in enumerate(labels) if label.endswith(" channel")]
    return layer.ndim - (marked[-1] + 1) if marked else layer.ndim


def _network_order(name: str) -> int:
    from .layers import LAYERS

    names = [info.name for info in LAYERS]
    return names.index(name) if name in names else len(names)


def _set_if_changed(layer: Layer, key: str, value: Any) -> None:
    old = getattr(layer, key)
    if key == "affine":
        old = old.affine_matrix
    if key in ("units", "axis_labels"):
        if tuple(str(u) for u in old) != tuple(str(u) for u in value):
            setattr(layer, key, value)
        return
    old, new = np.asarray(old, dtype=float), np.asarray(value, dtype=float)
    if key == "shear" and old.ndim == 1:
        full = np.eye(layer.ndim)
        full[np.triu_indices(layer.ndim, 1)] = old
        old = full
    if old.shape != new.shape or not np.allclose(old, new):
        setattr(layer, key, value)


def arrange_channel_axes(viewer: napari.Viewer) -> None:
    """Give each network layer's channels an axis of their own (see the module docstring)."""
    from ._napari_layers import ChannelFirst
    from .alignment import AlignedActivations

    if viewer in _BUSY:
        return
    layers = [layer for layer in viewer.layers if is_channel_layer(layer)]
    if not layers:
        return
    _BUSY.add(viewer)
    try:
        # Network order: conv1's channels nearest the image axes, deeper layers further left.
        order = {_group(layer): _order(layer) for layer in layers}
        groups = sorted(order, key=order.__getitem__)
        others = [_user_image_ndim(layer) for layer in viewer.layers if not is_channel_layer(layer)]
        base = max(others + [image_ndim(layer) for layer in layers])
        # Where every slider is now, to put each back after the axes move.
        step = dict(zip(range(-viewer.dims.ndim, 0), viewer.dims.point, strict=False))
        channel = {}
        for layer in layers:
            channel.setdefault(_group(layer), step[-layer.ndim])
        labels = _labels(viewer, base, groups)
        for layer in layers:
            j = groups.index(_group(layer))
            k = image_ndim(layer)
            pad = base + j - k
            positions = range(-(base + j), -k)  # the one-plane axes, left to right
            spans = [_span(viewer, p, layer) for p in positions]
            transform = _transform(layer, pad, spans)
            if pad != _pad(layer):
                stack = layer.data.stack if isinstance(layer.data, ChannelFirst) else layer.data
                if not isinstance(stack, AlignedActivations):
                    continue
                layer.data = ChannelFirst(stack, pad) if (pad or stack.ndim > 3) else stack
            for key in ("scale", "translate", "rotate", "shear", "affine", "units"):
                _set_if_changed(layer, key, transform[key])
            _set_if_changed(layer, "axis_labels", tuple(labels[-layer.ndim :]))
        ndim = viewer.dims.ndim
        for position, value in step.items():
            if position >= -base and ndim + position not in viewer.dims.displayed:
                viewer.dims.set_point(ndim + position, value)
        for group, value in channel.items():
            viewer.dims.set_point(ndim - (base + 1 + groups.index(group)), value)
    finally:
        _BUSY.discard(viewer)


def follow_viewer(viewer: napari.Viewer) -> None:
    """Lay the viewer out again whenever its layers or ranges change (once per viewer)."""
    if viewer in _FOLLOWED:
        return
    _FOLLOWED.add(viewer)
    ref = weakref.ref(viewer)

    def again(event: Any = None) -> None:
        v = ref()
        if v is not None:
            arrange_channel_axes(v)

    def later(event: Any = None) -> None:
        # Not inside napari's own handling of a removal or a range change: changing layers'
        # dimensions there left napari's sliders pointing past the end of its new dims (an
        # IndexError in QtDims when one of two network layers of an image was removed).
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, again)

    viewer.layers.events.inserted.connect(again, position="last")
    viewer.layers.events.removed.connect(later, position="last")
    viewer.dims.events.range.connect(later, position="last")
