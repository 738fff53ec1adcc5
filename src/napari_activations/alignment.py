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
        return _align_whole(np.asarray(native, dtype=np.float32), info, (H, W))
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


_SEPARABLE_MIN_STRIDE = 8
"""From this stride on, :func:`_align_whole` interpolates in two separable passes: measured
about 0.75x the time of :func:`align_2d` for fire9-concat's whole 1024x1024 stack, but about
twice its time for conv1's (stride 2), where the 2D kernel stays (``benchmarks/bench_resize.py
--kernels``)."""


def _axis_blocks(n_act: int, n_img: int, info: LayerInfo) -> tuple[int, int, np.ndarray]:
    """One axis of :func:`align_separable`: ``(start, blocks, index)``.

    Image pixel ``y`` lies ``(y + start) % S`` pixels past padded activation pixel
    ``j = (y + start) // S``, the padded activations being ``native[index]``: the activations
    with their edge pixels repeated ``ceil(O / S)`` times in front and as often as needed
    behind. ``blocks`` runs of S image pixels cover the image; ``index`` has ``blocks + 1``
    entries, since each run interpolates from pixel ``j`` towards pixel ``j + 1``.
    """
    S, O = info.stride, int(info.offset)
    top = math.ceil(O / S)
    start = S * top - O
    blocks = (start + n_img - 1) // S + 1
    index = np.clip(np.arange(-top, blocks + 1 - top), 0, n_act - 1)
    return start, blocks, index


def align_separable(native: np.ndarray, info: LayerInfo, HW: tuple[int, int]) -> np.ndarray:
    """:func:`_align_whole` for large strides: columns, then rows, each pass written once.

    Columns by ``F.interpolate``'s 1D linear kernel on the small native rows; rows as one
    broadcast ``addcmul`` (pixel ``p`` of a run is ``a[j] + (a[j+1] - a[j]) * p / S``) into
    a contiguous ``(n, blocks, S, W)`` array. The result is a view of that array (no copy).
    """
    import torch
    import torch.nn.functional as F

    h, w = native.shape[-2:]
    H, W = HW
    S = info.stride
    r_start, r_blocks, r_index = _axis_blocks(h, H, info)
    c_start, c_blocks, c_index = _axis_blocks(w, W, info)
    a = torch.from_numpy(np.ascontiguousarray(native, dtype=np.float32).reshape(-1, h, w))
    n = a.shape[0]
    weights = (torch.arange(S, dtype=torch.float32) / S)[:, None]
    with torch.inference_mode():
        a = a[:, :, torch.from_numpy(c_index)].reshape(n * h, 1, c_blocks + 1)
        cols = F.interpolate(a, size=(c_blocks * S + 1,), mode="linear", align_corners=True)
        a = cols.view(n, h, -1)[:, :, c_start : c_start + W][:, torch.from_numpy(r_index)]
        rows = torch.empty((n, r_blocks, S, W))
        torch.addcmul(a[:, :-1, None], a[:, 1:, None] - a[:, :-1, None], weights, out=rows)
    out = rows.numpy().reshape(n, r_blocks * S, W)[:, r_start : r_start + H]
    return out.reshape(native.shape[:-2] + (H, W))


def _align_whole(native: np.ndarray, info: LayerInfo, HW: tuple[int, int]) -> np.ndarray:
    """:func:`align` of whole planes: :func:`align_separable` from stride
    ``_SEPARABLE_MIN_STRIDE`` on, else :func:`align_2d`."""
    if info.stride >= _SEPARABLE_MIN_STRIDE:
        return align_separable(native, info, HW)
    return align_2d(native, info, HW)


def align_2d(native: np.ndarray, info: LayerInfo, HW: tuple[int, int]) -> np.ndarray:
    """:func:`align` of whole planes with PyTorch's multi-threaded 2D bilinear kernel.

    With unit input scale, activation pixel ``i`` sits on input pixel ``O + S*i``. Pad the
    activations by repeating their edge pixels (edges held), upsample corner-aligned by exactly
    S, and the image grid is a window of the result starting ``S*p - O`` pixels in: the same
    interpolation as the gather in :func:`align`, many times faster for whole stacks. The
    result is a strided view of that one allocation (no copy).
    """
    import torch
    import torch.nn.functional as F

    h, w = native.shape[-2:]
    H, W = HW
    S, O = info.stride, int(info.offset)
    top = math.ceil(O / S)
    start = S * top - O

    def bottom(n_act: int, n_img: int) -> int:
        return max(0, math.ceil((start + n_img - 1) / S) - (n_act + top - 1))

    pb, pr = bottom(h, H), bottom(w, W)
    a = torch.from_numpy(np.ascontiguousarray(native.reshape(-1, h, w)))[None]
    with torch.inference_mode():
        a = F.pad(a, (top, pr, top, pb), mode="replicate")
        size = ((a.shape[-2] - 1) * S + 1, (a.shape[-1] - 1) * S + 1)
        up = F.interpolate(a, size=size, mode="bilinear", align_corners=True)
    out = up[0, :, start : start + H, start : start + W].numpy()
    return out.reshape(native.shape[:-2] + (H, W))


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
