"""The analysis tools in napari, without Qt: reading activation layers, regions and clicks,
and adding montage, label and difference layers.

The activation layers are the ones :mod:`napari_activations._napari_layers` makes (recognised
by their ``metadata["napari_activations"]``). Every function here takes the viewer and layers
and calls :mod:`napari_activations.analysis` for the numbers, so the console, the tests and the
"Activation analysis" dock widget share one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import analysis
from ._layer_kinds import (
    DIFFERENCE_KEY,
    MONTAGE_KEY,
    channel_metadata,
    remember_network,
    remembered_network,
)
from ._napari_layers import (
    ActivationResult,
    LayerInputError,
    add_activation_layer,
    channel_contrast_limits,
    compute_for_image_layer,
    display_defaults,
    expand_transform,
    set_contrast,
    shown_position,
)
from .alignment import AlignedActivations
from .architecture import SQUEEZENET, Architecture, architecture_of
from .compute import Progress
from .layers import LayerInfo, find_layer
from .network import weights_metadata

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Layer

    from .network import Network

__all__ = [
    "DIFFERENCE_KEY",
    "MONTAGE_KEY",
    "ComparisonResult",
    "activation_layers",
    "arrange_comparison_grid",
    "compare_images",
    "current_channel",
    "current_plane_activations",
    "is_activation_layer",
    "layer_metadata",
    "montage_channel_at",
    "montage_of",
    "native_activations",
    "network_architecture",
    "network_for",
    "network_of",
    "pixel_under",
    "region_mask",
    "set_channel",
    "show_comparison",
    "show_difference",
    "show_montage",
]


def is_activation_layer(layer: Any) -> bool:
    """Whether ``layer`` is an activation (or difference) layer this plugin made."""
    return channel_metadata(layer) is not None and hasattr(layer.data, "shape")


def layer_metadata(layer: Layer) -> dict[str, Any]:
    """The plugin's metadata dict of an activation or difference layer."""
    meta = channel_metadata(layer)
    if meta is None:
        raise KeyError(f"{layer.name!r} is neither an activation nor a difference layer.")
    return meta


def activation_layers(viewer: napari.Viewer) -> list[Image]:
    """The viewer's activation and difference layers, bottom to top."""
    return [layer for layer in viewer.layers if is_activation_layer(layer)]


def _channel_axis(viewer: napari.Viewer, layer: Layer) -> int:
    # napari lines layers up by their trailing axes; the channel axis is the layer's first.
    return viewer.dims.ndim - layer.ndim


def current_channel(viewer: napari.Viewer, layer: Layer) -> int:
    """The channel the viewer shows of ``layer``."""
    return shown_position(viewer, layer)[0]


def set_channel(viewer: napari.Viewer, layer: Layer, channel: int) -> None:
    """Move the channel slider of ``layer`` to ``channel``."""
    channel = int(channel)
    if not 0 <= channel < layer.data.shape[0]:
        raise IndexError(
            f"{layer.name!r} has channels 0..{layer.data.shape[0] - 1}, not {channel}."
        )
    viewer.dims.set_current_step(_channel_axis(viewer, layer), channel)


def current_plane_activations(viewer: napari.Viewer, layer: Layer) -> Any:
    """The ``(C, H, W)`` activations of the plane the viewer shows, on the image's grid.

    An :class:`~napari_activations.AlignedActivations` (lazy, with the native map in
    ``.native``) where the layer holds one; otherwise the plane's values as an array.
    """
    data = layer.data
    if isinstance(data, AlignedActivations) and data.ndim == 3:
        return data
    plane = shown_position(viewer, layer)[1]
    stack = getattr(data, "stack", None)  # ChannelFirst view of an (..., C, H, W) stack
    if isinstance(stack, AlignedActivations):  # native: an array, or planes computed lazily
        return AlignedActivations(
            np.asarray(stack.native[plane], dtype=np.float32),
            stack.layer,
            stack.image_shape,
            stack.scale,
        )
    return np.asarray(data[(slice(None),) + plane], dtype=np.float32)


