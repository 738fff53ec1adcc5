"""Attribution maps in napari: Grad-CAM and occlusion sensitivity as layers over the image.

One code path for the console, scripts and the widget, as for activations:
:func:`compute_attribution_for_image_layer` is the compute (a generator of
:class:`~napari_activations.compute.Progress` returning an :class:`AttributionResult`),
:func:`add_attribution_layer` adds the layer or updates the one made earlier from the same
image, method and target, and :func:`show_attribution` does both synchronously.

A region drawn in a Shapes (or Labels) layer over the image makes a region target (the
class-score map's mean inside it, see :func:`napari_activations.region_target`), and
:func:`rank_classes_for_image_layer` ranks every class by its Grad-CAM inside such a region.

The layer is named ``"<image>: Grad-CAM <class>"`` (or ``"<image>: occlusion <class>"``), has
the image's own pixel grid and transform, and carries what it shows in
``layer.metadata["napari_activations_attribution"]``: method, target, network layer, settings
and weights.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _mesa_workaround
from ._layer_kinds import ATTRIBUTION_KEY
from ._napari_layers import (
    LayerInputError,
    avoid_triton_llvm_crash,
    diverging_colormap,
    expand_transform,
    resolve_image_layer,
    sequential_colormap,
    unproxy,
)
from .compute import Progress, drain
from .layers import LayerInfo

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from .network import Network

__all__ = [
    "ATTRIBUTION_KEY",
    "METHODS",
    "AttributionResult",
    "attribution_layer_name",
    "attribution_layer_kwargs",
    "compute_attribution_for_image_layer",
    "add_attribution_layer",
    "show_attribution",
    "region_layers",
    "image_region",
    "rank_classes_for_image_layer",
    "rank_classes",
]

METHODS = {"grad-cam": "Grad-CAM", "occlusion": "occlusion"}
"""Method keys and the words used in layer names."""


@dataclass(frozen=True)
class AttributionResult:
    """One attribution map and what is needed to explain it later.

    Attributes
    ----------
    map : numpy.ndarray
        ``(H, W)`` float32 on the image's grid.
    method : str
        ``"grad-cam"`` or ``"occlusion"``.
    target_index : int or None
    target_label : str
    layer : LayerInfo or None
        Grad-CAM's network layer (None for occlusion).
    network : Network
    input_scale : float
    intensity_range : (float, float)
    source_name : str
    settings : dict
        Occlusion's window, stride and fill.
    region_name : str or None
        The Shapes or Labels layer of a region target.
    """

    map: np.ndarray
    method: str
    target_index: int | None
    target_label: str
    layer: LayerInfo | None
    network: Any
    input_scale: float
    intensity_range: tuple[float, float]
    source_name: str
    settings: dict = field(default_factory=dict)
    region_name: str | None = None


def _method(method: str) -> str:
    key = str(method).strip().lower().replace("_", "-").replace("gradcam", "grad-cam")
    if key not in METHODS:
        raise LayerInputError(
            f"Unknown attribution method {method!r}; use 'grad-cam' or 'occlusion'."
        )
    return key


def attribution_layer_name(image_name: str, method: str, target_label: str) -> str:
    """``"<image>: Grad-CAM <class>"`` or ``"<image>: occlusion <class>"``."""
    return f"{image_name}: {METHODS[_method(method)]} {target_label}"


def _contrast(result: AttributionResult) -> tuple[float, float]:
    m = result.map
    if result.method == "occlusion":  # signed: symmetric about zero for the diverging map
        top = float(np.abs(m).max())
        return (-top, top) if top > 0 else (-1.0, 1.0)
    top = float(m.max())
    return (0.0, top) if top > 0 else (0.0, 1.0)


def attribution_metadata(result: AttributionResult) -> dict[str, Any]:
    """Plain, JSON-able values: method, target, network layer, settings and weights."""
    from . import __version__

    net = result.network
    return {
        "plugin_version": __version__,
        "source_layer": result.source_name,
        "method": METHODS[result.method],
        "target": {
            "index": result.target_index,
            "label": result.target_label,
            "region": result.region_name,
        },
        "layer": None if result.layer is None else result.layer.name,
        "network": net.name,
        "settings": dict(result.settings),
        "input_scale": float(result.input_scale),
        "intensity_range": [float(v) for v in result.intensity_range],
        "weights": {
            "description": net.description,
            "source": net.weights,
            "sha256": net.sha256,
            "trained": bool(net.trained),
        },
    }


def attribution_layer_kwargs(source: Any, result: AttributionResult) -> dict[str, Any]:
    """Keyword arguments of ``napari.layers.Image`` for ``result`` over ``source``.

    Grad-CAM (non-negative) gets the sequential colormap that fades to see-through near zero;
    occlusion (signed: covering a window can raise the score) the diverging one, with limits
    symmetric about zero. The transform is the source's, so the world extents agree.
    """
    diverging = result.method == "occlusion"
    return {
        "name": attribution_layer_name(result.source_name, result.method, result.target_label),
        "rgb": False,
        "multiscale": False,
        "contrast_limits": _contrast(result),
        "colormap": diverging_colormap() if diverging else sequential_colormap(),
        "blending": "translucent",
        "opacity": 0.7,
        "interpolation2d": "linear",
        "metadata": {ATTRIBUTION_KEY: attribution_metadata(result)},
        **expand_transform(source, 0),
    }


def compute_attribution_for_image_layer(
    network: Network | None,
    source: Image,
    method: str,
    target: Any,
    *,
    layer: str | LayerInfo | None = None,
    window: Any = None,
    stride: Any = None,
    fill: Any = "mean",
    input_scale: float = 1.0,
    weights: Any = "DEFAULT",
    device: Any = "auto",
    region: Any = None,
) -> Generator[Progress, None, AttributionResult]:
    """Compute an attribution map for an image layer, yielding progress.

    The image is read as napari shows it: its contrast limits are the intensity range. The
    network is loaded (or taken from the cache) inside the generator when not given, so a
    worker thread does it. ``region`` (a Shapes or Labels layer, in world coordinates) makes
    the target the class-score map's mean inside it (:func:`~napari_activations.region_target`).
    """
    from . import attribution

    key = _method(method)
    if source.multiscale:
        raise LayerInputError(
            f"{source.name!r} is a multiscale image; attribution needs one "
            "resolution. Add one level as its own layer."
        )
    data = source.data
    intensity_range = tuple(float(v) for v in source.contrast_limits)
    rgb = bool(source.rgb)
    name = source.name
    mask = None if region is None else image_region(region, source)
    region_name = None if region is None else region.name
    avoid_triton_llvm_crash()
    if network is None:
        yield Progress(0, 1, "Loading SqueezeNet")
        from .network import load_squeezenet

        network = load_squeezenet(weights, device=device, progress=False)
    if mask is not None:
        target = attribution.region_target(network, mask, target, name=region_name)
    goal = attribution.resolve_target(network, target)
    common = {"input_scale": input_scale, "intensity_range": intensity_range, "rgb": rgb}
    settings: dict[str, Any] = {}
    info = None
    if key == "grad-cam":
        info = attribution.feature_layer(network, layer)
        if mask is not None and info.name == attribution.feature_layer(network, None).name:
            raise attribution.AttributionError(
                f"Grad-CAM at {info.name!r} averages the gradient over the whole layer, so it "
                f"gives the same map for any region: the region {region_name!r} would change "
                "nothing. To see why the class is there, use occlusion sensitivity, or Grad-CAM "
                f"at an earlier layer (e.g. {_earlier_layer(network, info)!r})."
            )
        result = yield from attribution.iter_grad_cam(network, data, target, layer=info, **common)
    else:
        settings = {"window": window, "stride": stride, "fill": fill}
        result = yield from attribution.iter_occlusion_sensitivity(
            network, data, target, window=window, stride=stride, fill=fill, **common
        )
    return AttributionResult(
        np.asarray(result, dtype=np.float32),
        key,
        goal.index,
        goal.label,
        info,
        network,
        float(input_scale),
        intensity_range,
        name,
        settings,
        region_name,
    )


def _earlier_layer(network: Network, info: LayerInfo) -> str:
    """An aligned spatial layer before ``info`` (a suggestion in messages)."""
    rows = network.layers[: network.layers.index(info)]
    earlier = [row.name for row in rows if row.aligned and not row.is_global and row.after_relu]
    return earlier[-1] if earlier else rows[-1].name if rows else info.name


def find_attribution_layer(viewer: napari.Viewer, name: str) -> Image | None:
    """The attribution layer of that name made earlier, if any."""
    if name in viewer.layers and ATTRIBUTION_KEY in viewer.layers[name].metadata:
        return viewer.layers[name]
    return None


def add_attribution_layer(viewer: napari.Viewer, source: Image, result: AttributionResult) -> Image:
    """Add ``result`` over ``source``, or update in place the layer made earlier.

    An update keeps the user's colormap, blending and opacity, and replaces data, transform,
    contrast and metadata.
    """
    viewer, source = unproxy(viewer), unproxy(source)
    _mesa_workaround.install()  # deleting layers must not crash napari (Mesa software GL)
    kwargs = attribution_layer_kwargs(source, result)
    existing = find_attribution_layer(viewer, kwargs["name"])
    if existing is not None:
        for key in ("scale", "translate", "rotate", "shear", "affine", "metadata"):
            setattr(existing, key, kwargs[key])
        existing.data = result.map
        existing.contrast_limits_range = kwargs["contrast_limits"]
        existing.contrast_limits = kwargs["contrast_limits"]
        return existing
    from napari.layers import Image

    layer = Image(result.map, **kwargs)
    index = viewer.layers.index(source) + 1 if source in viewer.layers else len(viewer.layers)
    viewer.layers.insert(index, layer)
    return layer


def show_attribution(
    viewer: napari.Viewer,
    image_layer_or_name: Any,
    method: str,
    target: Any,
    *,
    network: Network | None = None,
    layer: str | LayerInfo | None = None,
    window: Any = None,
    stride: Any = None,
    fill: Any = "mean",
    input_scale: float = 1.0,
    weights: Any = "DEFAULT",
    device: Any = "auto",
    region: Any = None,
) -> Image:
    """Compute an attribution map for an image layer and show it over the image.

    The widget's code path, run synchronously (napari's console, scripts)::

        import napari_activations as na
        na.show_attribution(viewer, "chelsea", "grad-cam", "Egyptian cat")

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer_or_name : napari.layers.Image or str
    method : "grad-cam" or "occlusion"
    target : int, str or callable
        As for :func:`~napari_activations.grad_cam`.
    network : Network, optional
        Default: loaded with ``weights`` on ``device`` (and cached).
    layer : str, optional
        Grad-CAM's network layer (default: the last aligned one before global pooling,
        ``relu_conv10`` for SqueezeNet).
    window, stride, fill
        Occlusion's settings (see :func:`~napari_activations.occlusion_sensitivity`).
    input_scale : float
    region : napari.layers.Shapes or Labels or str, optional
        Explain the class's score inside this region (the mean of the class-score map there)
        rather than the whole image's; the layer is named ``"<image>: Grad-CAM <class> in
        <region>"``.

    Returns
    -------
    napari.layers.Image
        ``(H, W)`` over the image, named ``"<image>: Grad-CAM <class>"``; updated in place
        when it exists.
    """
    source = resolve_image_layer(viewer, image_layer_or_name)
    if isinstance(region, str):
        region = _region_layer(viewer, region)
    gen = compute_attribution_for_image_layer(
        network,
        source,
        method,
        target,
        layer=layer,
        window=window,
        stride=stride,
        fill=fill,
        input_scale=input_scale,
        weights=weights,
        device=device,
        region=region,
    )
    return add_attribution_layer(viewer, source, drain(gen))


# --------------------------------------------------------------------------- regions


def region_layers(viewer: napari.Viewer) -> list[Any]:
    """The Shapes and Labels layers that can mark a region over an image."""
    from napari.layers import Labels, Shapes

    return [layer for layer in viewer.layers if isinstance(layer, (Shapes, Labels))]


def _region_layer(viewer: napari.Viewer, name: str) -> Any:
    if name not in viewer.layers:
        raise LayerInputError(f"There is no layer named {name!r} to use as the region.")
    return viewer.layers[name]


def image_region(region: Any, source: Image) -> np.ndarray:
    """A Shapes or Labels layer as a boolean ``(H, W)`` mask on the image layer's grid.

    Shapes are drawn in world coordinates: each layer's scale and translate are taken into
    account, so a region drawn over the image where it shows is the region of its pixels.
    """
    from ._analysis_layers import region_mask

    try:
        mask = region_mask(unproxy(region), unproxy(source))
    except ValueError as exc:
        raise LayerInputError(str(exc)) from None
    if not mask.any():
        raise LayerInputError(
            f"The region {region.name!r} covers no pixel of {source.name!r}: draw it over the "
            "image."
        )
    return mask


def rank_classes_for_image_layer(
    network: Network | None,
    source: Image,
    region: Any,
    k: int = 5,
    *,
    input_scale: float = 1.0,
    weights: Any = "DEFAULT",
    device: Any = "auto",
) -> Generator[Progress, None, list[tuple[int, str, float]]]:
    """Rank every class by its Grad-CAM inside ``region`` over an image layer, yielding progress.

    See :func:`~napari_activations.rank_classes_in_region`; the image is read as napari shows
    it (its contrast limits are the intensity range).
    """
    from . import attribution

    if source.multiscale:
        raise LayerInputError(
            f"{source.name!r} is a multiscale image; attribution needs one "
            "resolution. Add one level as its own layer."
        )
    mask = image_region(region, source)
    data = source.data
    intensity_range = tuple(float(v) for v in source.contrast_limits)
    rgb = bool(source.rgb)
    avoid_triton_llvm_crash()
    if network is None:
        yield Progress(0, 1, "Loading SqueezeNet")
        from .network import load_squeezenet

        network = load_squeezenet(weights, device=device, progress=False)
    yield Progress(0, 1, f"Ranking classes in {region.name!r}")
    return attribution.rank_classes_in_region(
        network,
        data,
        mask,
        k,
        input_scale=input_scale,
        intensity_range=intensity_range,
        rgb=rgb,
    )


def rank_classes(
    viewer: napari.Viewer,
    image_layer_or_name: Any,
    region: Any,
    k: int = 5,
    *,
    network: Network | None = None,
    input_scale: float = 1.0,
    weights: Any = "DEFAULT",
    device: Any = "auto",
) -> list[tuple[int, str, float]]:
    """The ``k`` classes whose Grad-CAM is strongest inside a region drawn over an image layer.

    ``region`` is a Shapes or Labels layer (or its name); returns ``(class index, category
    name, mean Grad-CAM inside the region)``, strongest first.
    """
    source = resolve_image_layer(viewer, image_layer_or_name)
    if isinstance(region, str):
        region = _region_layer(viewer, region)
    return drain(
        rank_classes_for_image_layer(
            network, source, region, k, input_scale=input_scale, weights=weights, device=device
        )
    )
