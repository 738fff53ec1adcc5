"""The activation layer in napari: from an image layer and a network layer to an Image layer.

One code path for the console, scripts and the widget:

- :func:`compute_for_image_layer` is the compute, a generator of
  :class:`~napari_activations.compute.Progress` that returns an :class:`ActivationResult`. It
  reads the image layer's data, contrast limits and RGB flag, so the intensities napari shows
  are the ones the network sees.
- :func:`add_activation_layer` puts a result into a viewer: it adds the layer, or updates the
  one made earlier from the same image and network layer.
- :func:`show_activations` does both, synchronously, for the console; the widget runs the
  generator in a worker thread and calls :func:`add_activation_layer` when it returns.

The layer's properties come from plain functions (:func:`activation_layer_kwargs` and
friends) that tests call without a viewer.

Layout: the result has the image's own pixel grid, with the channel axis in front of the image's
axes: ``(C, H, W)`` for an ``(H, W)`` or RGB image, ``(C, ..., H, W)`` for a stack. napari lines
up layers by their trailing axes, so the channel axis has to lead for a stack's own axes to
stay under the image's sliders.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import warnings
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _mesa_workaround
from ._channel_axes import channel_axis_label, follow_viewer, network_layer_label
from ._layer_kinds import METADATA_KEY, remember_network
from .alignment import AlignedActivations
from .analysis import top_channels
from .architecture import architecture_of
from .compute import (
    ImageError,
    LazyNative,
    Progress,
    drain,
    image_planes_shape,
    iter_activations,
    report_steps,
)
from .layers import LayerInfo, find_layer
from .network import weights_metadata

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = [
    "ActivationResult",
    "ChannelFirst",
    "ChannelRanges",
    "ChannelsAsRGB",
    "LayerInputError",
    "activation_layer_kwargs",
    "activation_layer_name",
    "add_activation_layer",
    "avoid_triton_llvm_crash",
    "channel_contrast_limits",
    "choose_level",
    "compute_for_image_layer",
    "earlier_activation_layers",
    "expand_transform",
    "exposure_warning",
    "find_activation_layer",
    "set_contrast",
    "show_activations",
    "shown_position",
    "unproxy",
]

"""Key of the activation layer's metadata (a dict) in ``layer.metadata``."""

SEQUENTIAL_COLORMAP_NAME = "activation magma"
DIVERGING_COLORMAP_NAME = "activation blue-red"
CONTRAST_MODES = ("channel", "global")
STACK_CONTRAST_MODES = ("stack", "plane")
STACK_SAMPLE_PLANES = 5
"""Planes (the first, then spread evenly to the last) whose ranges estimate a stack's contrast."""
LEVEL_MAX_SIDE = 2048
"""The default pyramid level is the finest whose longer side is at most this many pixels."""
DARK_BELOW = 0.05
"""The network input is nearly black when its 99th percentile is below this (0..1 scale)."""


class LayerInputError(ValueError):
    """The napari layer cannot be used as input; the message says why and what to do."""


@dataclass(frozen=True)
class ActivationResult:
    """What one computation made, with what is needed to explain it later.

    Attributes
    ----------
    activations : AlignedActivations
        ``(..., C, H, W)`` on the image's grid (native ``(..., C, h, w)`` in ``.native``).
    layer : LayerInfo
    network : Network
    input_scale : float
    intensity_range : (float, float) or None
        The image intensities mapped to 0 and 1 before the ImageNet normalisation.
    source_name : str
        Name of the image layer when the computation started.
    started : int or None
        When the computation started, as a sequence number: of two results for one layer, the
        one started later stays (see :func:`add_activation_layer`). None: unordered.
    ranges : ChannelRanges or None
        Per-channel ranges of the planes computed so far; None: made when shown.
    stack_contrast : "stack" or "plane"
        A stack's contrast: estimated for the whole stack, or each plane's own.
    include_border : bool
        Whether the starting channel and the contrast count the border where the network's
        zero padding shows (see :func:`~napari_activations.alignment.interior`).
    level : int or None
        The pyramid level computed on, for a multiscale image layer.
    level_factors : tuple of float or None
        Per image-layer axis, full-resolution pixels per pixel of that level.
    source_names : tuple of str
        The image layers used as the network's R, G, B, when more than one.
    source_colours : str
        Which of ``"RGB"`` they are, in the same order (``"RB"``: green left out).
    source_intensity_ranges : tuple of (float, float)
        Their contrast limits, in the same order.
    input_warning : str or None
        Set when the network input was nearly black or nearly saturated; says what to do.
    backend : str or None
        The inference backend that ran the network (``"torch"``, ``"onnxruntime"``).
    precision : str
        Arithmetic of the forward pass (``"float32"`` unless a GPU ran it in half precision).
    """

    activations: AlignedActivations
    layer: LayerInfo
    network: Any
    input_scale: float
    intensity_range: tuple[float, float] | None
    source_name: str
    started: int | None = None
    ranges: ChannelRanges | None = None
    stack_contrast: str = "stack"
    include_border: bool = False
    level: int | None = None
    level_factors: tuple[float, ...] | None = None
    source_names: tuple[str, ...] = ()
    source_colours: str = ""
    source_intensity_ranges: tuple[tuple[float, float], ...] = ()
    input_warning: str | None = None
    backend: str | None = None
    precision: str = "float32"


# ---------------------------------------------------------------------------------------------
# Pure functions: names, geometry, contrast, colormaps, metadata
# ---------------------------------------------------------------------------------------------


def layer_label(layer: str | LayerInfo) -> str:
    """A network layer as napari names it: ``"conv1"`` (SqueezeNet v1.1's; a string names
    one of its layers), ``"layer3.1.relu_1 (ResNet-18)"`` (any other network's)."""
    info = find_layer(layer)
    return network_layer_label(info.name, info.network, architecture_of(info).title)


def activation_layer_name(image_name: str, layer: str | LayerInfo) -> str:
    """``"<image name>: <layer>"``, e.g. ``"Face: conv1"``, ``"Face: layer3.1.relu_1
    (ResNet-18)"`` (see :func:`layer_label`)."""
    return f"{image_name}: {layer_label(layer)}"


