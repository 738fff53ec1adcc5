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

import itertools
import sys
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._channel_axes import channel_axis_label, follow_viewer
from .alignment import AlignedActivations
from .compute import Progress, iter_activations
from .layers import LayerInfo, find_layer

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = [
    "ActivationResult",
    "ChannelFirst",
    "LayerInputError",
    "activation_layer_kwargs",
    "activation_layer_name",
    "add_activation_layer",
    "avoid_triton_llvm_crash",
    "channel_contrast_limits",
    "compute_for_image_layer",
    "earlier_activation_layers",
    "expand_transform",
    "find_activation_layer",
    "show_activations",
    "strongest_channel",
    "unproxy",
]

METADATA_KEY = "napari_activations"
"""Key of the activation layer's metadata (a dict) in ``layer.metadata``."""

SEQUENTIAL_COLORMAP_NAME = "activation magma"
DIVERGING_COLORMAP_NAME = "activation blue-red"
CONTRAST_MODES = ("channel", "global")


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
    backend: str | None = None
    precision: str = "float32"


# ---------------------------------------------------------------------------------------------
# Pure functions: names, geometry, contrast, colormaps, metadata
# ---------------------------------------------------------------------------------------------


def activation_layer_name(image_name: str, layer: str | LayerInfo) -> str:
    """``"<image name>: <layer name>"``, e.g. ``"Face: conv1"``."""
    return f"{image_name}: {find_layer(layer).name}"


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


