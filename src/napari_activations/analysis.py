"""Questions asked of an activation array: what all channels look like, which are strongest,
which see a region, which change between two images, what one pixel sees.

Pure numpy (no torch, no napari, no Qt). Every function takes activations as returned by
:func:`napari_activations.activations`: an array of shape ``(..., C, h, w)`` -- the channel
axis stands just before the two spatial axes -- or the lazy
:class:`~napari_activations.AlignedActivations` of ``resize=True``, which is read in blocks of
rows so that a large image never needs its whole ``(C, H, W)`` stack in memory at once.

Channels are counted from 0, as on napari's channel slider; MATLAB's channel ``n`` is index
``n - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .alignment import AlignedActivations, interior
from .architecture import SQUEEZENET, Architecture, architecture_of
from .layers import LayerInfo

__all__ = [
    "Montage",
    "RegionError",
    "difference",
    "grid_shape",
    "montage",
    "network_table",
    "probe",
    "inside_border",
    "rank_channels",
    "strongest_channels",
    "top_channels",
]


class RegionError(ValueError):
    """The region cannot rank channels (empty, or all of the image); the message says why."""


# Activation blocks read at once by the reductions (bytes of float32).
_BLOCK_BYTES = 32 * 2**20


# --------------------------------------------------------------------------- montage


def grid_shape(n: int) -> tuple[int, int]:
    """``(rows, cols)`` of the tile grid for ``n`` tiles: as square as possible, wider than tall.

    ``rows = floor(sqrt(n))`` and ``cols = ceil(n / rows)``: 64 -> 8x8, 48 -> 6x8 (as MATLAB's
    reference example tiles them), 16 -> 4x4, 1000 -> 31x33.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"A montage needs at least one tile; got {n}.")
    rows = math.isqrt(n)
    return rows, math.ceil(n / rows)


@dataclass(frozen=True)
class Montage:
    """All channels of an activation map as one image of tiles, and where each tile sits.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap)``. Tiles run
        row by row (channel 0 top left, channel ``cols`` starts the second row).
    grid : tuple of int
        ``(rows, cols)``.
    tile_shape : tuple of int
        ``(h, w)`` of one tile.
    gap : int
        Pixels between neighbouring tiles.
    channels : int
        Number of tiles that hold a channel; the remaining ``rows * cols - channels`` tiles at
        the end are blank.
    """

    image: np.ndarray
    grid: tuple[int, int]
    tile_shape: tuple[int, int]
    gap: int
    channels: int

    def tile_origin(self, channel: int) -> tuple[int, int]:
        """Montage pixel ``(y, x)`` of the top-left corner of ``channel``'s tile."""
        if not 0 <= channel < self.channels:
            raise IndexError(f"channel {channel} is not in 0..{self.channels - 1}")
        r, c = divmod(int(channel), self.grid[1])
        h, w = self.tile_shape
        return r * (h + self.gap), c * (w + self.gap)

    def channel_at(self, y: float, x: float) -> int | None:
        """The channel whose tile holds montage pixel ``(y, x)``; None on a gap or blank tile.

        Coordinates are napari data coordinates (pixel centres at integers) and are rounded.
        """
        yi, xi = round(float(y)), round(float(x))
        h, w = self.tile_shape
        r, dy = divmod(yi, h + self.gap)
        c, dx = divmod(xi, w + self.gap)
        if yi < 0 or xi < 0 or dy >= h or dx >= w or r >= self.grid[0] or c >= self.grid[1]:
            return None
        channel = r * self.grid[1] + c
        return channel if channel < self.channels else None

    def label_positions(self) -> np.ndarray:
        """``(channels, 2)`` float array: the ``(y, x)`` of each tile's top-left corner.

        Row ``i`` belongs to channel ``i``; handy for text labels (e.g. a napari Points layer).
        """
        return np.array([self.tile_origin(c) for c in range(self.channels)], dtype=float)