def expand_transform(source: Any, ndim_lead: int = 1) -> dict[str, Any]:
    """The source layer's transform with ``ndim_lead`` identity axes put in front.

    Returns ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` for a layer whose
    axes are ``(channel, *source axes)``: the new axes have scale 1 and translate 0 and mix
    with no other axis, so the result covers the source's world extent exactly.
    """
    n = len(source.scale)
    k = int(ndim_lead)

    def pad_matrix(m: np.ndarray) -> np.ndarray:
        out = np.eye(n + k)
        out[k:, k:] = m
        return out

    def pad_affine(a: np.ndarray) -> np.ndarray:  # (n+1, n+1) homogeneous matrix
        out = np.eye(n + k + 1)
        out[k:, k:] = a
        return out

    shear_vec = np.asarray(source.shear, dtype=float)
    shear = np.eye(n)
    if shear_vec.ndim == 2:
        shear = shear_vec
    else:
        shear[np.triu_indices(n, 1)] = shear_vec
    return {
        "scale": (1.0,) * k + tuple(float(s) for s in source.scale),
        "translate": (0.0,) * k + tuple(float(t) for t in source.translate),
        "rotate": pad_matrix(np.asarray(source.rotate, dtype=float)),
        "shear": pad_matrix(shear),
        "affine": pad_affine(np.asarray(source.affine.affine_matrix, dtype=float)),
    }


