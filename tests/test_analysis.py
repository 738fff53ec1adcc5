"""Analysis tools: montage, strongest channels, region and comparison ranking, probe, tables.

Mechanics on synthetic arrays and random weights; the reference workflow's findings (red
channel, edge channel, eye channels) with the real Caffe weights, skipped when they are absent.
"""

from __future__ import annotations

import numpy as np
import pytest

import napari_activations as na
from napari_activations.analysis import grid_shape

# --------------------------------------------------------------------------- montage


@pytest.mark.parametrize(
    "n, expected",
    [
        (64, (8, 8)),
        (48, (6, 8)),
        (16, (4, 4)),
        (1, (1, 1)),
        (3, (1, 3)),
        (7, (2, 4)),
        (1000, (31, 33)),
    ],
)
def test_grid_shape_is_near_square_and_holds_every_channel(n, expected):
    rows, cols = grid_shape(n)
    assert (rows, cols) == expected
    assert rows * cols >= n and rows <= cols


def test_montage_tiles_each_channel_in_order_with_gaps():
    acts = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
    m = na.montage(acts, normalize="none", gap=2, fill=-1)
    assert m.grid == (2, 3)
    assert m.image.shape == (2 * 3 + 2, 3 * 4 + 2 * 2)
    for c in range(5):
        y, x = m.tile_origin(c)
        np.testing.assert_array_equal(m.image[y : y + 3, x : x + 4], acts[c])
    assert m.tile_origin(4) == (5, 6)
    assert np.all(m.image[3:5, :] == -1)  # gap between the rows
    assert np.all(m.image[5:, 12:] == -1)  # the blank sixth tile
    np.testing.assert_array_equal(m.label_positions(), [m.tile_origin(c) for c in range(5)])


def test_montage_lookup_maps_tile_pixels_to_channels_and_gaps_to_none():
    m = na.montage(np.random.default_rng(0).random((48, 5, 7)), gap=1)
    assert m.grid == (6, 8)
    for c in (0, 7, 8, 47):
        y, x = m.tile_origin(c)
        assert m.channel_at(y, x) == c
        assert m.channel_at(y + 4.4, x + 6.2) == c  # napari coordinates are floats
    y, x = m.tile_origin(0)
    assert m.channel_at(y + 5, x) is None  # the gap below tile 0
    assert m.channel_at(-1, 0) is None
    assert m.channel_at(*m.image.shape) is None


def test_montage_normalises_per_channel_or_globally():
    acts = np.stack([np.linspace(0, 1, 12).reshape(3, 4) * s for s in (1, 10, 100)])
    acts[2] += 50
    per = na.montage(acts, normalize="channel", gap=0, grid=(1, 3))
    glob = na.montage(acts, normalize="global", gap=0, grid=(1, 3))
    for c in range(3):
        tile = per.image[:, 4 * c : 4 * c + 4]
        assert tile.min() == 0 and tile.max() == pytest.approx(1)
    assert glob.image.min() == 0 and glob.image.max() == pytest.approx(1)
    assert glob.image[:, :4].max() < 0.01  # the weak channel stays dark


def test_montage_constant_channel_is_blank_not_nan():
    m = na.montage(np.ones((4, 3, 3)), gap=0)
    assert np.all(m.image == 0)


def test_montage_refuses_stacks_and_small_grids():
    with pytest.raises(ValueError, match="one plane"):
        na.montage(np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="fewer than"):
        na.montage(np.zeros((10, 3, 3)), grid=(3, 3))


# --------------------------------------------------------------------------- strongest, probe


def test_strongest_channels_by_max_and_by_mean_differ():
    acts = np.zeros((4, 10, 10), np.float32)
    acts[1, 5, 5] = 100  # one bright spot
    acts[2] += 3  # active everywhere
    assert na.strongest_channels(acts, 2, by="max") == [(1, 100.0), (2, 3.0)]
    assert na.strongest_channels(acts, 1, by="mean") == [(2, 3.0)]
    assert [c for c, _ in na.strongest_channels(acts, None)] == [1, 2, 0, 3]


def test_strongest_channels_reads_lazy_aligned_stacks_like_arrays(random_net):
    image = np.random.default_rng(1).integers(0, 255, (2, 48, 40), dtype=np.uint8)
    lazy = na.activations(random_net, image, "fire2-relu_squeeze1x1", resize=True)
    dense = np.asarray(lazy)
    assert dense.shape == (2, 16, 48, 40)
    for by in ("max", "mean"):
        got = na.strongest_channels(lazy, 16, by=by)
        want = na.strongest_channels(dense, 16, by=by)
        assert [c for c, _ in got] == [c for c, _ in want]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-5)


def test_probe_returns_every_channel_at_a_pixel(random_net):
    image = np.random.default_rng(2).integers(0, 255, (40, 36, 3), dtype=np.uint8)
    acts = na.activations(random_net, image, "conv1", resize=True)
    values = na.probe(acts, 10.4, 20.6)
    # Two float32 interpolations (gather, torch's kernel): equal to rounding of the largest.
    np.testing.assert_allclose(
        values, np.asarray(acts)[:, 10, 21], rtol=1e-6, atol=1e-6 * np.abs(values).max()
    )
    top = na.top_channels(values, 3)
    assert [c for c, _ in top] == list(np.argsort(-values)[:3])
    with pytest.raises(IndexError, match="outside"):
        na.probe(acts, 40, 0)