def channel_stats(native: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel minimum and maximum of ``(..., C, h, w)`` activations: two ``(C,)`` arrays.

    A lazily computed stack (planes computed when first looked at) is summarised by its first
    plane, which is computed already: reading every plane here would compute the whole stack
    on napari's thread.
    """
    if not isinstance(native, np.ndarray) and native.ndim > 3:
        native = native[(0,) * (native.ndim - 3)]
    moved = np.moveaxis(np.asarray(native), -3, 0)
    flat = moved.reshape(moved.shape[0], -1)
    return flat.min(axis=1), flat.max(axis=1)


def strongest_channel(native: Any) -> int:
    """The channel holding the largest activation (MATLAB's ``max`` over all pixels)."""
    _, high = channel_stats(native)
    return int(np.argmax(high))


def _limits(low: float, high: float, diverging: bool) -> tuple[float, float]:
    if diverging:
        m = max(abs(float(low)), abs(float(high)))
        return (-m, m) if m > 0 else (-1.0, 1.0)
    low, high = float(low), float(high)
    return (low, high) if high > low else (low, low + 1.0)


def channel_contrast_limits(native: Any, info: LayerInfo, mode: str = "channel"
                            ) -> np.ndarray:
    """Contrast limits per channel, ``(C, 2)``, like MATLAB's ``mat2gray``.

    ``mode="channel"``: each channel's own min..max; ``"global"``: the whole layer's, for every
    channel. Layers with negative values (before a ReLU) get limits symmetric about zero, so
    the diverging colormap's centre stays at zero.
    """
    if mode not in CONTRAST_MODES:
        raise ValueError(f"contrast must be one of {CONTRAST_MODES}, not {mode!r}.")
    low, high = channel_stats(native)
    if mode == "global":
        low = np.full_like(low, low.min())
        high = np.full_like(high, high.max())
    diverging = not info.after_relu
    return np.array([_limits(lo, hi, diverging) for lo, hi in zip(low, high)], dtype=float)


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
        colors=[[0.02, 0.08, 0.55, 1.0], [0.3, 0.85, 1.0, 0.9], [0.5, 0.5, 0.5, 0.0],
                [1.0, 0.8, 0.2, 0.9], [0.75, 0.0, 0.05, 1.0]],
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
    native = result.activations.native
    return {
        "plugin_version": __version__,
        "source_layer": result.source_name,
        "layer": {"name": info.name, "module": info.module, "channels": info.channels,
                  "after_relu": info.after_relu, "block": info.block},
        "geometry": {"stride": info.stride, "offset": info.offset,
                     "receptive_field": info.receptive_field,
                     "native_shape": list(native.shape),  # (..., C, h, w)
                     "layer_axes": "(C, ..., H, W)"},
        "weights": {"description": net.description, "name": net.weights,
                    "sha256": net.sha256, "trained": bool(net.trained)},
        "input_scale": float(result.input_scale),
        "backend": {"name": result.backend, "precision": result.precision,
                    "device": str(net.device)},
        "normalisation": {
            "intensity_range": (None if result.intensity_range is None
                                else [float(v) for v in result.intensity_range]),
            "mean": list(net.mean), "std": list(net.std)},
        "contrast": contrast,
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
        return (s[self._lead],) + (1,) * self.pad + s[: self._lead] + s[self._lead + 1:]

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
        padded, key = key[1: 1 + self.pad], key[:1] + key[1 + self.pad:]
        out = self.stack[key[1: 1 + self._lead] + key[:1] + key[1 + self._lead:]]
        # The channel axis survives where it was sliced, not indexed: move it back to the front.
        channel_kept = not isinstance(key[0], (int, np.integer))
        if channel_kept:
            lead_kept = sum(not isinstance(k, (int, np.integer)) for k in key[1: 1 + self._lead])
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


def activation_layer_kwargs(source: Any, result: ActivationResult, contrast: str = "channel"
                            ) -> dict[str, Any]:
    """Keyword arguments of ``napari.layers.Image`` for ``result`` shown over ``source``.

    The channel axis leads and takes the first (strongest-channel) limits; everything else
    follows the source layer's geometry, so the world extents of the two agree.
    """
    info = result.layer
    native = result.activations.native
    limits = channel_contrast_limits(native, info, contrast)
    channel = strongest_channel(native)
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
    if labels:
        kwargs["axis_labels"] = (channel_axis_label(info.name),) + labels
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
            offer = f" Image layers: {', '.join(repr(n) for n in names)}." if names else (
                " The viewer has no image layer: open an image first.")
            raise LayerInputError(f"There is no layer named {layer!r}.{offer}")
        layer = viewer.layers[layer]
    if not isinstance(layer, Image):
        raise LayerInputError(f"{getattr(layer, 'name', layer)!r} is a "
                              f"{type(layer).__name__} layer; activations need an Image layer.")
    return layer


def compute_for_image_layer(network: Network | None, source: Image, layer: str | LayerInfo, *,
                            weights: Any = "DEFAULT", input_scale: float = 1.0,
                            device: Any = "auto", backend: str = "auto",
                            precision: str = "float32"
                            ) -> Generator[Progress, None, ActivationResult]:
    """Compute ``layer``'s activations for an image layer, yielding progress.

    ``network`` is used if given; otherwise the network is loaded (or taken from the cache)
    with ``weights`` on ``device``, inside this generator so that a worker thread does it. The
    layer's contrast limits are the intensity range, so the image the network sees is the one
    napari shows.
    """
    started = next(_RUN_ORDER)
    info = find_layer(layer)
    if source.multiscale:
        raise LayerInputError(f"{source.name!r} is a multiscale image; activations need one "
                              "resolution. Add one level as its own layer, e.g. "
                              f"viewer.add_image(viewer.layers[{source.name!r}].data[1]).")
    data = source.data
    intensity_range = tuple(float(v) for v in source.contrast_limits)
    rgb = bool(source.rgb)
    name = source.name
    avoid_triton_llvm_crash()
    if network is None:
        yield Progress(0, 1, "Loading SqueezeNet")
        from .network import load_squeezenet

        network = load_squeezenet(weights, device=device, progress=False)
    aligned = yield from iter_activations(network, data, info, resize=True,
                                          input_scale=input_scale,
                                          intensity_range=intensity_range, rgb=rgb,
                                          backend=backend, precision=precision)
    return ActivationResult(aligned, info, network, float(input_scale), intensity_range, name,
                            started, aligned.backend, precision)


# ---------------------------------------------------------------------------------------------
# Viewer
# ---------------------------------------------------------------------------------------------


def unproxy(obj: Any) -> Any:
    """The object behind napari's ``PublicOnlyProxy`` (what plugin widgets are given).

    Proxies are made afresh on each access, so they cannot be compared with ``is`` or held by
    weak references; this module holds its own layers and the viewer weakly.
    """
    return getattr(obj, "__wrapped__", obj)


def find_activation_layer(viewer: napari.Viewer, source_name: str, layer: str | LayerInfo
                          ) -> Image | None:
    """The activation layer made earlier from this image and network layer, if any."""
    name = activation_layer_name(source_name, layer)
    if name in viewer.layers and METADATA_KEY in viewer.layers[name].metadata:
        return viewer.layers[name]
    return None


class _ChannelContrast:
    """Keeps a layer's contrast limits on the shown channel's own limits (``mat2gray``)."""

    def __init__(self, viewer: napari.Viewer, layer: Image, limits: np.ndarray):
        self._viewer = weakref.ref(viewer)
        self._layer = weakref.ref(layer)
        self.limits = limits
        viewer.dims.events.current_step.connect(self.update)

    def channel(self) -> int | None:
        viewer, layer = self._viewer(), self._layer()
        if viewer is None or layer is None or layer not in viewer.layers:
            return None
        axis = viewer.dims.ndim - layer.ndim  # napari aligns layers by their trailing axes
        # The channel axis has scale 1 and translate 0: its world position is the index.
        index = int(np.round(viewer.dims.point[axis]))
        return min(max(index, 0), len(self.limits) - 1)

    def update(self, event: Any = None) -> None:
        channel = self.channel()
        layer = self._layer()
        if channel is None or layer is None:
            return
        low, high = self.limits[channel]
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
    if result.started is None:
        _STARTED.pop(layer, None)
    else:
        _STARTED[layer] = result.started


def _set_contrast(viewer: napari.Viewer, layer: Image, limits: np.ndarray, mode: str) -> None:
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


def earlier_activation_layers(viewer: napari.Viewer, source_name: str,
                              keep: str | None = None) -> list[Image]:
    """The activation layers made from the image ``source_name``, except the one named ``keep``."""
    return [lay for lay in viewer.layers
            if METADATA_KEY in lay.metadata and lay.name != keep
            and lay.metadata[METADATA_KEY].get("source_layer") == source_name]


def add_activation_layer(viewer: napari.Viewer, source: Image, result: ActivationResult, *,
                         contrast: str = "channel", replace: bool = False) -> Image:
    """Add ``result`` to the viewer over ``source``, or update the layer made earlier.

    A new layer goes on top of the layer list, so that it is seen (earlier results stay
    beneath it), and starts at its strongest channel. An update keeps the user's colormap,
    blending, opacity, channel and place in the list, and replaces data, geometry, metadata
    and contrast, unless the layer already shows a run that started after this one (then it is
    left as it is). ``replace=True`` also removes the image's other activation layers, so that
    one activation layer per image stays.
    """
    viewer, source = unproxy(viewer), unproxy(source)
    if replace:
        name = activation_layer_name(result.source_name, result.layer)
        for old in earlier_activation_layers(viewer, result.source_name, keep=name):
            viewer.layers.remove(old)
    kwargs = activation_layer_kwargs(source, result, contrast)
    limits = channel_contrast_limits(result.activations.native, result.layer, contrast)
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
        _set_contrast(viewer, layer, limits, contrast)
        return layer
    from napari.layers import Image

    layer = Image(data, **kwargs)
    _stamp(layer, result)
    follow_viewer(viewer)  # its channel axis gets a slider of its own, as it is added
    viewer.layers.append(layer)
    axis = viewer.dims.ndim - layer.ndim
    viewer.dims.set_current_step(axis, strongest_channel(result.activations.native))
    _set_contrast(viewer, layer, limits, contrast)
    return layer


def show_activations(viewer: napari.Viewer, image_layer_or_name: Any, layer: str | LayerInfo,
                     *, network: Network | None = None, weights: Any = "DEFAULT",
                     input_scale: float = 1.0, contrast: str = "channel",
                     device: Any = "auto", replace: bool = False, backend: str = "auto",
                     precision: str = "float32") -> Image:
    """Compute a network layer's activations for an image layer and show them in the viewer.

    The same code path as the widget, run synchronously (for napari's console and scripts)::

        import napari_activations as na
        na.show_activations(viewer, "Face", "fire6-relu_squeeze1x1")

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer_or_name : napari.layers.Image or str
        The image layer, or its name.
    layer : str or LayerInfo
        Network layer, e.g. ``"conv1"`` or ``"fire6-squeeze1x1"``.
    network : Network, optional
        A network from :func:`~napari_activations.load_squeezenet`; by default it is loaded
        with ``weights`` on ``device`` (and cached).
    weights : "DEFAULT", path or None
        As in :func:`~napari_activations.load_squeezenet`.
    input_scale : float
        The network sees the image resized by this factor.
    contrast : "channel" or "global"
        Per-channel min..max (``mat2gray`` on each channel, following the channel slider), or
        one range for the whole layer.
    device : "auto", "cpu", "cuda" or "mps"
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
        ``"<image name>: <layer name>"``; updated in place when it exists already.
    """
    if contrast not in CONTRAST_MODES:
        raise ValueError(f"contrast must be one of {CONTRAST_MODES}, not {contrast!r}.")
    source = resolve_image_layer(viewer, image_layer_or_name)
    gen = compute_for_image_layer(network, source, layer, weights=weights,
                                  input_scale=input_scale, device=device, backend=backend,
                                  precision=precision)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    return add_activation_layer(viewer, source, result, contrast=contrast, replace=replace)