def native_activations(activations: Any) -> np.ndarray:
    """The network-resolution ``(C, h, w)`` map where there is one, else the array itself."""
    native = getattr(activations, "native", None)
    return np.asarray(native if native is not None else activations, dtype=np.float32)


def pixel_under(layer: Layer, world_position: Any) -> tuple[float, float] | None:
    """``(y, x)`` of ``layer``'s data grid under a world position; None outside the layer."""
    data = np.asarray(layer.world_to_data(tuple(world_position)[-layer.ndim :]))
    y, x = float(data[-2]), float(data[-1])
    h, w = layer.data.shape[-2:]
    if not (-0.5 <= y < h - 0.5 and -0.5 <= x < w - 0.5):
        return None
    return y, x


# --------------------------------------------------------------------------- regions


def _grid(layer: Layer) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``(H, W)``, scale and translate of a layer's last two spatial axes (RGB aware)."""
    shape = layer.data.shape[:-1] if getattr(layer, "rgb", False) else layer.data.shape
    return (
        int(shape[-2]),
        int(shape[-1]),
        np.asarray(layer.scale[-2:], dtype=float),
        np.asarray(layer.translate[-2:], dtype=float),
    )


def region_mask(region_layer: Layer, grid_layer: Layer) -> np.ndarray:
    """A Shapes or Labels layer as a boolean ``(H, W)`` mask on another layer's pixel grid.

    ``grid_layer`` is an activation layer or the image layer it was computed from (they share
    the grid). Shapes: the union of all shapes (their last two coordinates, so shapes drawn on
    any channel count). Labels: every non-zero pixel of every plane. Only scale and translate
    are taken into account between the two layers.
    """
    from napari.layers import Labels, Shapes

    h, w, a_scale, a_trans = _grid(grid_layer)
    r_scale = np.asarray(region_layer.scale[-2:], dtype=float)
    r_trans = np.asarray(region_layer.translate[-2:], dtype=float)
    if isinstance(region_layer, Shapes):
        if not len(region_layer.data):
            raise LayerInputError(
                f"The Shapes layer {region_layer.name!r} has no shapes; draw the region first."
            )
        vertices = [
            (np.asarray(d)[:, -2:] * r_scale + r_trans - a_trans) / a_scale
            for d in region_layer.data
        ]
        flat = Shapes(vertices, shape_type=list(region_layer.shape_type))
        return np.asarray(flat.to_masks(mask_shape=(h, w))).any(axis=0)
    if isinstance(region_layer, Labels):
        data = np.asarray(region_layer.data)
        mask = data.reshape((-1,) + data.shape[-2:]).any(axis=0)
        if not (
            np.allclose(r_scale, a_scale) and np.allclose(r_trans, a_trans) and mask.shape == (h, w)
        ):
            raise LayerInputError(
                f"The Labels layer {region_layer.name!r} ({mask.shape[0]}x"
                f"{mask.shape[1]}) is not on the {h}x{w} grid of "
                f"{grid_layer.name!r}; paint the region on a Labels layer "
                "of the image's size."
            )
        return mask
    raise LayerInputError(
        f"{region_layer.name!r} is a {type(region_layer).__name__} layer; a "
        "region is a Shapes or a Labels layer."
    )


# --------------------------------------------------------------------------- montage


def _montage_placement(activation_layer: Layer, tile_rows: int) -> dict[str, Any]:
    """Scale and translate putting the montage to the right of the layer, as tall as it."""
    scale = np.asarray(activation_layer.scale[-2:], dtype=float)
    trans = np.asarray(activation_layer.translate[-2:], dtype=float)
    h, w = activation_layer.data.shape[-2:]
    factor = h / max(tile_rows, 1)
    return {
        "scale": tuple(scale * factor),
        "translate": (trans[0], trans[1] + (w + 0.05 * w) * scale[1]),
    }


