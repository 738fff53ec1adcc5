"""Saving activations as OME-Zarr images, with what is needed to explain them later.

Two kinds of image can be written from one :class:`~napari_activations.AlignedActivations`:

- ``"aligned"``: the ``(..., C, H, W)`` stack on the image's own pixel grid (what napari
  shows), with the image's pixel size and origin;
- ``"native"``: the ``(..., C, h, w)`` maps at the network's resolution. Activation pixel
  ``i`` sits over image pixel ``(O + 0.5) / s - 0.5 + (S / s) * i`` (total stride S, offset O,
  input scale s), so the image's pixel size times ``S / s`` and that origin are written as the
  OME-Zarr scale and translation: any OME-Zarr viewer puts the native maps over the image.

Each is one OME-Zarr image (format 0.5, written with ``ome-zarr``), a single resolution level
``"0"`` with axes in OME-Zarr's order ``[t] c [z] y x``: one leading axis of a stack is ``z``
unless told otherwise, two are ``t`` and ``z``. The group's ``napari_activations`` attribute
holds the network, weights, network layer, stride, offset, receptive field, input scale and
normalisation, as in the napari layer's metadata.

The values are computed and written block by block: a block holds at most a quarter of the
memory budget (see :func:`napari_activations.tiling.memory_budget`), so a lazy stack of a
large image streams to disk without ever being whole in memory. The image is written under a
temporary name beside ``path`` and renamed when complete: a failed or cancelled export leaves
nothing behind.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .alignment import AlignedActivations, align
from .architecture import architecture_of
from .compute import Progress, drain
from .network import weights_metadata
from .tiling import memory_budget as budget_bytes

if TYPE_CHECKING:
    from .network import Network

__all__ = [
    "EXPORT_KINDS",
    "METADATA_KEY",
    "ExportError",
    "activations_metadata",
    "export_activations",
    "iter_export_activations",
    "native_placement",
]

EXPORT_KINDS = ("aligned", "native")
METADATA_KEY = "napari_activations"
"""Key of the activation metadata, in a napari layer's metadata and in the OME-Zarr group."""

NETWORK_NAME = "SqueezeNet v1.1"

CHUNK_SIDE = 1024
"""Zarr chunks hold at most this many rows and columns (and one plane of a stack)."""

CHUNK_BYTES = 4 << 20
"""Small maps are chunked several channels together, up to this many bytes a chunk."""

BLOCK_FRACTION = 4
"""A computed block holds at most 1/BLOCK_FRACTION of the memory budget."""

_LEAD_AXES = {0: (), 1: ("z",), 2: ("t", "z")}


class ExportError(ValueError):
    """The activations cannot be saved as asked; the message says why and what to do."""