def _normalise(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``(a - min) / (max - min)`` over ``axes`` (MATLAB's ``mat2gray``); constant -> 0."""
    lo = np.nanmin(a, axis=axes, keepdims=True)
    hi = np.nanmax(a, axis=axes, keepdims=True)
    span = hi - lo
    out = np.zeros_like(a)
    np.divide(a - lo, span, out=out, where=span > 0)
    return out


def montage(
    acts: Any,
    *,
    normalize: Literal["channel", "global", "none"] = "channel",
    gap: int = 1,
    grid: tuple[int, int] | None = None,
    fill: float | None = None,
) -> Montage:
    """All channels of one activation map as a grid of tiles (MATLAB's ``imtile``).

    Parameters
    ----------
    acts : array-like, ``(C, h, w)``
        One image's activations; for a stack, pass one plane, e.g. ``acts[z]``.
    normalize : {"channel", "global", "none"}
        "channel": each tile scaled to [0, 1] by its own min and max (``mat2gray`` per
        channel), so every channel's pattern is visible. "global": all tiles scaled together
        (``mat2gray`` of the whole array), so tiles compare in brightness. "none": raw values.
    gap : int
        Pixels between tiles.
    grid : (rows, cols), optional
        Default :func:`grid_shape` (``C``): 8x8 for 64 channels, 6x8 for 48.
    fill : float, optional
        Value of gaps and blank tiles; default the montage's maximum (1.0 when normalised), so
        the grid shows as thin bright lines.

    Returns
    -------
    Montage
        The image and the tile geometry (:meth:`Montage.channel_at`,
        :meth:`Montage.tile_origin`, :meth:`Montage.label_positions`).
    """
    a = np.asarray(acts, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(
            f"montage takes one image's activations, (C, h, w); got shape "
            f"{a.shape}. For a stack, pass one plane, e.g. acts[0]."
        )
    n, h, w = a.shape
    gap = int(gap)
    if gap < 0:
        raise ValueError(f"gap must be 0 or more pixels; got {gap}.")
    rows, cols = grid_shape(n) if grid is None else (int(grid[0]), int(grid[1]))
    if rows * cols < n:
        raise ValueError(
            f"A {rows}x{cols} grid has {rows * cols} tiles, fewer than the {n} channels."
        )
    if normalize == "channel":
        a = _normalise(a, (1, 2))
    elif normalize == "global":
        a = _normalise(a, (0, 1, 2))
    elif normalize != "none":
        raise ValueError(f"normalize must be 'channel', 'global' or 'none'; got {normalize!r}.")
    if fill is None:
        fill = float(np.nanmax(a)) if a.size else 0.0
    image = np.full(
        (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), fill, dtype=np.float32
    )
    result = Montage(image, (rows, cols), (h, w), gap, n)
    for c in range(n):
        y, x = result.tile_origin(c)
        image[y : y + h, x : x + w] = a[c]
    return result


# --------------------------------------------------------------------------- reductions


def _check_acts(acts: Any) -> Any:
    if not hasattr(acts, "shape"):
        acts = np.asarray(acts)
    if len(acts.shape) < 3:
        raise ValueError(f"Activations have shape (..., C, h, w); got shape {tuple(acts.shape)}.")
    return acts


def _row_blocks(acts: Any) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, block)`` pairs covering ``acts`` along its row axis, as float32 numpy arrays.

    Lazy arrays (AlignedActivations, dask) are computed one block at a time.
    """
    shape = tuple(acts.shape)
    height = shape[-2]
    per_row = max(1, int(np.prod(shape)) // max(height, 1) * 4)
    step = max(1, _BLOCK_BYTES // per_row)
    for r0 in range(0, height, step):
        rows = slice(r0, min(r0 + step, height))
        yield rows, np.asarray(acts[..., rows, :], dtype=np.float32)


def _per_channel(block: np.ndarray) -> np.ndarray:
    """``(..., C, h, w)`` -> ``(C, N)``: each channel's values as one row."""
    return np.moveaxis(block, -3, 0).reshape(block.shape[-3], -1)


def _channel_stats(
    acts: Any, region: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Per channel: sum and max over all pixels, the pixel count, and the sum inside ``region``.

    ``region`` is boolean with the shape of ``acts`` without its channel axis.
    """
    n = acts.shape[-3]
    total = np.zeros(n, dtype=np.float64)
    inside = np.zeros(n, dtype=np.float64)
    peak = np.full(n, -np.inf, dtype=np.float64)
    count = 0
    for rows, block in _row_blocks(acts):
        flat = _per_channel(block)
        total += flat.sum(axis=1, dtype=np.float64)
        if flat.shape[1]:
            peak = np.maximum(peak, flat.max(axis=1))
        count += flat.shape[1]
        if region is not None:
            mask = region[..., rows, :].reshape(-1)
            inside += flat[:, mask].sum(axis=1, dtype=np.float64)
    return total, peak, count, inside


def _region_mask(acts: Any, region: Any) -> np.ndarray:
    """``region`` as a boolean array shaped like ``acts`` without the channel axis."""
    target = tuple(acts.shape[:-3]) + tuple(acts.shape[-2:])
    mask = np.asarray(region)
    if mask.dtype != bool:
        mask = mask != 0
    try:
        mask = np.broadcast_to(mask, target)
    except ValueError:
        raise ValueError(
            f"The region has shape {mask.shape}; it must match the activations' "
            f"spatial shape {tuple(acts.shape[-2:])} (use resize=True to rank on "
            f"the image's own pixel grid)."
        ) from None
    return mask


class _Window:
    """Lazy view of the rows and columns ``rows, cols`` of ``(..., C, h, w)`` activations.

    Read in row blocks by :func:`_row_blocks`, like the activations themselves.
    """

    def __init__(self, acts: Any, rows: slice, cols: slice):
        self.acts, self.rows, self.cols = acts, rows, cols
        lead = tuple(acts.shape[:-2])
        self.shape = lead + (len(range(acts.shape[-2])[rows]), len(range(acts.shape[-1])[cols]))

    def __getitem__(self, key: tuple) -> np.ndarray:
        *lead, r, c = key  # (Ellipsis, row slice, column slice), as _row_blocks asks
        base_rows = range(self.acts.shape[-2])[self.rows][r]
        base_cols = range(self.acts.shape[-1])[self.cols][c]
        return self.acts[
            (*lead, slice(base_rows.start, base_rows.stop), slice(base_cols.start, base_cols.stop))
        ]


def _layer_row(layer: str | LayerInfo, network: Any = None) -> LayerInfo:
    """The row of ``layer``: a row as it is (it knows its network), a name looked up in
    ``network``'s layers (default SqueezeNet v1.1's)."""
    if isinstance(layer, LayerInfo):
        return architecture_of(layer).find_layer(layer)
    return _architecture(network).find_layer(layer)


def inside_border(
    acts: Any, layer: str | LayerInfo | None = None, *, network: Any = None
) -> tuple[slice, slice]:
    """Rows and columns of ``acts`` whose receptive field lies inside the image.

    Outside them, within half a receptive field of the image edge, the network's zero padding
    shows: a stripe along the edge that some channels answer strongly, even on a blank
    image (see :func:`~napari_activations.alignment.interior`). The geometry comes from an
    :class:`~napari_activations.AlignedActivations` itself (exact, on the image's grid), or
    from ``layer`` for native ``(..., C, h, w)`` activations (a row, or a name of ``network``'s
    layers: a :class:`~napari_activations.Network`, default SqueezeNet v1.1). Without either,
    every pixel; layers that are not aligned have no known border and keep every pixel too.
    """
    h, w = acts.shape[-2:]
    if isinstance(acts, AlignedActivations):
        return acts.image_interior()
    if layer is None:
        return slice(0, h), slice(0, w)
    info = _layer_row(layer, network)
    return interior(info, h), interior(info, w)


def _without_border(
    acts: Any, include_border: bool, layer: str | LayerInfo | None, network: Any = None
) -> tuple[Any, tuple[slice, slice]]:
    """``acts`` cropped to :func:`inside_border` (unless ``include_border``), and the crop."""
    h, w = acts.shape[-2:]
    if include_border:
        return acts, (slice(0, h), slice(0, w))
    rows, cols = inside_border(acts, layer, network=network)
    if (rows.start, rows.stop, cols.start, cols.stop) == (0, h, 0, w):
        return acts, (rows, cols)
    return _Window(acts, rows, cols), (rows, cols)


def top_channels(scores: Any, k: int | None = 5) -> list[tuple[int, float]]:
    """The ``k`` highest of per-channel ``scores`` as ``[(channel, score), ...]``, best first.

    ``k=None`` returns all channels; NaN scores come last. Ties keep channel order.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(np.where(np.isnan(s), -np.inf, -s), kind="stable")
    if k is not None:
        order = order[: max(0, int(k))]
    return [(int(c), float(s[c])) for c in order]


def strongest_channels(
    acts: Any,
    k: int | None = 5,
    *,
    by: Literal["max", "mean"] = "max",
    include_border: bool = False,
    layer: str | LayerInfo | None = None,
    network: Any = None,
) -> list[tuple[int, float]]:
    """The channels with the strongest activation, as ``[(channel, value), ...]``, best first.

    Parameters
    ----------
    acts : array-like, ``(..., C, h, w)``
    k : int or None
        How many; None for all channels in order.
    by : {"max", "mean"}
        "max": the largest value anywhere (the reference example's choice: one strong spot is
        enough). "mean": the average over all pixels (channels active everywhere).
    include_border : bool
        False (default): leave out the pixels within half a receptive field of the image edge,
        where the network's zero padding shows (:func:`inside_border`); otherwise a channel
        that answers the padding wins on any image. True: every pixel.
    layer : str or LayerInfo, optional
        The network layer of native ``(..., C, h, w)`` activations, for the border's width;
        :class:`~napari_activations.AlignedActivations` know theirs. Plain arrays without
        ``layer`` have no known border: every pixel counts.
    network : Network, optional
        Whose layer a ``layer`` name is (default SqueezeNet v1.1); a row knows its network.
    """
    acts = _check_acts(acts)
    acts, _ = _without_border(acts, include_border, layer, network)
    total, peak, count, _ = _channel_stats(acts)
    if by == "max":
        scores = peak
    elif by == "mean":
        scores = total / max(count, 1)
    else:
        raise ValueError(f"by must be 'max' or 'mean'; got {by!r}.")
    return top_channels(scores, k)


# --------------------------------------------------------------------------- ranking

RANK_BY_REGION = np.dtype(
    [
        ("channel", np.int64),
        ("inside", np.float64),
        ("outside", np.float64),
        ("ratio", np.float64),
        ("difference", np.float64),
    ]
)
RANK_BY_CHANGE = np.dtype(
    [("channel", np.int64), ("first", np.float64), ("second", np.float64), ("change", np.float64)]
)


def _sorted(table: np.ndarray, key: np.ndarray, k: int | None) -> np.ndarray:
    order = np.argsort(np.where(np.isnan(key), np.inf, -key), kind="stable")
    if k is not None:
        order = order[: max(0, int(k))]
    return table[order]


def rank_channels(
    acts: Any,
    *,
    region: Any = None,
    other: Any = None,
    k: int | None = None,
    sort: Literal["ratio", "difference"] = "ratio",
    change: Literal["difference", "absolute"] = "difference",
    include_border: bool = False,
    layer: str | LayerInfo | None = None,
    network: Any = None,
) -> np.ndarray:
    """Rank channels by a region of the image, or by how they change between two images.

    Parameters
    ----------
    acts : array-like, ``(..., C, h, w)``
        Activations of the (first) image.
    region : boolean array-like, optional
        The pixels of interest, on the same grid as ``acts``' last two axes (``(h, w)``, or
        ``(..., h, w)`` for a stack). Use ``resize=True`` activations for a region drawn on the
        image.
    other : array-like, optional
        Activations of a second image, same shape and layer as ``acts``. Given: channels are
        ranked by how much they change from ``acts`` to ``other``, inside ``region`` or, when
        ``region`` is None, over the whole image.
    k : int, optional
        Keep only the first ``k`` rows.
    sort : {"ratio", "difference"}
        Region ranking only: by ``inside / outside`` (selectivity, independent of the channel's
        scale) or by ``inside - outside`` (in activation units).
    change : {"difference", "absolute"}
        Comparison only: the mean of ``acts - other`` (positive: the channel lost its response
        in the second image) or of ``|acts - other|`` (any change).
    include_border, layer : bool, str or LayerInfo
        Region ranking only, as in :func:`strongest_channels`: by default the pixels within
        half a receptive field of the image edge (the network's zero padding) count neither
        inside nor outside the region. Comparisons keep every pixel: the padding is the same
        in both images.
    network : Network, optional
        Whose layer a ``layer`` name is (default SqueezeNet v1.1).

    Returns
    -------
    numpy.ndarray
        A structured array, one row per channel, best first. Region ranking: fields
        ``channel, inside, outside, ratio, difference`` (means inside and outside the region;
        ``ratio`` is NaN where the outside mean is not positive, and such rows sort last).
        Comparison: fields ``channel, first, second, change`` (the two images' means over the
        region or image, and the mean change). ``rows["channel"]`` lists the channels in rank
        order.
    """
    acts = _check_acts(acts)
    if region is None and other is None:
        raise ValueError(
            "rank_channels needs a region, a second image's activations (other), or both."
        )
    mask = None if region is None else _region_mask(acts, region)
    n = acts.shape[-3]
    if other is None:
        acts, (rows, cols) = _without_border(acts, include_border, layer, network)
        whole_in = int(mask.sum())
        mask = mask[..., rows, cols]
        total, _, count, inside_sum = _channel_stats(acts, mask)
        n_in = int(mask.sum())
        n_out = count - n_in
        if n_in == 0 and whole_in > 0:
            raise RegionError(
                "The region lies within half a receptive field of the image edge, "
                "where the network's zero padding shows, and such pixels are left "
                "out: mark a region further in, or pass include_border=True."
            )
        if n_in == 0 or n_out == 0:
            raise RegionError(
                f"The region covers {n_in} of {count} pixels; it must cover some "
                "pixels and leave some outside."
            )
        inside = inside_sum / n_in
        outside = (total - inside_sum) / n_out
        ratio = np.full(n, np.nan)
        np.divide(inside, outside, out=ratio, where=outside > 0)
        table = np.empty(n, dtype=RANK_BY_REGION)
        table["channel"] = np.arange(n)
        table["inside"], table["outside"] = inside, outside
        table["ratio"], table["difference"] = ratio, inside - outside
        if sort not in ("ratio", "difference"):
            raise ValueError(f"sort must be 'ratio' or 'difference'; got {sort!r}.")
        return _sorted(table, table[sort], k)

    other = _check_acts(other)
    if tuple(other.shape) != tuple(acts.shape):
        raise ValueError(
            f"Both images' activations must have the same shape; got "
            f"{tuple(acts.shape)} and {tuple(other.shape)}."
        )
    if change not in ("difference", "absolute"):
        raise ValueError(f"change must be 'difference' or 'absolute'; got {change!r}.")
    sums = np.zeros((3, n), dtype=np.float64)  # first, second, change
    count = 0
    for rows, a in _row_blocks(acts):
        b = np.asarray(other[..., rows, :], dtype=np.float32)
        a, b = _per_channel(a), _per_channel(b)
        if mask is not None:
            keep = mask[..., rows, :].reshape(-1)
            a, b = a[:, keep], b[:, keep]
        d = a - b
        sums[0] += a.sum(axis=1, dtype=np.float64)
        sums[1] += b.sum(axis=1, dtype=np.float64)
        sums[2] += (np.abs(d) if change == "absolute" else d).sum(axis=1, dtype=np.float64)
        count += a.shape[1]
    if count == 0:
        raise RegionError("The region covers no pixels.")
    means = sums / count
    table = np.empty(n, dtype=RANK_BY_CHANGE)
    table["channel"] = np.arange(n)
    table["first"], table["second"], table["change"] = means
    return _sorted(table, table["change"], k)


# --------------------------------------------------------------------------- pixels, pairs


def probe(acts: Any, y: float, x: float, *, plane: tuple[int, ...] = ()) -> np.ndarray:
    """The activation of every channel at one pixel: a ``(C,)`` float32 array.

    ``y, x`` are pixel coordinates on the activations' grid (napari data coordinates; rounded
    to the nearest pixel). ``plane`` indexes the leading axes of a stack. Pass the result to
    :func:`top_channels` for the strongest channels there.
    """
    acts = _check_acts(acts)
    h, w = acts.shape[-2:]
    yi, xi = round(float(y)), round(float(x))
    if not (0 <= yi < h and 0 <= xi < w):
        raise IndexError(f"Pixel ({yi}, {xi}) is outside the {h}x{w} activation map.")
    plane = tuple(int(p) for p in plane)
    if len(plane) != len(acts.shape) - 3:
        raise IndexError(
            f"plane must index the {len(acts.shape) - 3} leading axes of shape "
            f"{tuple(acts.shape)}; got {plane}."
        )
    return np.asarray(acts[plane + (slice(None), yi, xi)], dtype=np.float32)


def difference(first: Any, second: Any) -> np.ndarray | AlignedActivations:
    """``first - second``: how each channel changes from the first image to the second.

    Positive where the first image drives a channel harder. Two
    :class:`~napari_activations.AlignedActivations` of the same layer and grid give a lazy
    AlignedActivations (the alignment is linear, so the difference of the native maps,
    aligned, is exactly the difference of the aligned maps); anything else a float32 array.
    """
    if (
        isinstance(first, AlignedActivations)
        and isinstance(second, AlignedActivations)
        and first.layer == second.layer
        and first.image_shape == second.image_shape
        and first.scale == second.scale
        and first.native.shape == second.native.shape
    ):
        return AlignedActivations(
            first.native - second.native, first.layer, first.image_shape, first.scale
        )
    if tuple(first.shape) != tuple(second.shape):
        raise ValueError(
            f"Both activations must have the same shape; got "
            f"{tuple(first.shape)} and {tuple(second.shape)}."
        )
    return np.asarray(first, dtype=np.float32) - np.asarray(second, dtype=np.float32)


# --------------------------------------------------------------------------- network table

NETWORK_TABLE = np.dtype(
    [
        ("layer", object),
        ("block", object),
        ("height", np.int64),
        ("width", np.int64),
        ("channels", np.int64),
        ("stride", np.float64),
        ("receptive_field", np.float64),
        ("aligned", bool),
        ("note", object),
    ]
)


def _architecture(network: Any = None) -> Architecture:
    """The :class:`~napari_activations.architecture.Architecture` of ``network``: a
    :class:`~napari_activations.Network`, an architecture itself, or None (SqueezeNet v1.1)."""
    if network is None:
        return SQUEEZENET
    arch = getattr(network, "arch", network)
    if not isinstance(arch, Architecture):
        raise TypeError(
            "network must be a Network (from load_network) or its architecture (net.arch), "
            f"not {type(network).__name__}."
        )
    return arch


def network_table(height: int, width: int, network: Any = None) -> np.ndarray:
    """Every layer with its output size for an image of ``height x width`` (``analyzeNetwork``).

    Parameters
    ----------
    height, width : int
        Input pixels the network sees.
    network : Network or Architecture, optional
        Whose layers; default SqueezeNet v1.1.

    Returns
    -------
    numpy.ndarray
        A structured array, one row per network layer in network order, with fields
        ``layer, block, height, width, channels, stride, receptive_field, aligned, note``.
        Sizes are ``0`` where the image is too small for the layer. Stride and receptive field
        (input pixels; a stride below 1 after upsampling) are ``0`` for the global layers
        (``pool10``, ``prob``, ResNet's ``avgpool``), whose one pixel sees the whole image, and
        for layers that are not aligned (``aligned`` False: branches with different grids
        merged; ``note`` says why), which are shown stretched over the image.
    """
    arch = _architecture(network)
    table = np.empty(len(arch.layers), dtype=NETWORK_TABLE)
    for i, info in enumerate(arch.layers):
        h, w = arch.output_size(info, height, width)
        table[i] = (
            info.name,
            info.block,
            h,
            w,
            info.channels,
            info.stride or 0,
            info.receptive_field or 0,
            bool(info.aligned),
            info.note,
        )
    return table