def show_montage(
    viewer: napari.Viewer, activation_layer: Layer, *, normalize: str = "channel", gap: int = 1
) -> tuple[Image, Layer, analysis.Montage]:
    """All channels of the shown plane as a grid beside the layer, with channel numbers.

    The montage is built from the network-resolution map (as MATLAB's ``imtile`` of
    ``activations``), placed to the right of the activation layer and as tall as it. Adds or
    updates an Image layer ``"<layer name> montage"`` and a Points layer
    ``"<layer name> montage channels"`` that writes each tile's channel number.
    """
    from napari.layers import Image, Points

    acts = native_activations(current_plane_activations(viewer, activation_layer))
    m = analysis.montage(acts, normalize=normalize, gap=gap)
    placement = _montage_placement(activation_layer, m.image.shape[0])
    name = f"{activation_layer.name} montage"
    meta = {
        MONTAGE_KEY: {
            "activation_layer": activation_layer.name,
            "normalize": normalize,
            "grid": list(m.grid),
            "tile_shape": list(m.tile_shape),
            "gap": m.gap,
            "channels": m.channels,
        }
    }
    if name in viewer.layers and isinstance(viewer.layers[name], Image):
        image = viewer.layers[name]
        image.data = m.image
        image.scale, image.translate = placement["scale"], placement["translate"]
        image.metadata = meta
        image.contrast_limits = (float(m.image.min()), float(m.image.max()) or 1.0)
    else:
        image = viewer.add_image(m.image, name=name, colormap="gray", metadata=meta, **placement)
    positions = m.label_positions() + 0.5
    features = {"channel": np.arange(m.channels)}
    text = {"string": "{channel}", "color": "yellow", "anchor": "lower_left", "size": 8}
    labels_name = f"{name} channels"
    if labels_name in viewer.layers and isinstance(viewer.layers[labels_name], Points):
        labels = viewer.layers[labels_name]
        labels.data = positions
        labels.features = features
        labels.scale, labels.translate = placement["scale"], placement["translate"]
    else:
        labels = viewer.add_points(
            positions,
            name=labels_name,
            features=features,
            text=text,
            size=0.1,
            face_color="transparent",
            border_color="transparent",
            **placement,
        )
    return image, labels, m


def montage_of(montage_layer: Layer) -> analysis.Montage | None:
    """The :class:`~napari_activations.analysis.Montage` a montage layer shows, or None."""
    meta = montage_layer.metadata.get(MONTAGE_KEY)
    if not meta:
        return None
    return analysis.Montage(
        np.asarray(montage_layer.data),
        tuple(meta["grid"]),
        tuple(meta["tile_shape"]),
        int(meta["gap"]),
        int(meta["channels"]),
    )


def montage_channel_at(montage_layer: Layer, world_position: Any) -> int | None:
    """The channel of the montage tile under a world position, or None."""
    m = montage_of(montage_layer)
    if m is None:
        return None
    y, x = np.asarray(montage_layer.world_to_data(tuple(world_position)[-2:]))[-2:]
    return m.channel_at(y, x)


# --------------------------------------------------------------------------- comparison


def network_for(activation_layer: Layer) -> Any:
    """The ``weights`` argument of :func:`~napari_activations.load_squeezenet` that made the
    layer (its network is cached, so loading it again costs nothing); None for random ones."""
    from .network import WEIGHTS_CHOICES, loaded_network

    weights = layer_metadata(activation_layer).get("weights", {})
    if not weights.get("trained", True):
        return None
    name = str(weights.get("name", "DEFAULT"))
    if name in WEIGHTS_CHOICES:
        return name
    # A file: the metadata names no path, but its hash finds the network loaded from it.
    net = loaded_network(weights.get("sha256"))
    return net.source if net is not None else "DEFAULT"


def _network_name(activation_layer: Layer) -> str:
    """The name of the network that made the layer (``"squeezenet1_1"`` where none is said)."""
    return str(layer_metadata(activation_layer).get("layer", {}).get("network", "squeezenet1_1"))


