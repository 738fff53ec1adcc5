"""napari-activations: see what a convolutional network sees, on your own images.

The public API is imported lazily: ``import napari_activations`` loads neither torch nor Qt;
torch loads on the first call that needs a network.

>>> import napari_activations as na
>>> net = na.load_squeezenet()                          # doctest: +SKIP
>>> a = na.activations(net, image, "fire6-squeeze1x1")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("napari-activations")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "unknown"

# public name -> module that defines it
_API = {
    "load_squeezenet": "network",
    "load_network": "network",
    "list_networks": "network",
    "NETWORK_TITLES": "network",
    "Network": "network",
    "resolve_device": "network",
    "default_weights_path": "network",
    "WeightsError": "network",
    "UnknownNetworkError": "network",
    "WeightsUnavailableError": "network",
    "DeviceUnavailableError": "network",
    "WEIGHTS_ENV": "network",
    "load_bioimageio": "bioimageio",
    "BioimageioError": "bioimageio",
    "activations": "compute",
    "iter_activations": "compute",
    "classify": "compute",
    "Progress": "compute",
    "ImageError": "compute",
    "is_rgb": "compute",
    "LAYERS": "layers",
    "LayerInfo": "layers",
    "find_layer": "layers",
    "layer_names": "layers",
    "output_size": "layers",
    "minimum_input_size": "layers",
    "UnknownLayerError": "layers",
    "choose_tile": "tiling",
    "estimate_forward_bytes": "tiling",
    "AlignedActivations": "alignment",
    "align": "alignment",
    "Montage": "analysis",
    "montage": "analysis",
    "grid_shape": "analysis",
    "strongest_channels": "analysis",
    "top_channels": "analysis",
    "rank_channels": "analysis",
    "inside_border": "analysis",
    "probe": "analysis",
    "difference": "analysis",
    "network_table": "analysis",
    "show_activations": "_napari_layers",
    "region_mask": "_analysis_layers",
    "load_sample": "_sample_data",
    "derive_geometry": "geometry",
    "measure_geometry": "geometry",
    "check_geometry": "geometry",
    "NodeGeometry": "geometry",
    "GeometryError": "geometry",
    "export_activations": "export",
    "iter_export_activations": "export",
    "ExportError": "export",
    "export_activation_layer": "_napari_export",
    "grad_cam": "attribution",
    "iter_grad_cam": "attribution",
    "occlusion_sensitivity": "attribution",
    "iter_occlusion_sensitivity": "attribution",
    "AttributionError": "attribution",
    "resolve_target": "attribution",
    "region_target": "attribution",
    "rank_classes_in_region": "attribution",
    "show_attribution": "_attribution_layers",
    "rank_classes": "_attribution_layers",
}

__all__ = sorted(_API) + ["__version__"]

if TYPE_CHECKING:
    from ._analysis_layers import region_mask
    from ._attribution_layers import rank_classes, show_attribution
    from ._napari_export import export_activation_layer
    from ._napari_layers import show_activations
    from ._sample_data import load_sample
    from .alignment import AlignedActivations, align
    from .analysis import (
        Montage,
        difference,
        grid_shape,
        inside_border,
        montage,
        network_table,
        probe,
        rank_channels,
        strongest_channels,
        top_channels,
    )
    from .attribution import (
        AttributionError,
        grad_cam,
        iter_grad_cam,
        iter_occlusion_sensitivity,
        occlusion_sensitivity,
        rank_classes_in_region,
        region_target,
        resolve_target,
    )
    from .bioimageio import BioimageioError, load_bioimageio
    from .compute import ImageError, Progress, activations, classify, is_rgb, iter_activations
    from .export import ExportError, export_activations, iter_export_activations
    from .geometry import (
        GeometryError,
        NodeGeometry,
        check_geometry,
        derive_geometry,
        measure_geometry,
    )
    from .layers import (
        LAYERS,
        LayerInfo,
        UnknownLayerError,
        find_layer,
        layer_names,
        minimum_input_size,
        output_size,
    )
    from .network import (
        NETWORK_TITLES,
        WEIGHTS_ENV,
        Network,
        UnknownNetworkError,
        WeightsError,
        WeightsUnavailableError,
        default_weights_path,
        list_networks,
        load_network,
        load_squeezenet,
        resolve_device,
    )


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_activations' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
