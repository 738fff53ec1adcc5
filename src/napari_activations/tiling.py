"""Exact tiled inference: big images in bounded memory, with the same result as untiled.

A tile's input starts at a multiple of the layer's total stride S, so its activation grid is
the image's grid shifted by a whole number of pixels, and it carries a halo of half the
receptive field on each side. Only activation pixels whose whole receptive field lies inside
the tile (or whose tile edge is the image edge, where the zero padding is the same as untiled)
are kept, so the stitched result equals the untiled forward pass up to float rounding.

Memory: an untiled forward pass of SqueezeNet peaks at about :data:`FORWARD_BYTES_PER_PIXEL`
bytes per network-input pixel (measured on CPU, float32, 2048x2048 RGB, for conv1 through
fire9-concat, with torch; ONNX Runtime's peak was lower, 137 to 144 bytes against torch's 147 to
151 at 1024x1024 for conv1 and fire9-concat, so one budget serves both backends). Images whose
estimate exceeds the memory budget are tiled. The budget defaults to
:data:`DEFAULT_MEMORY_BUDGET` and is set by ``$NAPARI_ACTIVATIONS_MEMORY_BUDGET`` or per call,
in bytes or as a string read by dask's :func:`dask.utils.parse_bytes`: decimal units for
``"500M"``, ``"2G"`` or ``"2GB"`` (2*10**9 bytes), binary ones for ``"2Gi"`` or ``"2GiB"``
(2*2**30 bytes), as in dask's own chunk-size and memory-limit settings.

Global layers (SqueezeNet's ``pool10``, ``prob``; ResNet's ``avgpool``, ``fc``) are functions
of the mean of a local *context layer* over the image (SqueezeNet: :data:`CONTEXT_LAYER`; other
networks: the layer their global average pool reads, see
:meth:`~napari_activations.architecture.Architecture.context_layer`): a tiled run computes that
layer tile by tile and pools the stitched map (:func:`forward_layer`, :func:`global_pool`).
A global layer without such a context layer is never tiled, and neither is a layer gated by
squeeze-and-excitation (MobileNet v3, EfficientNet, RegNetY: ``global_context``): its gates are
means over the whole image, which no tile sees.

Every network's layers carry their own geometry (stride, offset, receptive field and
``tile_unit``, the multiple of input pixels a tile starts at), so one plan serves them all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .architecture import architecture_of
from .layers import LayerInfo, find_layer, output_size

__all__ = [
    "FORWARD_BYTES_PER_PIXEL",
    "DEFAULT_MEMORY_BUDGET",
    "MEMORY_BUDGET_ENV",
    "memory_budget",
    "estimate_forward_bytes",
    "forward_bytes_per_pixel",
    "can_tile",
    "choose_tile",
    "AxisTile",
    "plan_axis",
    "CONTEXT_LAYER",
    "forward_layer",
    "global_pool",
    "tiled_forward",
    "tile_count",
]

FORWARD_BYTES_PER_PIXEL = 160
"""Peak working memory of an untiled forward pass, bytes per network-input pixel."""

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Default working-memory budget of one forward pass: 1 GiB."""

MEMORY_BUDGET_ENV = "NAPARI_ACTIVATIONS_MEMORY_BUDGET"
"""Environment variable: the default memory budget, in bytes or with a unit as
:func:`memory_budget` reads it (``"2G"`` = 2*10**9 bytes, ``"2GiB"`` = 2*2**30)."""

CONTEXT_LAYER = "relu_conv10"
"""The network layer whose mean over the image the global layers (``pool10``, ``prob``) are."""


def memory_budget(budget: int | str | None = None) -> int:
    """The working-memory budget in bytes: ``budget``, else the environment, else 1 GiB.

    A number is bytes; a string is read by :func:`dask.utils.parse_bytes`, whose units are
    decimal without an ``i`` (``"500M"`` or ``"500MB"``: 500*10**6 bytes) and binary with it
    (``"500Mi"`` or ``"500MiB"``: 500*2**20 bytes); case and spaces do not matter.
    """
    from dask.utils import parse_bytes

    value = budget if budget is not None else os.environ.get(MEMORY_BUDGET_ENV)
    if value is None or value == "":
        return DEFAULT_MEMORY_BUDGET
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(
            f"The memory budget must be bytes or a string such as '2GiB'; got {value!r}."
        )
    try:
        out = parse_bytes(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError) as exc:  # OverflowError: infinity
        raise ValueError(
            f"Cannot read the memory budget {value!r}: use bytes, or a number with a unit, "
            f"e.g. '2GiB' (2*2**30 bytes) or '2GB' (2*10**9 bytes) (from "
            f"{MEMORY_BUDGET_ENV} or the call)."
        ) from exc
    if out <= 0:
        raise ValueError(f"The memory budget must be positive; got {value!r}.")
    return out