def _layer_row(activation_layer: Layer) -> LayerInfo | None:
    """The network layer row the layer's data holds (it knows its network), or None."""
    data = activation_layer.data
    stack = getattr(data, "stack", data)  # ChannelFirst view of an (..., C, H, W) stack
    info = getattr(stack, "layer", None)
    return info if isinstance(info, LayerInfo) else None


def network_architecture(activation_layer: Layer | None) -> Architecture:
    """The layers and geometry of the network that made ``activation_layer``, without loading
    weights (for menus): from the layer's data or its metadata; SqueezeNet's for None."""
    if activation_layer is None:
        return SQUEEZENET
    net = remembered_network(activation_layer)
    if net is not None:
        return net.arch
    info = _layer_row(activation_layer)
    if info is not None:
        return architecture_of(info)
    name = _network_name(activation_layer)
    if name == SQUEEZENET.name:
        return SQUEEZENET
    from .network import NETWORK_TITLES, torchvision_architecture

    if name in NETWORK_TITLES:
        return torchvision_architecture(name)
    raise LayerInputError(_gone(activation_layer, name))


def _gone(activation_layer: Layer, name: str) -> str:
    return (
        f"{activation_layer.name!r} was computed with your own model ({name.split(':')[-1]}), "
        "which this session no longer holds: load it again with load_network(model) and "
        "compute the layer again (show_activations(..., network=net))."
    )


def network_of(activation_layer: Layer, device: Any = "auto") -> Network:
    """The network that made ``activation_layer``, with its weights, ready to run again.

    The one noted when the layer was made (a user's own model), else loaded (from the cache,
    where it is) by the name and weights in the layer's metadata. Can take long the first
    time: call it in a worker.

    Raises
    ------
    LayerInputError
        A user's model that is no longer held, or weights (a file) that cannot be found.
    """
    net = remembered_network(activation_layer)
    if net is not None:
        return net
    from .network import NETWORK_TITLES, load_network, load_squeezenet, loaded_network

    name = _network_name(activation_layer)
    if name == SQUEEZENET.name:
        return load_squeezenet(network_for(activation_layer), device=device, progress=False)
    if name not in NETWORK_TITLES:
        raise LayerInputError(_gone(activation_layer, name))
    weights = layer_metadata(activation_layer).get("weights", {})
    label = str(weights.get("name", "DEFAULT"))
    if not weights.get("trained", True):
        return load_network(name, None, device=device, progress=False)
    if label.startswith("file:"):
        found = loaded_network(weights.get("sha256"))
        if found is None or found.name != name:
            raise LayerInputError(
                f"{activation_layer.name!r} was computed with weights from {label[5:]}, which "
                "are not loaded any more: load them again (load_network(name, path)) and "
                "compute the layer again."
            )
        return found
    return load_network(name, label, device=device, progress=False)


@dataclass(frozen=True)
class ComparisonResult:
    """The same network layer computed for two or more images, and its channel ranking."""

    results: list[ActivationResult]
    difference: AlignedActivations
    ranking: np.ndarray