def test_probe_on_a_stack_needs_the_plane():
    acts = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    np.testing.assert_array_equal(na.probe(acts, 1, 2, plane=(1,)), acts[1, :, 1, 2])
    with pytest.raises(IndexError, match="leading"):
        na.probe(acts, 1, 2)


# --------------------------------------------------------------------------- ranking


def test_rank_by_region_puts_the_channel_that_fires_there_first():
    rng = np.random.default_rng(3)
    acts = rng.random((6, 20, 20)).astype(np.float32) + 1
    region = np.zeros((20, 20), bool)
    region[5:10, 5:10] = True
    acts[4][region] += 5
    acts[2][region] += 1
    rows = na.rank_channels(acts, region=region)
    assert list(rows["channel"][:2]) == [4, 2]
    assert set(rows.dtype.names) >= {"channel", "inside", "outside", "ratio"}
    top = rows[0]
    assert top["inside"] == pytest.approx(acts[4][region].mean(), rel=1e-6)
    assert top["outside"] == pytest.approx(acts[4][~region].mean(), rel=1e-6)
    assert top["ratio"] == pytest.approx(top["inside"] / top["outside"])
    assert len(na.rank_channels(acts, region=region, k=3)) == 3


def test_rank_by_region_with_non_positive_outside_sorts_last_unless_by_difference():
    acts = np.zeros((2, 4, 4), np.float32)
    region = np.zeros((4, 4), bool)
    region[0, 0] = True
    acts[0] = -1
    acts[0][region] = 10  # big difference, but negative outside: no ratio
    acts[1] = 1
    acts[1][region] = 2
    by_ratio = na.rank_channels(acts, region=region)
    assert list(by_ratio["channel"]) == [1, 0] and np.isnan(by_ratio["ratio"][1])
    assert list(na.rank_channels(acts, region=region, sort="difference")["channel"]) == [0, 1]


def test_rank_by_comparison_ranks_the_channel_that_lost_its_response():
    rng = np.random.default_rng(4)
    first = rng.random((5, 16, 16)).astype(np.float32)
    second = first.copy()
    region = np.zeros((16, 16), bool)
    region[2:6, 2:6] = True
    second[3][region] -= 2  # channel 3 loses its response in the region
    second[1][~region] += 4  # channel 1 changes, but elsewhere
    second[0][region] += 3  # channel 0 gains
    rows = na.rank_channels(first, region=region, other=second)
    assert rows["channel"][0] == 3 and rows["change"][0] == pytest.approx(2)
    assert rows["channel"][-1] == 0
    absolute = na.rank_channels(first, region=region, other=second, change="absolute")
    assert list(absolute["channel"][:2]) == [0, 3]
    whole = na.rank_channels(first, other=second, change="absolute")
    assert whole["channel"][0] == 1
    assert set(rows.dtype.names) == {"channel", "first", "second", "change"}


def test_rank_channels_on_lazy_aligned_activations_matches_dense(random_net):
    rng = np.random.default_rng(5)
    a_img = rng.integers(0, 255, (50, 44, 3), dtype=np.uint8)
    b_img = a_img.copy()
    b_img[10:25, 10:25] = 128
    a = na.activations(random_net, a_img, "fire2-relu_squeeze1x1", resize=True)
    b = na.activations(random_net, b_img, "fire2-relu_squeeze1x1", resize=True)
    region = np.zeros((50, 44), bool)
    region[10:25, 10:25] = True
    lazy = na.rank_channels(a, region=region, other=b)
    dense = na.rank_channels(np.asarray(a), region=region, other=np.asarray(b))
    np.testing.assert_array_equal(lazy["channel"], dense["channel"])
    np.testing.assert_allclose(lazy["change"], dense["change"], rtol=1e-5, atol=1e-5)


def test_rank_channels_explains_bad_input():
    acts = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="needs a region"):
        na.rank_channels(acts)
    with pytest.raises(ValueError, match="resize=True"):
        na.rank_channels(acts, region=np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="leave some outside"):
        na.rank_channels(acts, region=np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="same shape"):
        na.rank_channels(acts, other=np.zeros((3, 8, 9)))


def test_difference_of_aligned_activations_stays_lazy_and_exact(random_net):
    rng = np.random.default_rng(6)
    a_img = rng.integers(0, 255, (45, 38), dtype=np.uint8)
    b_img = rng.integers(0, 255, (45, 38), dtype=np.uint8)
    a = na.activations(random_net, a_img, "pool1", resize=True)
    b = na.activations(random_net, b_img, "pool1", resize=True)
    d = na.difference(a, b)
    assert isinstance(d, na.AlignedActivations) and d.shape == a.shape
    np.testing.assert_allclose(np.asarray(d), np.asarray(a) - np.asarray(b), atol=1e-3)
    np.testing.assert_allclose(na.difference(np.ones((2, 3, 3)), np.zeros((2, 3, 3))), 1)
    with pytest.raises(ValueError, match="same shape"):
        na.difference(np.ones((2, 3, 3)), np.ones((2, 3, 4)))