def estimate_forward_bytes(height: int, width: int, per_pixel: int | None = None) -> int:
    """Estimated peak working memory (bytes) of one untiled forward pass on ``height x width``.

    ``per_pixel``: the network's bytes per input pixel (default SqueezeNet's
    :data:`FORWARD_BYTES_PER_PIXEL`).
    """
    return int(height) * int(width) * int(per_pixel or FORWARD_BYTES_PER_PIXEL)


def forward_bytes_per_pixel(info: LayerInfo) -> int:
    """Peak bytes per input pixel of a forward pass of ``info``'s network."""
    return int(getattr(architecture_of(info), "bytes_per_pixel", FORWARD_BYTES_PER_PIXEL))


def forward_layer(info: LayerInfo, tiled: bool = True) -> LayerInfo:
    """The network layer a forward pass for ``info`` stops at.

    ``info`` itself, except for a global layer computed in tiles: its network's context layer
    (SqueezeNet's :data:`CONTEXT_LAYER`), pooled afterwards by :func:`global_pool` (an untiled
    pass runs the network to the end).
    """
    if tiled and info.is_global:
        context = architecture_of(info).context_layer(info)
        if context is not None:
            return context
    return info


def can_tile(info: LayerInfo) -> bool:
    """Whether ``info`` can be computed in tiles (local layers, and global layers whose
    network says which local layer they pool).

    Not a layer without a single grid, and not one that depends on the whole image through a
    gate (squeeze-and-excitation, ``global_context``): a tile would compute its gates from
    the tile alone, so tiles would not equal the whole image's pass.
    """
    geo = forward_layer(info)
    return geo.aligned and not geo.is_global and not geo.global_context


def _why_not_tiled(geo: LayerInfo) -> str:
    if not geo.aligned:
        return "it has no single grid"
    if geo.global_context:
        return (
            "it depends on the whole image through squeeze-and-excitation gates, which a "
            "tile cannot compute"
        )
    return "a global layer"


def global_pool(context: Any, info: LayerInfo, model: Any = None) -> Any:
    """A global layer from its context layer's ``(C, h, w)`` map: ``(C', 1, 1)`` float32.

    The mean over the pixels (accumulated in float64), then the rest of the network after its
    global pool (SqueezeNet's ``prob``: the softmax; ResNet's ``fc``: the linear layer, run
    by ``model``). Works on numpy and on dask arrays alike (dask stays lazy).
    """
    pooled = context.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
    arch = architecture_of(info)
    if arch.context_layer(info) is not None and info.name != arch.context_layer(info).name:
        pool_row = arch.layers[arch.index(arch.context_layer(info)) + 1]
        if info.name != pool_row.name:  # more than the pool itself
            if hasattr(pooled, "compute"):
                import dask.array as da

                pooled = da.from_delayed(
                    _delayed_tail(pooled, info, model),
                    shape=(info.channels, 1, 1),
                    dtype=np.float64,
                )
            else:
                pooled = arch.from_context(pooled, info, model)
    return pooled.astype(np.float32)


def _delayed_tail(pooled: Any, info: LayerInfo, model: Any) -> Any:
    import dask

    return dask.delayed(architecture_of(info).from_context, pure=True)(pooled, info, model)


def _halo(info: LayerInfo) -> int:
    return int(math.ceil((info.receptive_field - 1) / 2))


