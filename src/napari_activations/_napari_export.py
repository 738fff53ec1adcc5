"""Saving an activation napari layer: the aligned stack and/or the native maps, as OME-Zarr.

The napari side of :mod:`napari_activations.export`: it reads the layer's data, world
placement (scale, translate, units, axis labels) and metadata, and names the files after the
layer. The widget runs :func:`iter_export_activation_layer` in a worker; scripts call
:func:`export_activation_layer`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layer_kinds import METADATA_KEY
from ._napari_layers import ChannelFirst
from .alignment import AlignedActivations
from .compute import Progress, drain
from .export import EXPORT_KINDS, ExportError, iter_export_activations

if TYPE_CHECKING:
    from napari.layers import Layer

__all__ = [
    "export_activation_layer",
    "export_paths",
    "iter_export_activation_layer",
    "layer_activations",
]

_TIME_LABELS = {"t", "time"}


def layer_activations(layer: Layer) -> AlignedActivations:
    """The activations behind an activation napari layer; a plain error for any other layer."""
    name = getattr(layer, "name", layer)
    metadata = getattr(layer, "metadata", None)
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise ExportError(
            f"{name!r} is not an activation layer: only layers made by "
            "napari-activations (named '<image>: <network layer>') can be "
            "exported. Select one in the layer list."
        )
    data = layer.data
    if isinstance(data, ChannelFirst):
        data = data.stack
    if not isinstance(data, AlignedActivations):
        raise ExportError(
            f"The data of {name!r} is no longer the activations computed for "
            "it (it was replaced). Compute the layer again, then export it."
        )
    return data


def export_paths(
    layer: Layer, folder: str | os.PathLike, kinds: Sequence[str] = ("aligned",)
) -> dict[str, Path]:
    """Where each kind is saved: ``<folder>/<layer name>.ome.zarr`` for the aligned stack,
    ``<folder>/<layer name>_native.ome.zarr`` for the native maps (characters that are not
    safe in file names become ``_``)."""
    for kind in kinds:
        if kind not in EXPORT_KINDS:
            raise ExportError(f"Export kinds are {EXPORT_KINDS}; got {kind!r}.")
    stem = re.sub(r"[^\w.-]+", "_", str(layer.name)).strip("_.") or "activations"
    folder = Path(folder)
    return {
        kind: folder / (f"{stem}.ome.zarr" if kind == "aligned" else f"{stem}_native.ome.zarr")
        for kind in kinds
    }


def _lead_axes(layer: Layer, n_lead: int) -> tuple[str, ...] | None:
    """``t`` for a leading axis labelled as time, else ``z``; None: the export's default."""
    labels = [str(a).lower() for a in (getattr(layer, "axis_labels", ()) or ())]
    if n_lead != 1 or len(labels) != layer.ndim:
        return None
    return ("t",) if labels[1] in _TIME_LABELS else ("z",)


def _transform_note(layer: Layer) -> dict[str, Any] | None:
    """The layer's rotation, shear and affine where they are not identity: OME-Zarr 0.5
    stores only scale and translation, so these go into the metadata."""
    n = layer.ndim
    parts = {
        "rotate": np.asarray(layer.rotate, dtype=float),
        "shear": np.asarray(layer.shear, dtype=float),
        "affine": np.asarray(layer.affine.affine_matrix, dtype=float),
    }
    identity = {
        "rotate": np.eye(n),
        "shear": np.zeros_like(parts["shear"]),
        "affine": np.eye(n + 1),
    }
    if parts["shear"].ndim == 2:
        identity["shear"] = np.eye(n)
    odd = {k: v.tolist() for k, v in parts.items() if not np.allclose(v, identity[k])}
    return odd or None


def iter_export_activation_layer(
    layer: Layer,
    folder: str | os.PathLike,
    kinds: Sequence[str] = ("aligned",),
    *,
    overwrite: bool = False,
    memory_budget: int | str | None = None,
) -> Generator[Progress, None, list[Path]]:
    """The work of :func:`export_activation_layer`, as a generator of :class:`Progress`.

    Every target is checked before anything is written.
    """
    stack = layer_activations(layer)
    paths = export_paths(layer, folder, kinds)
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"The folder {str(folder)!r} does not exist: choose another one.")
    if not overwrite:
        taken = [p.name for p in paths.values() if p.exists()]
        if taken:
            raise ExportError(
                f"{', '.join(repr(t) for t in taken)} exists already in "
                f"{str(folder)!r}: choose another folder, or move it away first."
            )
    metadata = dict(layer.metadata[METADATA_KEY])
    metadata["napari_layer"] = layer.name
    note = _transform_note(layer)
    if note is not None:
        metadata["napari_transform"] = note
        warnings.warn(
            f"{layer.name!r} is rotated, sheared or has an affine transform; "
            "OME-Zarr keeps only its scale and translation (the rest is saved in "
            "the metadata, under 'napari_transform').",
            stacklevel=2,
        )
    lead = _lead_axes(layer, stack.ndim - 3)
    units = [str(u) for u in layer.units[1:]] if getattr(layer, "units", None) else None
    written = []
    for kind, path in paths.items():
        written.append(
            (
                yield from iter_export_activations(
                    stack,
                    path,
                    kind=kind,
                    scale=layer.scale[1:],
                    translate=layer.translate[1:],
                    lead_axes=lead,
                    units=units,
                    metadata=metadata,
                    overwrite=overwrite,
                    memory_budget=memory_budget,
                )
            )
        )
    return written


def export_activation_layer(
    layer: Layer,
    folder: str | os.PathLike,
    kinds: Sequence[str] = ("aligned",),
    *,
    overwrite: bool = False,
    memory_budget: int | str | None = None,
) -> list[Path]:
    """Save an activation napari layer as OME-Zarr images in ``folder``.

    Parameters
    ----------
    layer : napari.layers.Image
        A layer made by :func:`~napari_activations.show_activations` or the widget.
    folder : str or path-like
        An existing folder; the files are named after the layer (see :func:`export_paths`).
    kinds : sequence of "aligned" and "native"
        The stack on the image's grid (what napari shows), the maps at the network's
        resolution, or both. Each is placed in world coordinates like the layer.
    overwrite : bool
        Replace existing OME-Zarr images of the same names.
    memory_budget : int or str, optional
        Working-memory budget; the values are computed and written in blocks of at most a
        quarter of it (see :func:`napari_activations.export_activations`).

    Returns
    -------
    list of pathlib.Path
        The images written, in the order of ``kinds``.
    """
    return drain(
        iter_export_activation_layer(
            layer, folder, kinds, overwrite=overwrite, memory_budget=memory_budget
        )
    )
