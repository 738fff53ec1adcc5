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
:data:`DEFAULT_MEMORY_BUDGET` and is set by ``$NAPARI_ACTIVATIONS_MEMORY_BUDGET`` (bytes, or
with a K/M/G suffix) or per call.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layers import LayerInfo, find_layer, output_size

__all__ = [
    "FORWARD_BYTES_PER_PIXEL",
    "DEFAULT_MEMORY_BUDGET",
    "MEMORY_BUDGET_ENV",
    "memory_budget",
    "estimate_forward_bytes",
    "choose_tile",
    "AxisTile",
    "plan_axis",
]

FORWARD_BYTES_PER_PIXEL = 160
"""Peak working memory of an untiled forward pass, bytes per network-input pixel."""

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Default working-memory budget of one forward pass: 1 GiB."""

MEMORY_BUDGET_ENV = "NAPARI_ACTIVATIONS_MEMORY_BUDGET"

_CONTEXT_LAYER = "relu_conv10"  # global layers are computed as the mean of this layer


def memory_budget(budget: int | str | None = None) -> int:
    """The working-memory budget in bytes: ``budget``, else the environment, else 1 GiB."""
    value = budget if budget is not None else os.environ.get(MEMORY_BUDGET_ENV)
    if value is None or value == "":
        return DEFAULT_MEMORY_BUDGET
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"The memory budget must be positive; got {value}.")
        return int(value)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)i?[bB]?\s*", str(value))
    if not m:
        raise ValueError(
            f"Cannot read the memory budget {value!r}: use bytes, or a number "
            f"with K, M or G, e.g. '2G' (from {MEMORY_BUDGET_ENV} or the call)."
        )
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    out = int(float(m.group(1)) * factor)
    if out <= 0:
        raise ValueError(f"The memory budget must be positive; got {value!r}.")
    return out


def estimate_forward_bytes(height: int, width: int) -> int:
    """Estimated peak working memory (bytes) of one untiled forward pass on ``height x width``."""
    return int(height) * int(width) * FORWARD_BYTES_PER_PIXEL


def _halo(info: LayerInfo) -> int:
    return (info.receptive_field - 1) // 2


def choose_tile(
    layer: str | LayerInfo, height: int, width: int, budget: int | str | None = None
) -> int | None:
    """Tile side (network-input pixels) that keeps one forward pass inside the budget.

    ``None`` when the whole image fits. The side is a multiple of the layer's total stride.
    """
    info = find_layer(layer)
    limit = memory_budget(budget)
    if estimate_forward_bytes(height, width) <= limit:
        return None
    geo = find_layer(_CONTEXT_LAYER) if info.is_global else info
    side = int(math.sqrt(limit / FORWARD_BYTES_PER_PIXEL)) - 2 * _halo(geo)
    side = (side // geo.stride) * geo.stride
    if side < geo.stride:
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


def plan_axis(n: int, info: LayerInfo, tile: int) -> list[AxisTile]:
    """Tiles covering an axis of ``n`` input pixels, about ``tile`` input pixels of output each."""
    n_out = output_size(info, n, n)[0]
    S, O, halo = info.stride, info.offset, _halo(info)
    step = max(1, int(tile) // S)
    tiles = []
    for a0 in range(0, n_out, step):
        a1 = min(n_out, a0 + step)
        lo = O + S * a0 - halo
        x0 = max(0, int(math.floor(lo / S)) * S)
        hi = O + S * (a1 - 1) + halo + 1
        x1 = min(n, int(math.ceil(hi)))
        tiles.append(AxisTile(x0, x1, a0, a1, a0 - x0 // S))
    return tiles


def tiled_forward(
    run: Callable[[Any, LayerInfo], Generator[None, None, np.ndarray]],
    region: Callable[[int, int, int, int], Any],
    size: tuple[int, int],
    info: LayerInfo,
    tile: int | None,
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

    geo = find_layer(_CONTEXT_LAYER) if info.is_global else info
    rows, cols = plan_axis(size[0], geo, tile), plan_axis(size[1], geo, tile)
    h, w = output_size(geo, *size)
    out: np.ndarray | None = None
    for r in rows:
        for c in cols:
            part = yield from run(region(r.start, r.stop, c.start, c.stop), geo)
            part = part[
                0,
                :,
                r.local_start : r.local_start + r.out_stop - r.out_start,
                c.local_start : c.local_start + c.out_stop - c.out_start,
            ]
            if out is None:
                out = np.empty((part.shape[0], h, w), dtype=np.float32)
            out[:, r.out_start : r.out_stop, c.out_start : c.out_stop] = part
    assert out is not None
    if not info.is_global:
        return out
    pooled = out.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
    if info.name == "prob":
        e = np.exp(pooled - pooled.max())
        pooled = (e / e.sum()).astype(np.float32)
    return pooled[:, None, None]


def tile_count(info: LayerInfo, size: tuple[int, int], tile: int | None) -> int:
    """How many tiles :func:`tiled_forward` runs for this layer and network-input size."""
    if tile is None:
        return 1
    geo = find_layer(_CONTEXT_LAYER) if info.is_global else info
    return len(plan_axis(size[0], geo, tile)) * len(plan_axis(size[1], geo, tile))