# --------------------------------------------------------------------------- network table


def test_network_table_lists_every_layer_with_its_size_for_the_image(random_net):
    table = na.network_table(227, 227)
    assert list(table["layer"]) == na.layer_names()
    conv1 = table[0]
    assert (conv1["layer"], conv1["height"], conv1["width"], conv1["channels"]) == (
        "conv1",
        113,
        113,
        64,
    )
    assert (conv1["stride"], conv1["receptive_field"]) == (2, 3)
    fire6 = table[list(table["layer"]).index("fire6-relu_squeeze1x1")]
    assert (fire6["height"], fire6["channels"], fire6["stride"]) == (14, 48, 16)
    assert table[-1]["layer"] == "prob" and table[-1]["height"] == 1
    # the table agrees with what the network computes, for a non-square image
    table = na.network_table(61, 90)
    row = table[list(table["layer"]).index("fire3-concat")]
    acts = na.activations(random_net, np.zeros((61, 90), np.uint8), "fire3-concat")
    assert acts.shape == (row["channels"], row["height"], row["width"])


# --------------------------------------------------------------------------- real weights


def _covered_face(face: np.ndarray) -> np.ndarray:
    """The Face sample with its image-left eye filled in (the "one eye covered" sample)."""
    from napari_activations._sample_data import load_sample

    np.testing.assert_array_equal(load_sample("face"), face)
    return load_sample("face_one_eye_covered")


@pytest.mark.real_weights
def test_conv1_channel_22_is_bright_on_red_and_dark_on_green(real_net):
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, :64] = (220, 30, 30)
    image[:, 64:] = (30, 200, 30)
    acts = na.activations(real_net, image, "conv1", resize=True)
    red = np.zeros((64, 128), bool)
    red[:, :64] = True
    red_mean = float(np.asarray(acts[21])[8:-8, 8:56].mean())
    green_mean = float(np.asarray(acts[21])[8:-8, 72:-8].mean())
    assert red_mean > 100 and green_mean < -100  # measured: +300 and -475
    # and the region ranking finds it: the red half's most selective channel is 21
    rows = na.rank_channels(acts, region=red, sort="difference")
    assert rows["channel"][0] == 21


@pytest.mark.real_weights
def test_strongest_conv1_channel_on_the_face_is_an_edge_detector(real_net, face):
    acts = na.activations(real_net, face, "conv1")
    channel, peak = na.strongest_channels(acts, 1, by="max")[0]
    yy, xx = np.mgrid[:64, :64] - 31.5

    def response(angle_deg: float | None) -> tuple[float, float]:
        if angle_deg is None:
            grey = np.full((64, 64), 128, np.uint8)
        else:  # light on one side of a straight edge through the centre, dark on the other
            t = np.deg2rad(angle_deg)
            grey = np.where(np.cos(t) * xx + np.sin(t) * yy < 0, 230, 25).astype(np.uint8)
        a = na.activations(real_net, np.dstack([grey] * 3), "conv1")[channel]
        return float(a.max()), float(a.min())

    angles = range(0, 360, 45)
    peaks = {ang: response(ang)[0] for ang in angles}
    best = max(peaks, key=peaks.get)
    flat = max(abs(v) for v in response(None))
    assert peaks[best] > 0.5 * peak  # as strong as on the face
    assert peaks[best] > 100 * max(flat, 1.0)  # measured: ~530 vs ~0.05
    # the opposite edge (light and dark swapped) drives it as far negative
    assert response(best + 180)[1] < -0.5 * peaks[best]


@pytest.mark.real_weights
def test_eye_channels_lose_their_response_when_the_eye_is_covered(real_net, face):
    covered = _covered_face(face)
    region = np.any(covered != face, axis=-1)  # where the eye was filled in
    assert 50 < region.sum() < 2000
    layer = "fire6-relu_squeeze1x1"
    a = na.activations(real_net, face, layer, resize=True)
    b = na.activations(real_net, covered, layer, resize=True)
    rows = na.rank_channels(a, region=region, other=b)
    # MATLAB's channels 14 and 47
    assert list(rows["channel"][:2]) == [13, 46]
    assert rows["change"][1] > 1.2 * rows["change"][2]  # measured: 540 vs 374 (channel 10)
    # not an accident of the region's outline: a generous box and the whole image agree
    box = np.zeros_like(region)
    ys, xs = np.nonzero(region)
    box[ys.min() - 15 : ys.max() + 16, xs.min() - 15 : xs.max() + 16] = True
    for wider in (box, None):
        assert list(na.rank_channels(a, region=wider, other=b, k=2)["channel"]) == [13, 46]
    # the difference layer shows the same drop
    d = np.asarray(na.difference(a, b)[13])
    assert d[region].mean() == pytest.approx(rows["change"][0], rel=1e-4)
