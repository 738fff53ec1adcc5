"""The whole-plane kernel (``align_periodic``) gives the pixel-by-pixel gather's numbers for any
integer stride and offset, image size and way of cutting the work into pieces."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activations import alignment
from napari_activations.alignment import align, align_periodic
from napari_activations.layers import LayerInfo


def _grid(S: int, O: int) -> LayerInfo:
    return LayerInfo("test", "test", 1, S, float(O), 2 * S + 1, False, "test")


def _check(native: np.ndarray, S: int, O: int, HW: tuple[int, int]) -> np.ndarray:
    """``align_periodic`` against the gather (``rows=`` given keeps :func:`align` off the
    whole-plane kernel), and exactly ``native`` on the grid points inside the image."""
    info = _grid(S, O)
    got = align_periodic(native, info, HW)
    want = align(native, info, HW, rows=np.arange(HW[0]))
    assert got.shape == want.shape == native.shape[:-2] + HW
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(
        got, want, rtol=0, atol=1e-6 * np.abs(native).max(), err_msg=str((S, O, HW))
    )
    h, w = native.shape[-2:]
    i = np.arange(h)[(O + S * np.arange(h) >= 0) & (O + S * np.arange(h) < HW[0])]
    j = np.arange(w)[(O + S * np.arange(w) >= 0) & (O + S * np.arange(w) < HW[1])]
    on_grid = got[..., O + S * i[:, None], O + S * j[None, :]]
    np.testing.assert_array_equal(on_grid, native[..., i[:, None], j[None, :]].astype(np.float32))
    return got


@pytest.mark.parametrize("S", [1, 2, 3, 4, 8, 16, 32])
def test_every_offset_of_a_stride(S):
    """Offsets from before the first pixel to past a whole period, on odd image sizes whose
    far edges end between activation pixels, beyond the last one, or before it."""
    rng = np.random.default_rng(S)
    for O in sorted({0, 1, S - 1, S, S + 1, 2 * S + 3}):
        for H, W in [(2 * S + 5, 3 * S + 2), (O + 1, O + S + 1), (4 * S + O + 1, O + 2)]:
            h = max(2, (H - 1 - O) // S + 1)
            w = max(2, (W - 1 - O) // S + 1)
            for dh, dw in [(0, 0), (1, 2), (-1, 0)]:
                native = rng.normal(size=(3, max(2, h + dh), max(2, w + dw))).astype(np.float32)
                _check(native, S, O, (H, W))


def test_random_geometries():
    """A property-style loop: random stride, offset (negative ones too), activation and image
    sizes, one-pixel-wide images included."""
    rng = np.random.default_rng(12)
    for _ in range(300):
        S = int(rng.choice([1, 2, 3, 4, 5, 8, 16, 32]))
        O = int(rng.integers(-S, 3 * S + 1))
        H, W = (int(v) for v in rng.integers(1, 3 * S + 12, size=2))
        h, w = (int(v) for v in rng.integers(2, 9, size=2))
        native = rng.normal(size=(int(rng.integers(1, 4)), h, w)).astype(np.float32)
        _check(native, S, O, (H, W))


@pytest.mark.parametrize("chunk_bytes", [1, 600, 1 << 20])
def test_pieces_do_not_change_the_result(monkeypatch, chunk_bytes):
    """Bands of one row block, bands of a few, and groups of whole channels."""
    monkeypatch.setattr(alignment, "_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(3)
    for S, O, HW in [(2, 1, (61, 40)), (4, 3, (37, 50)), (16, 15, (70, 33))]:
        h, w = (HW[0] - 1 - O) // S + 1, (HW[1] - 1 - O) // S + 1
        _check(rng.normal(size=(2, 5, h, w)).astype(np.float32), S, O, HW)


def test_float64_in_float32_out_through_align():
    """``align`` sends whole planes on an integer grid here, float64 or not."""
    info = _grid(4, 3)
    native = np.random.default_rng(4).normal(size=(2, 9, 7))
    got = align(native, info, (38, 30))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, align_periodic(native.astype(np.float32), info, (38, 30)))
    _check(native, 4, 3, (38, 30))


def test_a_one_hot_pixel_becomes_the_bilinear_tent_over_its_input_pixel():
    """The expected numbers written out: pixel (2, 1) of a stride-4, offset-3 map sits over
    input pixel (11, 7) and falls off linearly to zero 4 pixels away."""
    native = np.zeros((5, 4), dtype=np.float32)
    native[2, 1] = 1.0
    got = align_periodic(native, _grid(4, 3), (20, 16))
    tent = np.array([0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0], dtype=np.float32)
    want = np.zeros((20, 16), dtype=np.float32)
    want[7:16, 3:12] = tent[:, None] * tent[None, :]
    np.testing.assert_allclose(got, want, atol=1e-7)
