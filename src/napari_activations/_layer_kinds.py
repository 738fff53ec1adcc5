"""The napari layers this plugin makes, told apart by a key in their metadata.

Every module that asks "did the plugin make this layer, and which kind is it?" asks here: the
widgets (a derived layer is an output, never offered as an input), the layer builders and
the axis layout. napari-free, and importing nothing of the package, so that every module can
import it.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = [
    "ATTRIBUTION_KEY",
    "DERIVED_KEYS",
    "DIFFERENCE_KEY",
    "METADATA_KEY",
    "MONTAGE_KEY",
    "channel_metadata",
    "is_derived_layer",
    "remember_network",
    "remembered_network",
]

METADATA_KEY = "napari_activations"
"""Metadata key of an activation layer: how it was computed (plain values)."""

DIFFERENCE_KEY = "napari_activations_difference"
"""Metadata key of a difference layer (first image minus second): a dict like
``metadata[METADATA_KEY]`` with ``first`` and ``second`` image names added."""

MONTAGE_KEY = "napari_activations_montage"
"""Metadata key of a montage layer: its tile geometry (plain values) and the activation layer's
name."""

ATTRIBUTION_KEY = "napari_activations_attribution"
"""Metadata key of an attribution map layer (Grad-CAM, occlusion)."""

DERIVED_KEYS = (METADATA_KEY, DIFFERENCE_KEY, MONTAGE_KEY, ATTRIBUTION_KEY)
"""The keys of every kind of layer the plugin makes."""


def _metadata(layer: Any) -> dict:
    return getattr(layer, "metadata", None) or {}


def is_derived_layer(layer: Any) -> bool:
    """Whether the plugin made ``layer`` (activations, difference, montage, attribution map).

    Such layers are results: no widget offers them as an input image.
    """
    meta = _metadata(layer)
    return any(key in meta for key in DERIVED_KEYS)


def channel_metadata(layer: Any) -> dict | None:
    """The plugin's metadata of an activation or difference layer (its first axis is a network
    layer's channels); None for any other layer."""
    meta = _metadata(layer)
    return meta.get(METADATA_KEY) or meta.get(DIFFERENCE_KEY)


# The network that made each activation or difference layer, for as long as the layer lives:
# a user's own model is in no cache, and its layer's metadata (plain values) cannot load it.
_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remember_network(layer: Any, network: Any) -> None:
    """Note that ``network`` made ``layer`` (the layer holds it while the layer lives)."""
    _NETWORKS[getattr(layer, "__wrapped__", layer)] = network


def remembered_network(layer: Any) -> Any:
    """The network noted for ``layer`` by :func:`remember_network`, or None."""
    try:
        return _NETWORKS.get(getattr(layer, "__wrapped__", layer))
    except TypeError:  # not weakly referable: never noted
        return None