def channel_stats(
    native: Any, inside: tuple[slice, slice] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of ``(..., C, h, w)`` activations: two ``(C,)`` arrays.

    ``inside``: the rows and columns that count (e.g.
    :meth:`~napari_activations.AlignedActivations.native_interior`); default all. A lazily
    computed stack (planes computed when first looked at) is summarised by its first plane,
    which is computed already: reading every plane here would compute the whole stack on
    napari's thread (:class:`ChannelRanges` follows the other planes).
    """
    if not isinstance(native, np.ndarray) and native.ndim > 3:
        native = native[(0,) * (native.ndim - 3)]
    native = np.asarray(native)
    if inside is not None:
        native = native[..., inside[0], inside[1]]
    moved = np.moveaxis(native, -3, 0)
    flat = moved.reshape(moved.shape[0], -1)
    return flat.min(axis=1), flat.max(axis=1)


class ChannelRanges:
    """Per-channel minimum and maximum of activations, plane by plane, for contrast limits.

    Records the ranges of the planes computed so far (a stack's planes are computed when they
    are first shown), never computing a plane only for its range, except in :meth:`sample`.

    Parameters
    ----------
    activations : AlignedActivations
        ``(..., C, H, W)``; its ``native`` may be a :class:`~napari_activations.compute.LazyNative`.
    include_border : bool
        False: leave out the rows and columns where the network's zero padding shows.
    """

    def __init__(self, activations: AlignedActivations, include_border: bool = False):
        self.activations = activations
        native = activations.native
        self.lead_shape = tuple(native.shape[:-3])
        h, w = native.shape[-2:]
        self.inside = (
            (slice(0, h), slice(0, w)) if include_border else activations.native_interior()
        )
        self._planes: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.version = 0  # counts changes, so that followers recompute only when needed

    def record(self, idx: tuple[int, ...], plane: np.ndarray) -> None:
        """Note the ranges of plane ``idx``, given its ``(C, h, w)`` native activations."""
        if idx not in self._planes:
            self._planes[idx] = channel_stats(plane, self.inside)
            self.version += 1

    def plane(self, idx: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` per channel of plane ``idx``; reads (computes) the plane if new."""
        idx = tuple(int(i) for i in idx)
        if idx not in self._planes:
            self.record(idx, np.asarray(self.activations.native[idx]))
        return self._planes[idx]

    def stack(self) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` per channel over every plane recorded so far."""
        lows, highs = zip(*self._planes.values(), strict=False)
        return np.min(lows, axis=0), np.max(highs, axis=0)

    @property
    def planes(self) -> list[tuple[int, ...]]:
        """The planes recorded so far."""
        return sorted(self._planes)

    def sample(
        self, n: int = STACK_SAMPLE_PLANES, label: str = ""
    ) -> Generator[Progress, None, None]:
        """Record ``n`` planes spread evenly over the stack (first and last included).

        Yields progress; computes only those planes, one at a time, and keeps none of them
        beyond the stack's own small cache.
        """
        total = math.prod(self.lead_shape)
        flat = np.unique(np.linspace(0, total - 1, min(int(n), total)).round().astype(int))
        todo = [
            idx
            for idx in (tuple(int(i) for i in np.unravel_index(f, self.lead_shape)) for f in flat)
            if idx not in self._planes
        ]
        native = self.activations.native
        for k, idx in enumerate(todo):
            message = f"{label}contrast of the stack: plane {idx} ({k + 1}/{len(todo)} sampled)"
            yield Progress(k, len(todo), message)
            if isinstance(native, LazyNative):  # one step per network block: cancel between them
                plane = yield from report_steps(
                    native.iter_plane(idx),
                    lambda _, k=k, message=message: Progress(k, len(todo), message),
                )
            else:
                plane = np.asarray(native[idx])
            self.record(idx, plane)
        if todo:
            yield Progress(len(todo), len(todo), f"{label}contrast of the stack estimated")


def _limits(low: float, high: float, diverging: bool) -> tuple[float, float]:
    if diverging:
        m = max(abs(float(low)), abs(float(high)))
        return (-m, m) if m > 0 else (-1.0, 1.0)
    low, high = float(low), float(high)
    return (low, high) if high > low else (low, low + 1.0)


def channel_contrast_limits(native: Any, info: LayerInfo, mode: str = "channel") -> np.ndarray:
    """Contrast limits per channel, ``(C, 2)``, like MATLAB's ``mat2gray``.

    ``mode="channel"``: each channel's own min..max; ``"global"``: the whole layer's, for every
    channel. Layers with negative values (before a ReLU) get limits symmetric about zero, so
    the diverging colormap's centre stays at zero.
    """
    return limits_from_ranges(*channel_stats(native), info, mode)


def limits_from_ranges(
    low: np.ndarray, high: np.ndarray, info: LayerInfo, mode: str = "channel"
) -> np.ndarray:
    """:func:`channel_contrast_limits` from per-channel ``(C,)`` minima and maxima."""
    if mode not in CONTRAST_MODES:
        raise ValueError(f"contrast must be one of {CONTRAST_MODES}, not {mode!r}.")
    if mode == "global":
        low = np.full_like(low, low.min())
        high = np.full_like(high, high.max())
    diverging = not info.after_relu
    return np.array(
        [_limits(lo, hi, diverging) for lo, hi in zip(low, high, strict=False)], dtype=float
    )


# Opacity ramps: how far from zero (as a fraction of the contrast range) a value has to be to
# be drawn fully opaque. Quiet regions stay see-through, so the image shows there.
SEQUENTIAL_FADE = 0.2
DIVERGING_FADE = 0.15


def sequential_colormap() -> Any:
    """napari's magma, fading to see-through towards zero.

    A post-ReLU channel is zero wherever it does not respond; an opaque dark colour there would
    veil the whole image.
    """
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    controls = np.linspace(0.0, 1.0, 33)
    colors = AVAILABLE_COLORMAPS["magma"].map(controls)
    colors[:, 3] = np.clip(controls / SEQUENTIAL_FADE, 0.0, 1.0)
    return Colormap(colors=colors, controls=controls, name=SEQUENTIAL_COLORMAP_NAME)


def diverging_colormap() -> Any:
    """Blue for negative, red for positive, see-through at zero.

    Used with limits symmetric about zero, so the colormap's centre is zero: where a pre-ReLU
    channel is indifferent, the image shows through. Lightness tells the magnitude (yellow to
    deep red, cyan to deep blue); no white middle as in RdBu, whose pale tints vanish over a
    bright image.
    """
    from napari.utils.colormaps import Colormap

    fade = DIVERGING_FADE / 2  # in colormap coordinates, where zero is 0.5
    return Colormap(
        colors=[
            [0.02, 0.08, 0.55, 1.0],
            [0.3, 0.85, 1.0, 0.9],
            [0.5, 0.5, 0.5, 0.0],
            [1.0, 0.8, 0.2, 0.9],
            [0.75, 0.0, 0.05, 1.0],
        ],
        controls=[0.0, 0.5 - fade, 0.5, 0.5 + fade, 1.0],
        name=DIVERGING_COLORMAP_NAME,
    )


def display_defaults(info: LayerInfo) -> dict[str, Any]:
    """Colormap, blending and opacity for a layer: sequential after a ReLU, diverging before."""
    if info.after_relu:
        return {"colormap": sequential_colormap(), "blending": "translucent", "opacity": 0.8}
    return {"colormap": diverging_colormap(), "blending": "translucent", "opacity": 0.8}


def activation_metadata(result: ActivationResult, contrast: str) -> dict[str, Any]:
    """What a screenshot of the layer needs to be explained later (plain, JSON-able values)."""
    from . import __version__

    info, net = result.layer, result.network
    arch = architecture_of(info)  # the network's, as its weights are net's
    native = result.activations.native
    described = info.metadata()
    return {
        "plugin_version": __version__,
        "source_layer": result.source_name,
        "layer": described["layer"],
        "network": arch.title,  # as in exports; its short name is under "layer"
        "layer_index": int(info.index),  # the network layer's place in its network
        "geometry": {
            **described["geometry"],
            "native_shape": list(native.shape),  # (..., C, h, w)
            "layer_axes": "(C, ..., H, W)",
        },
        "weights": weights_metadata(net),
        "input_scale": float(result.input_scale),
        "backend": {
            "name": result.backend,
            "precision": result.precision,
            "device": str(net.device),
        },
        "normalisation": {
            "intensity_range": (
                None
                if result.intensity_range is None
                else [float(v) for v in result.intensity_range]
            ),
            "mean": list(net.mean),
            "std": list(net.std),
        },
        "contrast": contrast,
        "stack_contrast": result.stack_contrast,
        "include_border": bool(result.include_border),
        "pyramid_level": result.level,
        **(
            {
                "channel_layers": {
                    "names": list(result.source_names),
                    "as": list(result.source_colours),
                    "intensity_ranges": [
                        [float(v) for v in r] for r in result.source_intensity_ranges
                    ],
                }
            }
            if result.source_names
            else {}
        ),
    }


class ChannelFirst:
    """Lazy view of ``(..., C, H, W)`` activations as ``(C, *(1,) * pad, ..., H, W)``.

    Moves only the index, never the data: ``view[c, z]`` reads ``stack[z, c]``. The ``pad``
    one-plane axes after the channel axis stand for other layers' axes that this layer does not
    have (see :mod:`napari_activations._channel_axes`): every index on them reads the same
    plane.
    """

    def __init__(self, stack: AlignedActivations, pad: int = 0):
        self.stack = stack
        self.dtype = stack.dtype
        self.pad = int(pad)
        self._lead = stack.ndim - 3

    @property
    def native(self) -> np.ndarray:
        return self.stack.native

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.stack.shape
        return (s[self._lead],) + (1,) * self.pad + s[: self._lead] + s[self._lead + 1 :]

    @property
    def ndim(self) -> int:
        return self.stack.ndim + self.pad

    @property
    def size(self) -> int:
        return self.stack.size

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        out = np.moveaxis(np.asarray(self.stack, dtype=dtype), self._lead, 0)
        return out.reshape(self.shape)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None or k is Ellipsis for k in key) or len(key) > self.ndim:
            return np.asarray(self)[key]
        key = key + (slice(None),) * (self.ndim - len(key))
        padded, key = key[1 : 1 + self.pad], key[:1] + key[1 + self.pad :]
        out = self.stack[key[1 : 1 + self._lead] + key[:1] + key[1 + self._lead :]]
        # The channel axis survives where it was sliced, not indexed: move it back to the front.
        channel_kept = not isinstance(key[0], (int, np.integer))
        if channel_kept:
            lead_kept = sum(not isinstance(k, (int, np.integer)) for k in key[1 : 1 + self._lead])
            out = np.moveaxis(out, lead_kept, 0)
        # A one-plane axis survives where it was sliced: give it back its (one) plane.
        kept = sum(not isinstance(k, (int, np.integer)) for k in padded)
        if kept:
            at = int(channel_kept)
            out = np.asarray(out).reshape(out.shape[:at] + (1,) * kept + out.shape[at:])
        return out


def layer_data(activations: AlignedActivations) -> Any:
    """The array napari shows: ``(C, H, W)`` as it is, a stack as ``(C, ..., H, W)``."""
    return activations if activations.ndim == 3 else ChannelFirst(activations)


def result_ranges(result: ActivationResult) -> ChannelRanges:
    """The result's :class:`ChannelRanges`, or new ones holding its first plane."""
    if result.ranges is not None:
        return result.ranges
    ranges = ChannelRanges(result.activations, result.include_border)
    ranges.plane(_first_plane(ranges))
    return ranges


def _first_plane(ranges: ChannelRanges) -> tuple[int, ...]:
    return (0,) * len(ranges.lead_shape)


def starting_channel(ranges: ChannelRanges) -> int:
    """The channel the slider starts on: the strongest of the first plane, border left out
    unless the ranges include it (MATLAB's ``max`` over the image; as
    :func:`~napari_activations.strongest_channels` ranks them ``by="max"``)."""
    _, high = ranges.plane(_first_plane(ranges))
    return top_channels(high, 1)[0][0]


def _shown_limits(
    ranges: ChannelRanges,
    plane: tuple[int, ...],
    info: LayerInfo,
    contrast: str,
    stack_contrast: str,
) -> np.ndarray:
    """``(C, 2)`` contrast limits while ``plane`` is shown."""
    if stack_contrast == "plane" or not ranges.lead_shape:
        return limits_from_ranges(*ranges.plane(plane), info, contrast)
    ranges.plane(plane)  # the shown plane widens the stack's range when it lies outside
    return limits_from_ranges(*ranges.stack(), info, contrast)


def activation_layer_kwargs(
    source: Any,
    result: ActivationResult,
    contrast: str = "channel",
    ranges: ChannelRanges | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``napari.layers.Image`` for ``result`` shown over ``source``.

    The channel axis leads and takes the starting (strongest) channel's limits; everything
    else follows the source layer's geometry, so the world extents of the two agree. A result
    computed on a pyramid level is scaled by that level's downsample factors, so it covers the
    full-resolution image as napari draws that level.
    """
    info = result.layer
    ranges = result_ranges(result) if ranges is None else ranges
    channel = starting_channel(ranges)
    limits = _shown_limits(ranges, _first_plane(ranges), info, contrast, result.stack_contrast)
    labels = tuple(getattr(source, "axis_labels", ()) or ())
    units = tuple(str(u) for u in getattr(source, "units", ()) or ())
    kwargs: dict[str, Any] = {
        "name": activation_layer_name(result.source_name, info),
        "rgb": False,
        "multiscale": False,
        "contrast_limits": tuple(limits[channel]),
        "metadata": {METADATA_KEY: activation_metadata(result, contrast)},
        "interpolation2d": "linear",
        **expand_transform(source, 1),
        **display_defaults(info),
    }
    if result.level_factors is not None:
        kwargs["scale"] = (1.0,) + tuple(
            float(s) * float(f) for s, f in zip(source.scale, result.level_factors, strict=False)
        )
    if labels:
        kwargs["axis_labels"] = (channel_axis_label(layer_label(info)),) + labels
    if units:
        kwargs["units"] = ("pixel",) + units
    return kwargs


# ---------------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------------


def avoid_triton_llvm_crash() -> bool:
    """Keep torch from importing triton into a process where OpenGL has loaded Mesa's LLVM.

    triton's library carries its own LLVM, which clashes with the system ``libLLVM`` that
    Mesa's OpenGL drivers (llvmpipe under Xvfb, radeonsi) load into napari's process: importing
    triton then kills the process (SIGSEGV), and torchvision imports it via ``torch._dynamo``.
    Marking triton as absent makes torch treat it as not installed (``find_spec`` returns
    None); nothing here uses triton. Call before torch or torchvision is first imported.

    Returns True if triton was marked absent.
    """
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            llvm_loaded = any("libLLVM" in line for line in maps)
    except OSError:
        return False
    if llvm_loaded:
        sys.modules["triton"] = None
    return llvm_loaded


def resolve_image_layer(viewer: napari.Viewer, image_layer_or_name: Any) -> Image:
    """The viewer's Image layer given as a layer or a name; a plain error for anything else."""
    from napari.layers import Image

    layer = image_layer_or_name
    if isinstance(layer, str):
        if layer not in viewer.layers:
            names = [lay.name for lay in viewer.layers if isinstance(lay, Image)]
            offer = (
                f" Image layers: {', '.join(repr(n) for n in names)}."
                if names
                else (" The viewer has no image layer: open an image first.")
            )
            raise LayerInputError(f"There is no layer named {layer!r}.{offer}")
        layer = viewer.layers[layer]
    if not isinstance(layer, Image):
        raise LayerInputError(
            f"{getattr(layer, 'name', layer)!r} is a "
            f"{type(layer).__name__} layer; activations need an Image layer."
        )
    return layer


def choose_level(level_shapes: Sequence[tuple[int, ...]], rgb: bool = False) -> int:
    """The default pyramid level: the finest whose longer side is at most
    :data:`LEVEL_MAX_SIDE` pixels (the coarsest, if every level is larger).

    The network was trained on 227-pixel photographs, and its deepest layers see windows of
    about 200 pixels: on a level of a few thousand pixels a side they see structures at a
    scale they can answer, and one forward pass takes seconds, where the finest level of a
    whole-slide pyramid would take minutes and look at each cell through a keyhole.
    """
    sides = [max(image_planes_shape(tuple(shape), rgb)[1]) for shape in level_shapes]
    for level, side in enumerate(sides):
        if side <= LEVEL_MAX_SIDE:
            return level
    return len(sides) - 1


def _level_data(source: Image, level: int | None) -> tuple[Any, int | None, tuple | None]:
    """(array, level, downsample factors) to compute on for an image layer."""
    if not source.multiscale:
        if level not in (None, 0):
            raise LayerInputError(
                f"{source.name!r} has one resolution, so there is no pyramid "
                f"level {level}; leave level unset."
            )
        return source.data, None, None
    shapes = [tuple(int(n) for n in shape) for shape in source.level_shapes]
    if level is None:
        level = choose_level(shapes, bool(source.rgb))
    if not (isinstance(level, (int, np.integer)) and 0 <= level < len(shapes)):
        raise LayerInputError(
            f"{source.name!r} has pyramid levels 0 to {len(shapes) - 1}; "
            f"level={level!r} is not one of them."
        )
    level = int(level)
    factors = tuple(float(f) for f in np.asarray(source.downsample_factors)[level][: source.ndim])
    return source.data[level], level, factors


class ChannelsAsRGB:
    """Lazy ``(..., H, W, n)`` float32 view of single-channel arrays as the network's input
    channels: R, G, B (``n = 3``, the default) or a network's ``n`` channels.

    Each array is scaled to 0..1 by its own ``(low, high)`` (clipped; NaN as low), as napari
    shows each channel layer with its own contrast limits; a missing blue (or green and blue)
    is zero. Planes are read when indexed, so stacks and dask arrays stay lazy.
    """

    dtype = np.dtype(np.float32)

    def __init__(
        self,
        arrays: Sequence[Any],
        ranges: Sequence[tuple[float, float] | None],
        channels: int = 3,
    ):
        self.arrays = list(arrays)  # R, G, B; None: that colour is zero
        self.ranges = [None if r is None else (float(r[0]), float(r[1])) for r in ranges]
        self.channels = max(int(channels), len(self.arrays))
        present = next(a for a in self.arrays if a is not None)
        self.shape = tuple(int(n) for n in present.shape) + (self.channels,)
        self.ndim = len(self.shape)

    def __array__(self, dtype=None, copy=None):
        out = self[()]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) >= self.ndim or any(k is None or k is Ellipsis for k in key):
            return np.asarray(self)[key]  # indexes the colour axis too: the slow, plain way
        out = None
        for i, (array, bounds) in enumerate(zip(self.arrays, self.ranges, strict=False)):
            if array is None:
                continue
            low, high = bounds
            v = np.asarray(array[key], dtype=np.float32)
            v = (v - np.float32(low)) * np.float32(1.0 / (high - low) if high > low else 0.0)
            if out is None:
                out = np.zeros(v.shape + (self.channels,), dtype=np.float32)
            out[..., i] = np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0)
        return out


_PLACEMENT = ("scale", "translate", "rotate", "shear", "affine")


def check_channel_layers(layers: Sequence[Image], in_channels: int = 3) -> None:
    """Refuse channel layers that cannot be the network's R, G, B (or, for a network with
    ``in_channels`` other than 3, its input channels); the message says why."""
    names = [layer.name for layer in layers]
    if in_channels != 3 and len(layers) != in_channels:
        raise LayerInputError(
            f"The network takes {in_channels} input channel{'s' if in_channels != 1 else ''}: "
            f"choose one image layer, or {in_channels} single-channel layers as its channels, "
            f"in order; got {len(layers)}: {', '.join(map(repr, names))}."
        )
    if in_channels == 3 and not 1 <= len(layers) <= 3:
        raise LayerInputError(
            f"Choose one image layer, or two or three as the network's R, G "
            f"and B; got {len(layers)}: {', '.join(map(repr, names))}."
        )
    if len(set(map(id, layers))) < len(layers):
        raise LayerInputError(
            f"A channel layer is chosen twice ({', '.join(map(repr, names))}); "
            "choose different layers for R, G and B."
        )
    for layer in layers:
        if layer.rgb:
            raise LayerInputError(
                f"{layer.name!r} is an RGB layer; R, G and B are chosen from "
                "single-channel layers. Compute on it alone."
            )
        if layer.multiscale:
            raise LayerInputError(
                f"{layer.name!r} is multiscale; channel layers are combined "
                "at one resolution. Add one level of each as its own layer, "
                f"e.g. viewer.add_image(viewer.layers[{layer.name!r}].data[1])."
            )
    first = layers[0]
    for layer in layers[1:]:
        if tuple(layer.data.shape) != tuple(first.data.shape):
            raise LayerInputError(
                f"The channel layers must have the same shape: {first.name!r} is "
                f"{tuple(first.data.shape)} and {layer.name!r} is {tuple(layer.data.shape)}."
            )
        for what in _PLACEMENT:
            a = np.asarray(
                getattr(first, what) if what != "affine" else first.affine.affine_matrix,
                dtype=float,
            )
            b = np.asarray(
                getattr(layer, what) if what != "affine" else layer.affine.affine_matrix,
                dtype=float,
            )
            if a.shape != b.shape or not np.allclose(a, b):
                raise LayerInputError(
                    f"The channel layers must lie on the same pixels in the world: "
                    f"{first.name!r} has {what} {_plain(a)} and {layer.name!r} has "
                    f"{_plain(b)}. Give them the same {what} (layer.{what} = ...), or "
                    "resample one onto the other's grid."
                )


def _plain(a: np.ndarray) -> str:
    return str(np.round(a, 6).tolist())


def exposure_warning(
    name: str, data: Any, intensity_range: tuple[float, float], rgb: bool = False
) -> str | None:
    """A warning when the network input of ``data`` (its first plane) is nearly black or
    nearly saturated after scaling ``intensity_range`` to 0..1; None when it is not.

    Nearly black: the 99th percentile below :data:`DARK_BELOW`; nearly saturated: the 1st
    percentile above ``1 - DARK_BELOW``. A 16-bit image shown with limits 0..65535 is the
    common case: its activations come out tens of times weaker than with its real range.
    """
    dtype = np.dtype(data.dtype)
    if not (
        dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        return None  # the computation itself refuses such an image, and says why
    lead, (h, w), colour = image_planes_shape(tuple(data.shape), rgb)
    if min(h, w) == 0 or any(n == 0 for n in lead):
        return None
    step = max(1, math.ceil(math.sqrt(h * w / 2**20)))  # about a million pixels are plenty
    plane = data[(0,) * len(lead)] if lead else data
    plane = np.asarray(plane[::step, ::step])
    if colour:
        plane = plane[..., :3]
    low, high = (float(v) for v in intensity_range)
    v = (plane.astype(np.float32) - np.float32(low)) / np.float32(high - low or 1.0)
    v = np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0)
    p1, p99 = (float(p) for p in np.percentile(v, [1, 99]))
    fix = (
        f"Fit the contrast limits to the image (auto-contrast 'once' in the layer controls, "
        f"or viewer.layers[{name!r}].reset_contrast_limits() in the console) and run again."
    )
    if p99 < DARK_BELOW:
        return (
            f"{name!r} is nearly black to the network: 99% of its pixels are below "
            f"{DARK_BELOW:.0%} of its contrast limits ({low:g} to {high:g}), so its "
            f"activations are weak. {fix}"
        )
    if p1 > 1 - DARK_BELOW:
        return (
            f"{name!r} is nearly saturated to the network: 99% of its pixels are above "
            f"{1 - DARK_BELOW:.0%} of its contrast limits ({low:g} to {high:g}), so it "
            f"looks almost uniformly white. {fix}"
        )
    return None


def _as_sources(source: Any) -> list[Image | None]:
    """R, G, B image layers (None: that colour is left out) from one layer or a sequence."""
    if isinstance(source, (list, tuple)):
        if not source or source[0] is None:
            raise LayerInputError(
                "The first (red) channel layer must be given; None may only "
                "leave out green or blue."
            )
        return [None if s is None else unproxy(s) for s in source]
    return [unproxy(source)]


def compute_for_image_layer(
    network: Network | None,
    source: Image | Sequence[Image],
    layer: str | LayerInfo,
    *,
    weights: Any = "DEFAULT",
    input_scale: float = 1.0,
    device: Any = "auto",
    level: int | None = None,
    stack_contrast: str = "stack",
    include_border: bool = False,
    backend: str = "auto",
    precision: str = "float32",
) -> Generator[Progress, None, ActivationResult]:
    """Compute ``layer``'s activations for an image layer, yielding progress.

    ``network`` is used if given; otherwise the network is loaded (or taken from the cache)
    with ``weights`` on ``device``, inside this generator so that a worker thread does it. The
    layer's contrast limits are the intensity range, so the image the network sees is the one
    napari shows.

    ``source`` may be two or three single-channel image layers: the network's R, G and B, each
    scaled by its own contrast limits. A multiscale layer is computed on pyramid ``level``
    (default :func:`choose_level`). A stack with ``stack_contrast="stack"`` samples
    :data:`STACK_SAMPLE_PLANES` planes here for its contrast limits.
    """
    started = next(_RUN_ORDER)
    info = find_layer(layer) if network is None else network.find_layer(layer)
    if stack_contrast not in STACK_CONTRAST_MODES:
        raise ValueError(
            f"stack_contrast must be one of {STACK_CONTRAST_MODES}, not {stack_contrast!r}."
        )
    sources = _as_sources(source)
    present = [s for s in sources if s is not None]
    names: tuple[str, ...] = ()
    source_ranges: tuple[tuple[float, float], ...] = ()
    colours = ""
    warnings_found = []
    in_channels = (network.arch if network is not None else architecture_of(info)).in_channels
    channel_axis = None
    if len(present) > 1:
        check_channel_layers(present, in_channels)
        names = tuple(s.name for s in present)
        if in_channels == 3:
            colours = "".join(c for c, s in zip("RGB", sources, strict=False) if s is not None)
        source_ranges = tuple(tuple(float(v) for v in s.contrast_limits) for s in present)
        for s, limits in zip(present, source_ranges, strict=False):
            warnings_found.append(exposure_warning(s.name, s.data, limits))
        data = ChannelsAsRGB(
            [None if s is None else s.data for s in sources],
            [None if s is None else tuple(float(v) for v in s.contrast_limits) for s in sources],
            in_channels,
        )
        intensity_range, rgb, name = (0.0, 1.0), True, " + ".join(names)
        if in_channels != 3:  # the network's n channels, last
            rgb, channel_axis = None, -1
        chosen, factors = None, None
    else:
        only = present[0]
        data, chosen, factors = _level_data(only, level)
        intensity_range = tuple(float(v) for v in only.contrast_limits)
        rgb, name = bool(only.rgb), only.name
        with contextlib.suppress(ImageError):  # the computation below says what is wrong
            warnings_found.append(exposure_warning(name, data, intensity_range, rgb))
    input_warning = " ".join(w for w in warnings_found if w) or None
    avoid_triton_llvm_crash()
    if network is None:
        network = yield from _load_network(info, weights, device)
    aligned = yield from iter_activations(
        network,
        data,
        info,
        resize=True,
        input_scale=input_scale,
        intensity_range=intensity_range,
        rgb=rgb,
        backend=backend,
        precision=precision,
        channel_axis=channel_axis,
    )
    ranges = ChannelRanges(aligned, include_border)
    ranges.plane((0,) * len(ranges.lead_shape))  # computed already (or, for dask, now)
    if stack_contrast == "stack" and ranges.lead_shape:
        yield from ranges.sample(STACK_SAMPLE_PLANES, f"{info.name}: ")
    return ActivationResult(
        aligned,
        info,
        network,
        float(input_scale),
        intensity_range,
        name,
        started,
        ranges=ranges,
        stack_contrast=stack_contrast,
        include_border=bool(include_border),
        level=chosen,
        level_factors=factors,
        source_names=names,
        source_colours=colours,
        source_intensity_ranges=source_ranges,
        input_warning=input_warning,
        backend=aligned.backend,
        precision=precision,
    )


def _load_network(info: LayerInfo, weights: Any, device: Any) -> Generator[Progress, None, Any]:
    """The network ``info`` belongs to, loaded with ``weights`` on ``device`` (or cached)."""
    from . import network as networks

    title = architecture_of(info).title
    yield Progress(0, 1, f"Loading {title}")
    if info.network == "squeezenet1_1":
        return networks.load_squeezenet(weights, device=device, progress=False)
    if info.network not in networks.NETWORK_TITLES:
        raise LayerInputError(
            f"{info.name!r} is a layer of {title}, which cannot be loaded by name: pass the "
            "network itself (network=...)."
        )
    return networks.load_network(info.network, weights, device=device, progress=False)


# ---------------------------------------------------------------------------------------------
# Viewer
# ---------------------------------------------------------------------------------------------


def unproxy(obj: Any) -> Any:
    """The object behind napari's ``PublicOnlyProxy`` (what plugin widgets are given).

    Proxies are made afresh on each access, so they cannot be compared with ``is`` or held by
    weak references; this module holds its own layers and the viewer weakly.
    """
    return getattr(obj, "__wrapped__", obj)


def find_activation_layer(
    viewer: napari.Viewer, source_name: str, layer: str | LayerInfo
) -> Image | None:
    """The activation layer made earlier from this image and network layer, if any."""
    name = activation_layer_name(source_name, layer)
    if name in viewer.layers and METADATA_KEY in viewer.layers[name].metadata:
        return viewer.layers[name]
    return None


class _ChannelContrast:
    """Keeps a layer's contrast limits on the shown channel's own limits (``mat2gray``).

    ``limits`` is a ``(C, 2)`` array, or a function of the shown plane (the index into the
    layer's axes after the channel) that returns one: a stack's limits can follow its planes.
    """

    def __init__(self, viewer: napari.Viewer, layer: Image, limits: Any):
        self._viewer = weakref.ref(viewer)
        self._layer = weakref.ref(layer)
        self.limits = limits
        viewer.dims.events.current_step.connect(self.update)

    def position(self) -> tuple[int, tuple[int, ...]] | None:
        """(channel, plane) the viewer shows of the layer; None once either is gone."""
        viewer, layer = self._viewer(), self._layer()
        if viewer is None or layer is None or layer not in viewer.layers:
            return None
        return shown_position(viewer, layer)

    def channel(self) -> int | None:
        position = self.position()
        return None if position is None else position[0]

    def update(self, event: Any = None) -> None:
        position = self.position()
        layer = self._layer()
        if position is None or layer is None:
            return
        channel, plane = position
        limits = self.limits(plane) if callable(self.limits) else self.limits
        low, high = (float(v) for v in limits[channel])
        span = layer.contrast_limits_range
        if low < span[0] or high > span[1]:
            layer.contrast_limits_range = (min(low, span[0]), max(high, span[1]))
        if tuple(layer.contrast_limits) != (low, high):
            layer.contrast_limits = (low, high)

    def disconnect(self) -> None:
        viewer = self._viewer()
        if viewer is not None:
            viewer.dims.events.current_step.disconnect(self.update)


# Contrast followers live as long as their layer, and no longer.
_FOLLOWERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# When the computation shown by each activation layer started: a run that started earlier and
# finished later (a widget run overtaken by a console run) must not overwrite a newer result.
_RUN_ORDER = itertools.count()
_STARTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stamp(layer: Image, result: ActivationResult) -> None:
    remember_network(layer, result.network)  # what analyses it: a user's model is in no cache
    if result.started is None:
        _STARTED.pop(layer, None)
    else:
        _STARTED[layer] = result.started


def shown_position(viewer: napari.Viewer, layer: Image) -> tuple[int, tuple[int, ...]]:
    """``(channel, plane)`` of a channel-first layer that the viewer's sliders show.

    ``channel`` indexes the layer's first axis; ``plane`` is the index into a stack's own
    leading axes (between the channel and ``(H, W)``; ``()`` for one image), leaving out the
    one-plane axes that stand for other layers' axes (see ``_channel_axes``). Positions off
    the layer are clipped to its edges.
    """
    point = np.asarray(viewer.dims.point[-layer.ndim :], dtype=float)  # trailing axes
    index = np.round(np.asarray(layer.world_to_data(point), dtype=float))
    shape = layer.data.shape
    clipped = [min(max(int(i), 0), n - 1) for i, n in zip(index[:-2], shape[:-2], strict=False)]
    pad = int(getattr(layer.data, "pad", 0))
    return clipped[0], tuple(clipped[1 + pad :])


def set_contrast(viewer: napari.Viewer, layer: Image, limits: np.ndarray, mode: str) -> None:
    """Give ``layer`` the ``(C, 2)`` per-channel ``limits``.

    ``mode="channel"``: the limits follow the channel slider (each channel its own);
    otherwise every channel shows with the first row's limits.
    """
    old = _FOLLOWERS.pop(layer, None)
    if old is not None:
        old.disconnect()
    layer.contrast_limits_range = (float(limits[:, 0].min()), float(limits[:, 1].max()))
    if mode == "channel":
        follower = _ChannelContrast(viewer, layer, limits)
        _FOLLOWERS[layer] = follower
        follower.update()
    else:
        layer.contrast_limits = tuple(limits[0])


def _follow_contrast(
    viewer: napari.Viewer,
    layer: Image,
    ranges: ChannelRanges,
    info: LayerInfo,
    mode: str,
    stack_contrast: str,
) -> None:
    """Contrast limits that follow the channel slider, and a stack's planes."""
    if not ranges.lead_shape:
        set_contrast(viewer, layer, limits_from_ranges(*ranges.plane(()), info, mode), mode)
        return
    old = _FOLLOWERS.pop(layer, None)
    if old is not None:
        old.disconnect()
    cache: dict[Any, np.ndarray] = {}

    def limits(plane: tuple[int, ...]) -> np.ndarray:
        ranges.plane(plane)  # the shown plane is computed for display anyway: note its range
        key = plane if stack_contrast == "plane" else ranges.version
        if key not in cache:
            cache.clear()
            cache[key] = _shown_limits(ranges, plane, info, mode, stack_contrast)
        return cache[key]

    first = limits(_first_plane(ranges))
    layer.contrast_limits_range = (float(first[:, 0].min()), float(first[:, 1].max()))
    follower = _ChannelContrast(viewer, layer, limits)
    _FOLLOWERS[layer] = follower
    follower.update()


def earlier_activation_layers(
    viewer: napari.Viewer, source_name: str, keep: str | None = None
) -> list[Image]:
    """The activation layers made from the image ``source_name``, except the one named ``keep``."""
    return [
        lay
        for lay in viewer.layers
        if METADATA_KEY in lay.metadata
        and lay.name != keep
        and lay.metadata[METADATA_KEY].get("source_layer") == source_name
    ]


def add_activation_layer(
    viewer: napari.Viewer,
    source: Image,
    result: ActivationResult,
    *,
    contrast: str = "channel",
    replace: bool = False,
) -> Image:
    """Add ``result`` to the viewer over ``source``, or update the layer made earlier.

    A new layer goes on top of the layer list, so that it is seen (earlier results stay
    beneath it), and starts at its strongest channel. An update keeps the user's colormap,
    blending, opacity, channel and place in the list, and replaces data, geometry, metadata
    and contrast, unless the layer already shows a run that started after this one (then it is
    left as it is). ``replace=True`` also removes the image's other activation layers, so that
    one activation layer per image stays.
    """
    viewer, source = unproxy(viewer), unproxy(source)
    _mesa_workaround.install()  # deleting layers must not crash napari (Mesa software GL)
    if replace:
        name = activation_layer_name(result.source_name, result.layer)
        for old in earlier_activation_layers(viewer, result.source_name, keep=name):
            viewer.layers.remove(old)
    ranges = result_ranges(result)
    kwargs = activation_layer_kwargs(source, result, contrast, ranges)
    data = layer_data(result.activations)
    existing = find_activation_layer(viewer, result.source_name, result.layer)
    if existing is not None:
        layer = existing
        if result.started is not None and result.started < _STARTED.get(layer, -1):
            return layer  # superseded: a run started later has updated the layer already
        _stamp(layer, result)
        for key in ("scale", "translate", "rotate", "shear", "affine", "metadata"):
            setattr(layer, key, kwargs[key])
        layer.data = data
        _follow_contrast(viewer, layer, ranges, result.layer, contrast, result.stack_contrast)
        return layer
    from napari.layers import Image

    layer = Image(data, **kwargs)
    _stamp(layer, result)
    follow_viewer(viewer)  # its channel axis gets a slider of its own, as it is added
    viewer.layers.append(layer)
    axis = viewer.dims.ndim - layer.ndim
    viewer.dims.set_current_step(axis, starting_channel(ranges))
    _follow_contrast(viewer, layer, ranges, result.layer, contrast, result.stack_contrast)
    return layer


def show_activations(
    viewer: napari.Viewer,
    image_layer_or_name: Any,
    layer: str | LayerInfo,
    *,
    network: Network | None = None,
    weights: Any = "DEFAULT",
    input_scale: float = 1.0,
    contrast: str = "channel",
    device: Any = "auto",
    level: int | None = None,
    stack_contrast: str = "stack",
    include_border: bool = False,
    replace: bool = False,
    backend: str = "auto",
    precision: str = "float32",
) -> Image:
    """Compute a network layer's activations for an image layer and show them in the viewer.

    The same code path as the widget, run synchronously (for napari's console and scripts)::

        import napari_activations as na
        na.show_activations(viewer, "Face", "fire6-relu_squeeze1x1")
        na.show_activations(viewer, ["DNA", "Actin", "Tubulin"], "conv1")  # as R, G, B

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer_or_name : napari.layers.Image, str, or a list or tuple of them
        The image layer, or its name. Two or three single-channel layers (e.g. from
        ``viewer.add_image(..., channel_axis=0)``) are the network's R, G and B (blue zero when
        there are two; ``None`` leaves green out, e.g. ``["DNA", None, "Tubulin"]``), each
        scaled by its own contrast limits; they must have the same shape and lie on the same
        pixels in the world. The result is placed over the first.
    layer : str or LayerInfo
        Network layer, e.g. ``"conv1"`` or ``"fire6-squeeze1x1"``.
    network : Network, optional
        A network from :func:`~napari_activations.load_network` (any network); by default
        the network ``layer`` belongs to (SqueezeNet v1.1 for a name) is loaded with
        ``weights`` on ``device`` (and cached).
    weights : "DEFAULT", path or None
        As in :func:`~napari_activations.load_squeezenet`.
    input_scale : float
        The network sees the image resized by this factor.
    contrast : "channel" or "global"
        Per-channel min..max (``mat2gray`` on each channel, following the channel slider), or
        one range for the whole layer.
    device : "auto", "cpu", "cuda" or "mps"
    level : int, optional
        For a multiscale (pyramid) image layer: the level to compute on, 0 being the full
        resolution. Default :func:`choose_level`: the finest level at most 2048 pixels a side.
        The result lies over the full-resolution image, scaled by that level's downsample
        factors.
    stack_contrast : "stack" or "plane"
        For a stack: contrast limits for the whole stack, estimated from
        :data:`STACK_SAMPLE_PLANES` planes spread over it and widened by any plane shown later
        that goes beyond them (brightness compares between planes), or each plane's own
        (follows the slider; every plane uses its full range).
    include_border : bool
        False (default): the starting channel and the contrast limits leave out the border
        within half a receptive field of the image edge, where the network's zero padding
        shows and some channels answer it on any image. True: every pixel counts.
    replace : bool
        Remove the image's other activation layers, keeping one per image. By default they
        stay (napari never removes a layer the user did not remove), beneath the new one.
    backend : "auto", "torch" or "onnxruntime"
        What runs the network (see :func:`~napari_activations.activations`); the one that ran
        is recorded in the layer's metadata.
    precision : "float32", "float16" or "bfloat16"
        Half precision on GPUs only.

    Returns
    -------
    napari.layers.Image
        ``(C, H, W)`` (``(C, ..., H, W)`` for a stack) over the image, named
        ``"<image name>: <layer name>"`` (``"<R> + <G> + <B>: <layer name>"`` for channel
        layers); updated in place when it exists already.

    Warns
    -----
    UserWarning
        When the network input is nearly black or nearly saturated under the layer's contrast
        limits (see :func:`exposure_warning`).
    """
    if contrast not in CONTRAST_MODES:
        raise ValueError(f"contrast must be one of {CONTRAST_MODES}, not {contrast!r}.")
    if isinstance(image_layer_or_name, (list, tuple)):
        sources = [
            None if s is None else resolve_image_layer(viewer, s) for s in image_layer_or_name
        ]
        if not any(s is not None for s in sources):
            raise LayerInputError(
                "Choose one image layer, or two or three as R, G and B; the list has none."
            )
        source: Any = sources if len(sources) > 1 else sources[0]
    else:
        source = resolve_image_layer(viewer, image_layer_or_name)
    gen = compute_for_image_layer(
        network,
        source,
        layer,
        weights=weights,
        input_scale=input_scale,
        device=device,
        level=level,
        stack_contrast=stack_contrast,
        include_border=include_border,
        backend=backend,
        precision=precision,
    )
    result = drain(gen)
    if result.input_warning:
        warnings.warn(result.input_warning, UserWarning, stacklevel=2)
    first = _as_sources(source)[0]
    return add_activation_layer(viewer, first, result, contrast=contrast, replace=replace)
