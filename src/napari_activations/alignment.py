"""Placing activation maps on the input image's own pixel grid.

Activation pixel ``i`` of a layer with total stride S and offset O looks at input pixel
``O + S * i`` (see :mod:`napari_activations.layers`). Resizing therefore maps input pixel ``y``
to the fractional activation coordinate ``(y - O) / S`` and interpolates bilinearly, holding the
edge values beyond the first and last activation pixels. A plain stretch of ``h`` pixels onto
``H`` (``imresize``) would misplace deep layers by several input pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layers import LayerInfo

__all__ = ["AxisMap", "axis_map", "AlignedActivations", "align", "interior"]


@dataclass(frozen=True)
class AxisMap:
    """Interpolation of one spatial axis: output pixel -> two source pixels and a weight."""

    lo: np.ndarray  # int, source index below
    hi: np.ndarray  # int, source index above
    w: np.ndarray  # float32, weight of ``hi``


def axis_map(
    n_out: int, n_act: int, info: LayerInfo, scale: float = 1.0, index: np.ndarray | None = None
) -> AxisMap:
    """Interpolation table for ``n_out`` image pixels from ``n_act`` activation pixels.

    ``scale`` is the factor the image was resized by before the network (network pixels per
    image pixel); image pixel ``y`` sits at network pixel ``(y + 0.5) * scale - 0.5``.
    ``index`` restricts the table to those output pixels.
    """
    y = np.arange(n_out, dtype=np.float64) if index is None else index.astype(np.float64)
    if info.is_global or n_act == 1:
        zeros = np.zeros(y.shape, dtype=np.intp)
        return AxisMap(zeros, zeros, np.zeros(y.shape, dtype=np.float32))
    if not info.aligned:  # no single grid: stretched over the image
        t = (y + 0.5) * n_act / n_out - 0.5
    else:
        t = ((y + 0.5) * scale - 0.5 - info.offset) / info.stride
    t = np.clip(t, 0.0, n_act - 1)
    lo = np.floor(t).astype(np.intp)
    hi = np.minimum(lo + 1, n_act - 1)
    return AxisMap(lo, hi, (t - lo).astype(np.float32))


def interior(info: LayerInfo, n_act: int, n_input: int | None = None) -> slice:
    """The activation pixels along one axis whose receptive field lies inside the image.

    The network pads its input (and its 3x3 expands) with zeros, so an activation pixel
    within half a receptive field of the image edge sees zeros that are not in the image: a
    stripe along the edge that some channels answer strongly, even on a blank image. Pixel
    ``i`` is inside when ``O + S*i`` is at least ``(RF - 1) / 2`` network pixels from both
    ends of the ``n_input`` network-input pixels. ``n_input=None`` (geometry unknown) assumes
    the input ends as far past the last activation pixel as it starts before the first.
    Layers without padding (``conv1``) and global layers keep every pixel; so does an axis too
    short to have an inside at all.
    """
    if info.is_global or not info.aligned or n_act < 1:
        return slice(0, n_act)
    half = (info.receptive_field - 1) / 2
    first = max(0, math.ceil((half - info.offset) / info.stride - 1e-9))
    if n_input is None:
        last = n_act - 1 - first
    else:
        last = min(n_act - 1, math.floor((n_input - 1 - half - info.offset) / info.stride + 1e-9))
    if last < first:
        return slice(0, n_act)
    return slice(first, last + 1)


def _interp(a: np.ndarray, m: AxisMap, axis: int) -> np.ndarray:
    lo = np.take(a, m.lo, axis=axis)
    hi = np.take(a, m.hi, axis=axis)
    shape = [1] * a.ndim
    shape[axis] = -1
    w = m.w.reshape(shape)
    lo += (hi - lo) * w  # lo is a fresh copy from np.take
    return lo


def align(
    native: np.ndarray,
    info: LayerInfo,
    image_hw: tuple[int, int],
    scale: tuple[float, float] = (1.0, 1.0),
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> np.ndarray:
    """Resample ``(..., h, w)`` activations onto the ``(H, W)`` image grid (eagerly).

    ``rows``/``cols`` select output rows/columns (default: all).
    """
    h, w = native.shape[-2:]
    H, W = image_hw
    if 0 in native.shape:  # an empty selection, e.g. planes 0:0
        shape = (H if rows is None else len(rows), W if cols is None else len(cols))
        return np.empty(native.shape[:-2] + shape, dtype=np.float32)
    if rows is None and cols is None and _on_integer_grid(info, (h, w), (H, W), scale):
        return align_periodic(native, info, (H, W))
    rm = axis_map(H, h, info, scale[0], rows)
    cm = axis_map(W, w, info, scale[1], cols)
    out = _interp(np.asarray(native, dtype=np.float32), rm, native.ndim - 2)
    return _interp(out, cm, native.ndim - 1)


def _on_integer_grid(
    info: LayerInfo, hw: tuple[int, int], HW: tuple[int, int], scale: tuple[float, float]
) -> bool:
    """True when activation pixels sit on whole input pixels inside the image."""
    return (
        scale == (1.0, 1.0)
        and not info.is_global
        and info.aligned
        and float(info.stride).is_integer()
        and min(hw) > 1
        and float(info.offset).is_integer()
        and info.offset < min(HW)
    )


_CHUNK_BYTES = 1 << 20
""":func:`align_periodic` works through its channels in pieces (a group of channels, or a band
of one channel's rows) whose column buffer takes about this many bytes, so that it stays in
the cache while the row pass reads it."""

_PHASE_COLUMNS_MAX_STRIDE = 4
"""Up to this stride, :func:`align_periodic`'s column pass writes one strided phase at a time;
from the next on, one broadcast over all S phases (measured about equal at stride 8, the
phases twice as fast at stride 2 and the broadcast twice as fast at 16)."""


def _axis_blocks(n_act: int, n_img: int, S: int, O: int) -> tuple[int, int, np.ndarray]:
    """One axis of :func:`align_periodic`: ``(start, blocks, index)``.

    Image pixel ``y`` lies ``(y + start) % S`` pixels past padded activation pixel
    ``j = (y + start) // S``, the padded activations being ``native[index]``: the activations
    with their edge pixels repeated ``ceil(O / S)`` times in front and as often as needed
    behind. ``blocks`` runs of S image pixels cover the image; ``index`` has ``blocks + 1``
    entries, since each run interpolates from pixel ``j`` towards pixel ``j + 1``.
    """
    top = math.ceil(O / S)
    start = S * top - O
    blocks = (start + n_img - 1) // S + 1
    index = np.clip(np.arange(-top, blocks + 1 - top), 0, n_act - 1)
    return start, blocks, index


def _take_runs(a, r_index: np.ndarray, c_index: np.ndarray, out) -> None:
    """``out[:] = a[:, r_index][:, :, c_index]`` for a ``(n, h, w)`` tensor and indices that
    are runs of consecutive pixels clipped to the array (as :func:`_axis_blocks` makes them):
    one slice copied, and its edge rows and columns repeated, with no gather and no
    allocation."""
    r0, r1 = int(r_index[0]), int(r_index[-1]) + 1
    c0, c1 = int(c_index[0]), int(c_index[-1]) + 1
    top = int((r_index == r0).sum()) - 1  # leading repeats; the trailing ones fill the rest
    left = int((c_index == c0).sum()) - 1
    bottom, right = top + r1 - r0, left + c1 - c0
    core = out[:, top:bottom, left:right]
    core.copy_(a[:, r0:r1, c0:c1])
    if left:
        out[:, top:bottom, :left].copy_(core[:, :, :1])
    if right < out.shape[2]:
        out[:, top:bottom, right:].copy_(core[:, :, -1:])
    if top:
        out[:, :top].copy_(out[:, top : top + 1])
    if bottom < out.shape[1]:
        out[:, bottom:].copy_(out[:, bottom - 1 : bottom])


def align_periodic(native: np.ndarray, info: LayerInfo, HW: tuple[int, int]) -> np.ndarray:
    """:func:`align` of whole planes on an integer grid, by the weights' period S.

    With unit input scale, integer stride S and integer offset O, image pixel
    ``y = O + S*j + p`` (``0 <= p < S``) is ``a[j] + (a[j+1] - a[j]) * p / S``: the same S
    weights in every run of S pixels, ``p = 0`` being an exact copy of ``a[j]``. Edges are
    held by repeating the edge pixels (:func:`_axis_blocks`). The work goes in pieces of
    about ``_CHUNK_BYTES`` (a group of channels, or a band of one channel's rows): first the
    columns of the piece's padded rows, S phases into a small buffer; then the image rows as
    one broadcast ``lerp`` per run of whole blocks, written straight into the C-contiguous
    ``(..., H, W)`` float32 result, the only full-size allocation, written once. Runs on
    torch's intra-op threads, as many as the caller set.
    """
    import torch

    h, w = native.shape[-2:]
    H, W = HW
    S, O = int(info.stride), int(info.offset)
    r_start, r_blocks, r_index = _axis_blocks(h, H, S, O)
    c_start, c_blocks, c_index = _axis_blocks(w, W, S, O)
    src = torch.from_numpy(np.ascontiguousarray(native, dtype=np.float32).reshape(-1, h, w))
    n = src.shape[0]
    out = torch.empty((n, H, W))
    rows_fit = max(2, _CHUNK_BYTES // (4 * c_blocks * S))  # padded rows in one piece
    if rows_fit > r_blocks:  # whole channels, several at a time
        k, band = max(1, min(n, rows_fit // (r_blocks + 1))), r_blocks
    else:  # bands of one channel's rows; a band of j blocks reads j + 1 padded rows
        k, band = 1, rows_fit - 1
    weights = torch.arange(S, dtype=torch.float32) / S
    padded = torch.empty((k, band + 1, c_blocks + 1))
    cols = torch.empty((k, band + 1, c_blocks, S))
    with torch.inference_mode():
        for c in range(0, n, k):
            m = min(k, n - c)
            for j0 in range(0, r_blocks, band):
                j1 = min(r_blocks, j0 + band)
                g = padded[:m, : j1 - j0 + 1]
                _take_runs(src[c : c + m], r_index[j0 : j1 + 1], c_index, g)
                a, b = g[..., :-1], g[..., 1:]
                col = cols[:m, : j1 - j0 + 1]
                if S <= _PHASE_COLUMNS_MAX_STRIDE:
                    col[..., 0].copy_(a)
                    for p in range(1, S):
                        torch.lerp(a, b, p / S, out=col[..., p])
                else:
                    torch.lerp(a[..., None], b[..., None], weights, out=col)
                rows = col.reshape(m, j1 - j0 + 1, c_blocks * S)[:, :, c_start : c_start + W]
                _row_pass(rows, weights, out[c : c + m], S, r_start, j0, j1)
    return out.numpy().reshape(native.shape[:-2] + (H, W))


def _row_pass(rows, weights, out, S: int, start: int, j0: int, j1: int) -> None:
    """The image rows of padded blocks ``j0`` to ``j1`` (exclusive) into ``out``
    (``(m, H, W)``), from ``rows`` (``(m, j1 - j0 + 1, W)``, padded row ``j0`` first): a
    partial first run of S rows, the whole runs as one broadcast ``lerp``, a partial last
    run."""
    import torch

    m, H, W = out.shape
    y, end = max(0, S * j0 - start), min(H, S * j1 - start)
    while y < end:
        j, p = divmod(y + start, S)
        n_rows = min(S - p, end - y) if p or end - y < S else (end - y) // S * S
        runs = (p + n_rows + S - 1) // S
        torch.lerp(
            rows[:, j - j0 : j - j0 + runs, None],
            rows[:, j - j0 + 1 : j - j0 + 1 + runs, None],
            weights[p : p + min(S, n_rows), None],
            out=out[:, y : y + n_rows].view(m, runs, -1, W),
        )
        y += n_rows


class AlignedActivations:
    """Lazy ``(..., C, H, W)`` float32 array: activations on the image's own pixel grid.

    Only the native ``(..., C, h, w)`` activations are held in memory; indexing computes the
    requested channels, rows and columns on access (a napari channel slider move costs one
    single-channel upsample). ``np.asarray(stack)`` computes the whole array.

    Attributes
    ----------
    native : numpy.ndarray
        The activations at the network's resolution, ``(..., C, h, w)``.
    layer : LayerInfo
    image_shape : tuple of int
        ``(H, W)`` of the image grid.
    scale : tuple of float
        Network pixels per image pixel along rows and columns (``input_scale``, as realised).
    backend : str or None
        The inference backend that computed the activations (``"torch"``, ``"onnxruntime"``).
    """

    dtype = np.dtype(np.float32)

    def __init__(
        self,
        native: np.ndarray,
        layer: LayerInfo,
        image_shape: tuple[int, int],
        scale: tuple[float, float] = (1.0, 1.0),
        backend: str | None = None,
    ):
        self.native = native
        self.backend = backend
        self.layer = layer
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.scale = (float(scale[0]), float(scale[1]))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.native.shape[:-2]) + self.image_shape

    @property
    def ndim(self) -> int:
        return self.native.ndim

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"<AlignedActivations {self.layer.name} shape={self.shape} "
            f"(native {tuple(self.native.shape)}), lazy>"
        )

    @property
    def network_input_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the image as the network saw it (after ``input_scale``)."""
        return (
            max(1, round(self.image_shape[0] * self.scale[0])),
            max(1, round(self.image_shape[1] * self.scale[1])),
        )

    def native_interior(self) -> tuple[slice, slice]:
        """Rows and columns of ``native`` whose receptive field lies inside the image.

        See :func:`interior`: outside them, the network's zero padding shows.
        """
        h, w = self.native.shape[-2:]
        n_h, n_w = self.network_input_shape
        return interior(self.layer, h, n_h), interior(self.layer, w, n_w)

    def image_interior(self) -> tuple[slice, slice]:
        """Rows and columns of the image grid that :meth:`native_interior` covers.

        Image pixel ``y`` sits at network pixel ``(y + 0.5) * scale - 0.5``; it is inside when
        that lies between the first and last inside activation pixels' centres.
        """
        out = []
        for n_img, n_act, s, inside in zip(
            self.image_shape,
            self.native.shape[-2:],
            self.scale,
            self.native_interior(),
            strict=False,
        ):
            if self.layer.is_global:
                out.append(slice(0, n_img))
                continue
            # An end that keeps its last activation pixel keeps the edge-held pixels beyond.
            lo = (
                -np.inf
                if inside.start == 0
                else self.layer.offset + self.layer.stride * inside.start
            )
            hi = (
                np.inf
                if inside.stop == n_act
                else self.layer.offset + self.layer.stride * (inside.stop - 1)
            )
            y = (np.arange(n_img) + 0.5) * s - 0.5
            keep = np.flatnonzero((y >= lo - 1e-9) & (y <= hi + 1e-9))
            out.append(slice(int(keep[0]), int(keep[-1]) + 1) if keep.size else slice(0, n_img))
        return out[0], out[1]

    def __array__(self, dtype=None, copy=None):
        out = align(self.native, self.layer, self.image_shape, self.scale)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key) or sum(k is Ellipsis for k in key) > 1:
            return np.asarray(self)[key]
        if any(k is Ellipsis for k in key):  # not ``in``: it compares index arrays elementwise
            i = next(n for n, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of {self.ndim} dimensions")
        arrays = sum(not isinstance(k, (slice, int, np.integer)) for k in key)
        if arrays and arrays + sum(isinstance(k, (int, np.integer)) for k in key) > 1:
            return np.asarray(self)[key]  # numpy pairs such indices up pointwise: no shortcut
        lead, (rk, ck) = key[:-2], key[-2:]
        native = self.native[lead + (slice(None), slice(None))]
        H, W = self.image_shape
        if _is_full(rk) and _is_full(ck):  # whole planes: the fast path
            return align(native, self.layer, self.image_shape, self.scale)
        rows, r_scalar = _as_index(rk, H)
        cols, c_scalar = _as_index(ck, W)
        out = align(native, self.layer, self.image_shape, self.scale, rows, cols)
        if r_scalar or c_scalar:
            out = out[(Ellipsis, 0 if r_scalar else slice(None), 0 if c_scalar else slice(None))]
        return out


def _is_full(k) -> bool:
    return isinstance(k, slice) and k == slice(None)


def _as_index(k, n: int) -> tuple[np.ndarray, bool]:
    """An index along one spatial axis as explicit positions, and whether it drops the axis."""
    if isinstance(k, (int, np.integer)):
        i = int(k)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for axis with size {n}")
        return np.array([i % n]), True
    if isinstance(k, slice):
        return np.arange(n)[k], False
    return np.arange(n)[np.asarray(k)], False