def activations_metadata(
    stack: AlignedActivations,
    network: Network | None = None,
    intensity_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """What explains a stack later: network layer, geometry, input scale, weights (JSON-able).

    The same keys as an activation layer's napari metadata; ``weights`` and the mean and std
    of ``normalisation`` are known only when ``network`` is given.
    """
    described = stack.layer.metadata()
    out: dict[str, Any] = {
        "network": architecture_of(stack.layer).title,
        "layer": described["layer"],
        "geometry": {**described["geometry"], "native_shape": list(stack.native.shape)},
        "input_scale": list(stack.scale),
        "normalisation": {
            "intensity_range": (
                None if intensity_range is None else [float(v) for v in intensity_range]
            )
        },
    }
    if network is not None:
        out["weights"] = weights_metadata(network)
        out["normalisation"].update(mean=list(network.mean), std=list(network.std))
    return out


def native_placement(
    stack: AlignedActivations,
    pixel_size: Sequence[float] = (1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0),
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Pixel size and origin of the native maps' rows and columns in the image's world.

    ``pixel_size`` and ``origin`` are the image's (rows, columns), e.g. a napari layer's
    ``scale[-2:]`` and ``translate[-2:]``. A global layer's single pixel covers the image.
    """
    info = stack.layer
    size, start = [], []
    for axis in range(2):
        d, t = float(pixel_size[axis]), float(origin[axis])
        n, s = stack.image_shape[axis], stack.scale[axis]
        if info.is_global:
            size.append(n * d)
            start.append(t + (n - 1) / 2 * d)
        else:
            size.append(info.stride / s * d)
            start.append(t + ((info.offset + 0.5) / s - 0.5) * d)
    return (size[0], size[1]), (start[0], start[1])


def _lead_names(n_lead: int, lead_axes: Sequence[str] | None) -> tuple[str, ...]:
    if lead_axes is None:
        if n_lead not in _LEAD_AXES:
            raise ExportError(
                f"OME-Zarr images have at most 5 axes (t, c, z, y, x); these activations have "
                f"{n_lead} axes before the channel axis. Export one plane or one time point "
                "at a time (index the stack first)."
            )
        return _LEAD_AXES[n_lead]
    names = tuple(str(a).lower() for a in lead_axes)
    if (
        len(names) != n_lead
        or any(a not in ("t", "z") for a in names)
        or (len(set(names)) != len(names))
    ):
        raise ExportError(
            f"lead_axes must name each of the {n_lead} axes before the channel "
            f"axis 't' or 'z', each once; got {tuple(lead_axes)!r}."
        )
    return names


def _ome_order(lead: tuple[str, ...]) -> list[str]:
    """OME-Zarr axis names, in its order ``[t] c [z] y x``."""
    return [a for a in ("t", "c", "z") if a in lead or a == "c"] + ["y", "x"]


def _check_target(path: Path, overwrite: bool) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(
            f"The folder {str(parent)!r} does not exist: create it, or choose "
            "another place to save to."
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise ExportError(
                f"{str(path)!r} exists already: choose another name, or delete "
                "it first (the API's overwrite=True replaces an OME-Zarr image)."
            )
        if not (path.is_dir() and (path / "zarr.json").is_file() or (path / ".zgroup").is_file()):
            raise ExportError(
                f"{str(path)!r} exists and is not a Zarr store: it is not "
                "replaced. Choose another name."
            )


def _block_plan(shape: tuple[int, int, int], budget: int) -> tuple[int, int]:
    """Channels per block and rows per block for ``(C, rows, cols)`` float32 planes."""
    C, H, W = shape
    limit = max(1, budget // BLOCK_FRACTION)
    plane = H * W * 4
    if plane <= limit:
        return max(1, min(C, limit // plane)), H
    rows = max(1, limit // (W * 4))
    if rows >= CHUNK_SIDE:  # whole chunks, so that no chunk is written twice
        rows = rows // CHUNK_SIDE * CHUNK_SIDE
    return 1, rows


def iter_export_activations(
    activations: AlignedActivations,
    path: str | os.PathLike,
    *,
    kind: str = "aligned",
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    lead_axes: Sequence[str] | None = None,
    units: Sequence[str | None] | None = None,
    metadata: dict[str, Any] | None = None,
    network: Network | None = None,
    overwrite: bool = False,
    memory_budget: int | str | None = None,
) -> Generator[Progress, None, Path]:
    """The work of :func:`export_activations` as a generator of :class:`Progress`.

    Closing the generator between steps cancels the export and removes what was written.
    The return value (``StopIteration.value``) is the path written.
    """
    if not isinstance(activations, AlignedActivations):
        raise ExportError(
            "Export needs the activations as returned by activations(..., resize=True) (an "
            f"AlignedActivations, which knows its geometry); got {type(activations).__name__}."
        )
    if kind not in EXPORT_KINDS:
        raise ExportError(f"kind must be one of {EXPORT_KINDS}; got {kind!r}.")
    stack, info = activations, activations.layer
    native = stack.native
    lead_shape = tuple(native.shape[:-3])
    lead = _lead_names(len(lead_shape), lead_axes)
    n_space = len(lead_shape) + 2
    pixel = [1.0] * n_space if scale is None else [float(v) for v in scale]
    origin = [0.0] * n_space if translate is None else [float(v) for v in translate]
    if len(pixel) != n_space or len(origin) != n_space:
        raise ExportError(
            f"scale and translate need {n_space} values (the image's axes "
            f"{lead + ('y', 'x')}); got {len(pixel)} and {len(origin)}."
        )
    if not all(math.isfinite(v) and v > 0 for v in pixel) or not all(
        math.isfinite(v) for v in origin
    ):
        raise ExportError(f"scale must be positive and translate finite; got {pixel}, {origin}.")
    C = native.shape[-3]
    if kind == "aligned":
        H, W = stack.image_shape
    else:
        H, W = native.shape[-2:]
        size, start = native_placement(stack, pixel[-2:], origin[-2:])
        pixel[-2:], origin[-2:] = list(size), list(start)
    path = Path(path)
    _check_target(path, overwrite)

    import zarr
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import write_multiscales_metadata

    axes = _ome_order(lead)
    where = {a: i for i, a in enumerate(lead)}  # lead axis name -> position in the stack
    shape_of = {"c": C, "y": H, "x": W, **{a: lead_shape[i] for a, i in where.items()}}
    space = {a: (pixel[i], origin[i]) for a, i in where.items()}
    space.update(y=(pixel[-2], origin[-2]), x=(pixel[-1], origin[-1]))
    ome_shape = tuple(shape_of[a] for a in axes)
    side = {"y": min(H, CHUNK_SIDE), "x": min(W, CHUNK_SIDE)}
    side["c"] = max(1, min(C, CHUNK_BYTES // (side["y"] * side["x"] * 4)))
    chunks = tuple(side.get(a, 1) for a in axes)
    transforms = [
        {"type": "scale", "scale": [space[a][0] if a in space else 1.0 for a in axes]},
        {"type": "translation", "translation": [space[a][1] if a in space else 0.0 for a in axes]},
    ]
    axes_units = _known_units(lead + ("y", "x"), units)

    try:
        budget = budget_bytes(memory_budget)
    except ValueError as exc:  # a budget that cannot be read: say so as the export's error
        raise ExportError(str(exc)) from exc
    channels, rows = _block_plan((C, H, W), budget)
    if channels >= side["c"]:  # whole chunks, so that no chunk is written twice
        channels = channels // side["c"] * side["c"]
    planes = list(np.ndindex(*lead_shape))
    blocks = [(c0, r0) for c0 in range(0, C, channels) for r0 in range(0, H, rows)]
    total = len(planes) * len(blocks)
    yield Progress(0, total, f"Saving {info.name} ({kind}): starting")

    tmp = Path(_make_temp_dir(path))
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=CurrentFormat().zarr_format)
        out = group.create_array(
            "0",
            shape=ome_shape,
            chunks=chunks,
            dtype="float32",
            fill_value=0.0,
            dimension_names=axes,
        )
        done = 0
        for idx in planes:
            plane = native[idx] if idx else native  # (C, h, w); a lazy stack computes it here
            for c0, r0 in blocks:
                c1, r1 = min(C, c0 + channels), min(H, r0 + rows)
                if kind == "native":
                    block = np.asarray(plane[c0:c1, r0:r1], dtype=np.float32)
                else:
                    row_index = None if (r0, r1) == (0, H) else np.arange(r0, r1)
                    block = align(
                        plane[c0:c1], info, stack.image_shape, stack.scale, rows=row_index
                    )
                sel = tuple(
                    idx[where[a]]
                    if a in where
                    else slice(c0, c1)
                    if a == "c"
                    else slice(r0, r1)
                    if a == "y"
                    else slice(None)
                    for a in axes
                )
                out[sel] = block
                del block
                done += 1
                yield Progress(done, total, f"Saving {info.name} ({kind}): block {done}/{total}")
        described = dict(metadata) if metadata is not None else activations_metadata(stack, network)
        described.setdefault("network", NETWORK_NAME)
        described["export"] = {
            "kind": kind,
            "axes": axes,
            "stack_axes": list(lead) + ["c", "y", "x"],
        }
        write_multiscales_metadata(
            group,
            [{"path": "0", "coordinateTransformations": transforms}],
            axes=axes,
            axes_units=axes_units,
            name=f"{info.name} activations, {kind}",
        )
        group.attrs[METADATA_KEY] = _jsonable(described)
        if path.exists():  # overwrite=True, checked above to be a Zarr store
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        raise ExportError(
            f"Could not write {str(path)!r}: {exc.strerror or exc}. Choose a "
            "folder you can write to, with enough free space."
        ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _known_units(
    names: tuple[str, ...], units: Sequence[str | None] | None
) -> dict[str, str] | None:
    """The units OME-Zarr knows (``micrometer``, ``second``, ...); napari's ``pixel`` is not."""
    if units is None:
        return None
    from ome_zarr.axes import KNOWN_SPATIAL_UNITS, KNOWN_TEMPORAL_UNITS

    known = {
        a: str(u)
        for a, u in zip(names, units, strict=False)
        if u is not None and str(u) in (KNOWN_TEMPORAL_UNITS if a == "t" else KNOWN_SPATIAL_UNITS)
    }
    return known or None


def _make_temp_dir(path: Path) -> str:
    # os.mkdir, not tempfile.mkdtemp: the folder gets the user's usual permissions (umask).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.partial"
    try:
        os.mkdir(tmp)
        return str(tmp)
    except OSError as exc:
        raise ExportError(
            f"Cannot write in {str(path.parent)!r}: {exc.strerror or exc}. "
            "Choose a folder you can write to."
        ) from exc


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and paths made JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def export_activations(
    activations: AlignedActivations,
    path: str | os.PathLike,
    *,
    kind: str = "aligned",
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    lead_axes: Sequence[str] | None = None,
    units: Sequence[str | None] | None = None,
    metadata: dict[str, Any] | None = None,
    network: Network | None = None,
    overwrite: bool = False,
    memory_budget: int | str | None = None,
) -> Path:
    """Save activations as an OME-Zarr image, streamed block by block.

    Parameters
    ----------
    activations : AlignedActivations
        From ``activations(..., resize=True)``: ``(..., C, H, W)``, lazy or not.
    path : str or path-like
        The OME-Zarr image to create (a folder, by convention named ``*.ome.zarr``).
    kind : "aligned" or "native"
        The ``(..., C, H, W)`` stack on the image's grid, or the ``(..., C, h, w)`` maps at
        the network's resolution, placed over the image by their scale and translation.
    scale, translate : sequence of float, optional
        The image's pixel size and origin along its axes ``(..., H, W)`` without colour, e.g.
        a napari image layer's ``scale`` and ``translate``; default 1 and 0.
    lead_axes : sequence of "t" and "z", optional
        What the axes before the channel axis are; default ``z`` for one, ``(t, z)`` for two.
    units : sequence of str or None, optional
        Units of the image's axes (``"micrometer"``, ...), written where OME-Zarr knows them.
    metadata : dict, optional
        Written as the group's ``napari_activations`` attribute; default from
        :func:`activations_metadata` (with ``network``).
    network : Network, optional
        The network that computed the activations, to record its weights and normalisation.
    overwrite : bool
        Replace an existing Zarr store at ``path`` (anything else there is never replaced).
    memory_budget : int or str, optional
        Working-memory budget (see :func:`napari_activations.tiling.memory_budget`); a block
        of values holds at most a quarter of it.

    Returns
    -------
    pathlib.Path
        ``path``. Read it back with ``ome_zarr.reader.Reader``, ``zarr.open_group(path)["0"]``,
        or napari with the ``napari-ome-zarr`` plugin.

    Raises
    ------
    ExportError
        The target exists, its folder does not or cannot be written, or the arguments do not
        fit the activations; the message says what to do.
    """
    gen = iter_export_activations(
        activations,
        path,
        kind=kind,
        scale=scale,
        translate=translate,
        lead_axes=lead_axes,
        units=units,
        metadata=metadata,
        network=network,
        overwrite=overwrite,
        memory_budget=memory_budget,
    )
    return drain(gen)