def compare_images(
    network: Network | Callable[[], Network] | None,
    images: list[Image],
    layer: Any,
    *,
    region: np.ndarray | None = None,
    change: str = "difference",
    weights: Any = "DEFAULT",
) -> Generator[Progress, None, ComparisonResult]:
    """Compute ``layer`` for each image layer and rank channels by the first-minus-second change.

    A generator of :class:`~napari_activations.compute.Progress` (run it in a worker thread,
    or drain it), returning a :class:`ComparisonResult`. The images must be single planes of
    one size; ``region`` is an ``(H, W)`` mask on their grid (None: the whole image).
    ``network`` is a Network, a function that loads one (called here, in the worker; e.g.
    ``lambda: network_of(activation_layer)``), or None for SqueezeNet with ``weights``;
    ``layer`` is one of its layers (a name or row).
    """
    if len(images) < 2:
        raise LayerInputError("Comparing needs two or more image layers.")
    if callable(network):
        yield Progress(0, 1, "Loading the network")
        network = network()
    info = find_layer(layer) if network is None else network.find_layer(layer)
    results = []
    for image in images:
        result = yield from compute_for_image_layer(network, image, info, weights=weights)
        network = result.network
        results.append(result)
    first, second = results[0].activations, results[1].activations
    if first.shape != second.shape or first.ndim != 3:
        raise LayerInputError(
            f"The images to compare must be single planes of one size; "
            f"{images[0].name!r} gives {first.shape} and {images[1].name!r} "
            f"{second.shape}."
        )
    yield Progress(1, 1, f"{info.name}: ranking channels")
    ranking = analysis.rank_channels(first, region=region, other=second, change=change)
    return ComparisonResult(results, analysis.difference(first, second), ranking)


def show_difference(viewer: napari.Viewer, first: Image, comparison: ComparisonResult) -> Image:
    """Add (or update) the layer ``"<first> − <second>: <layer>"`` over the first image.

    Shown with the blue-red colormap (blue: the second image drives the channel harder) and
    limits symmetric about zero, following the channel slider.
    """
    from napari.layers import Image

    a, b = comparison.results[:2]
    info = replace(a.layer, after_relu=False)  # differences are signed whatever the layer
    name = f"{a.source_name} − {b.source_name}: {a.layer.name}"
    diff = comparison.difference
    limits = channel_contrast_limits(diff.native, info, "channel")
    meta = {
        DIFFERENCE_KEY: {
            "layer": {
                "name": a.layer.name,
                "channels": a.layer.channels,
                "network": a.layer.network,
            },
            "first": a.source_name,
            "second": b.source_name,
            "source_layer": a.source_name,
            "weights": weights_metadata(a.network),
        }
    }
    if name in viewer.layers and isinstance(viewer.layers[name], Image):
        layer = viewer.layers[name]
        layer.data = diff
        layer.metadata = meta
        remember_network(layer, a.network)
    else:
        layer = Image(
            diff,
            name=name,
            rgb=False,
            metadata=meta,
            contrast_limits=limits[0],
            interpolation2d="linear",
            **expand_transform(first, 1),
            **display_defaults(info),
        )
        remember_network(layer, a.network)
        viewer.add_layer(layer)
    set_contrast(viewer, layer, limits, "channel")
    return layer


def show_comparison(
    viewer: napari.Viewer,
    images: list[Image],
    comparison: ComparisonResult,
    region_layer: Layer | None = None,
) -> list[Image]:
    """Add the activation layers and the difference layer, side by side in napari's grid.

    Returns the activation layers (one per image) followed by the difference layer.
    """
    shown = [
        add_activation_layer(viewer, image, result)
        for image, result in zip(images, comparison.results, strict=False)
    ]
    diff = show_difference(viewer, images[0], comparison)
    arrange_comparison_grid(viewer, list(zip(images, shown, strict=False)), diff, region_layer)
    return shown + [diff]


def arrange_comparison_grid(
    viewer: napari.Viewer,
    pairs: list[tuple[Layer, Layer]],
    difference_layer: Layer,
    region_layer: Layer | None = None,
) -> None:
    """Grid mode, two layers a cell: each image under its activations, then the difference.

    The compared layers move to the bottom of the layer list in that order (napari fills grid
    cells from the bottom, ``stride`` layers each); the region layer, if any, shares the
    difference's cell. All share the channel slider: their channel axes are the same axis.
    """
    order: list[Layer] = [layer for pair in pairs for layer in pair] + [difference_layer]
    if region_layer is not None and region_layer in viewer.layers:
        order.append(region_layer)
    for target, layer in enumerate(order):
        viewer.layers.move(viewer.layers.index(layer), target)
    viewer.canvas.grid.stride = 2
    viewer.canvas.grid.enabled = True