def choose_tile(
    layer: str | LayerInfo, height: int, width: int, budget: int | str | None = None
) -> int | None:
    """Tile side (network-input pixels) that keeps one forward pass inside the budget.

    ``None`` when the whole image fits. The side is a multiple of the layer's total stride.
    """
    info = find_layer(layer)
    limit = memory_budget(budget)
    per_pixel = forward_bytes_per_pixel(info)
    if estimate_forward_bytes(height, width, per_pixel) <= limit:
        return None
    geo = forward_layer(info, tiled=True)
    if not can_tile(info):
        raise MemoryError(
            f"Layer {info.name!r} cannot be computed in tiles ({_why_not_tiled(geo)}), and one "
            "forward pass would need about "
            f"{estimate_forward_bytes(height, width, per_pixel) / 2**30:.1f} GiB, more than "
            f"the memory budget of {limit / 2**20:.0f} MiB. Raise the budget "
            f"({MEMORY_BUDGET_ENV} or memory_budget=) or use a smaller input_scale."
        )
    unit = geo.tile_unit
    side = int(math.sqrt(limit / per_pixel)) - 2 * _halo(geo)
    side = (side // unit) * unit
    if side < unit:
        raise MemoryError(
            f"Layer {info.name!r} needs {geo.receptive_field}-pixel tiles at least, more than "
            f"a memory budget of {limit / 2**20:.0f} MiB allows. Raise the budget "
            f"({MEMORY_BUDGET_ENV} or memory_budget=) or use a smaller input_scale."
        )
    return side


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis.

    ``[start, stop)`` input pixels are read; activation pixels ``[out_start, out_stop)`` of
    the whole image are kept, which are the tile's own pixels from ``local_start``.
    """

    start: int
    stop: int
    out_start: int
    out_stop: int
    local_start: int

    @property
    def kept(self) -> slice:
        """The activation pixels kept, in the tile's own activation grid."""
        return slice(self.local_start, self.local_start + self.out_stop - self.out_start)

    @property
    def output(self) -> slice:
        """The same pixels in the whole image's activation grid."""
        return slice(self.out_start, self.out_stop)


def plan_axis(n: int, info: LayerInfo, tile: int) -> list[AxisTile]:
    """Tiles covering an axis of ``n`` input pixels, about ``tile`` input pixels of output each."""
    n_out = output_size(info, n, n)[0]
    S, O, halo, unit = info.stride, info.offset, _halo(info), info.tile_unit
    step = max(1, int(int(tile) // unit * unit / S))  # activation pixels per tile
    tiles = []
    for a0 in range(0, n_out, step):
        a1 = min(n_out, a0 + step)
        lo = O + S * a0 - halo
        x0 = max(0, int(math.floor(lo / unit)) * unit)
        hi = O + S * (a1 - 1) + halo + 1
        # a whole number of units: a network that needs sides divisible by its depth's
        # stride (a U-Net's skip connections) runs on every tile as on the whole image
        x1 = min(n, x0 + int(math.ceil((hi - x0) / unit)) * unit)
        tiles.append(AxisTile(x0, x1, a0, a1, a0 - int(round(x0 / S))))
    return tiles


def tiled_forward(
    run: Callable[[Any, LayerInfo], Generator[None, None, np.ndarray]],
    region: Callable[[int, int, int, int], Any],
    size: tuple[int, int],
    info: LayerInfo,
    tile: int | None,
    model: Any = None,
) -> Generator[None, None, np.ndarray]:
    """Forward one plane, whole or in tiles; yields after each network block of each tile.

    ``run(x, layer)`` is the forward generator of an input tensor up to ``layer`` (a backend's
    runner), returning ``(1, C, h, w)`` float32 numpy activations; ``region(y0, y1, x0, x1)``
    gives the normalised input tensor of that region, ``size`` is the network-input size.
    Returns the ``(C, h, w)`` float32 activations.
    """
    if tile is None:
        out = yield from run(region(0, size[0], 0, size[1]), info)
        return out[0]

    geo = forward_layer(info)
    rows, cols = plan_axis(size[0], geo, tile), plan_axis(size[1], geo, tile)
    h, w = output_size(geo, *size)
    out: np.ndarray | None = None
    for r in rows:
        for c in cols:
            part = yield from run(region(r.start, r.stop, c.start, c.stop), geo)
            part = part[0, :, r.kept, c.kept]
            if out is None:
                out = np.empty((part.shape[0], h, w), dtype=np.float32)
            out[:, r.output, c.output] = part
    assert out is not None
    return global_pool(out, info, model) if info.is_global else out


def tile_count(info: LayerInfo, size: tuple[int, int], tile: int | None) -> int:
    """How many tiles :func:`tiled_forward` runs for this layer and network-input size."""
    if tile is None:
        return 1
    geo = forward_layer(info)
    return len(plan_axis(size[0], geo, tile)) * len(plan_axis(size[1], geo, tile))
