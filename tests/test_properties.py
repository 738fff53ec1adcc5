"""Property-based tests of the core (hypothesis): for random shapes, dtypes and layers, the
documented shapes and dtype, finite values, relu(pre) == post, and shift equivariance by whole
strides away from the borders (geometry from the layer table: stride, offset, receptive field).
"""

from __future__ import annotations

import numpy as np
import pytest
from _robustness import model_hooks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import napari_activations as na

SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}

DTYPES = ["uint8", "uint16", "int16", "int64", "float16", "float32", "float64", "bool"]
# Every block's output and the two global layers, plus the pre-ReLU layers of two blocks.
LAYER_NAMES = [
    "conv1",
    "relu_conv1",
    "pool1",
    "fire2-squeeze1x1",
    "fire2-concat",
    "fire3-expand3x3",
    "pool3",
    "fire4-relu_expand1x1",
    "fire5-concat",
    "pool5",
    "fire6-squeeze1x1",
    "fire7-concat",
    "fire9-concat",
    "conv10",
    "pool10",
    "prob",
]
PAIRS = [
    (info.name, na.LAYERS[info.index + 1].name)
    for info in na.LAYERS
    if not info.after_relu
    and info.index + 1 < len(na.LAYERS)
    and na.LAYERS[info.index + 1].after_relu
    and na.LAYERS[info.index + 1].module.endswith(("_activation", "features.1", "classifier.2"))
]


def random_image(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        low, high = max(info.min, -(2**40)), min(info.max, 2**40)
        return rng.integers(low, high, shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def test_pairs_cover_every_relu():
    assert len(PAIRS) == 1 + 8 * 3 + 1  # conv1, 8 fires x (squeeze, expand1x1, expand3x3), conv10


@settings(max_examples=40, **SETTINGS)
@given(
    data=st.data(),
    layer=st.sampled_from(LAYER_NAMES),
    dtype=st.sampled_from(DTYPES),
    rgb=st.booleans(),
    lead=st.sampled_from([(), (2,)]),
    resize=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_shape_dtype_and_finite_values(random_net, data, layer, dtype, rgb, lead, resize, seed):
    info = na.find_layer(layer)
    need = na.minimum_input_size(info)
    h = data.draw(st.integers(1, need + 40), label="height")
    w = data.draw(st.integers(1, need + 40), label="width")
    shape = lead + (h, w) + ((3,) if rgb else ())
    image = random_image(np.random.default_rng(seed), shape, dtype)
    before = image.copy()
    expected_hw = na.output_size(info, h, w)
    if expected_hw == (0, 0):
        with pytest.raises(na.ImageError, match="too small"):
            na.activations(random_net, image, layer, rgb=rgb, resize=resize)
        return
    out = na.activations(random_net, image, layer, rgb=rgb, resize=resize)
    spatial = (h, w) if resize else expected_hw
    assert out.shape == lead + (info.channels,) + spatial
    assert out.dtype == np.float32
    values = np.asarray(out)
    assert values.dtype == np.float32 and np.isfinite(values).all()
    if info.after_relu:
        assert values.min() >= 0
    if layer == "prob":
        np.testing.assert_allclose(values.sum(axis=-3), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(image, before)  # the input is never written to
    assert model_hooks(random_net) == []


@settings(max_examples=15, **SETTINGS)
@given(
    pair=st.sampled_from(PAIRS),
    h=st.integers(17, 60),
    w=st.integers(17, 60),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_relu_of_pre_is_post(random_net, pair, h, w, dtype, seed):
    pre_name, post_name = pair
    image = random_image(np.random.default_rng(seed), (h, w), dtype)
    pre = na.activations(random_net, image, pre_name)
    post = na.activations(random_net, image, post_name)
    assert (pre < 0).any()  # a pre-ReLU layer is really before the ReLU
    np.testing.assert_array_equal(np.maximum(pre, 0), post)


SHIFT_LAYERS = [
    info.name for info in na.LAYERS if not info.is_global and info.receptive_field <= 47
]


@settings(max_examples=25, **SETTINGS)
@given(data=st.data(), layer=st.sampled_from(SHIFT_LAYERS), seed=st.integers(0, 2**32 - 1))
def test_shifting_by_whole_strides_shifts_the_activations(random_net, data, layer, seed):
    """Cropping k*S rows and j*S columns off the top left moves every activation pixel whose
    receptive field lies inside both images by exactly (k, j) pixels."""
    info = na.find_layer(layer)
    S, O, rf = info.stride, int(info.offset), info.receptive_field
    k = data.draw(st.integers(0, 3), label="row shift (strides)")
    j = data.draw(st.integers(0, 3), label="column shift (strides)")
    h = data.draw(st.integers(k * S + rf + S, k * S + rf + 4 * S), label="height")
    w = data.draw(st.integers(j * S + rf + S, j * S + rf + 4 * S), label="width")
    image = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    crop = image[k * S :, j * S :]
    full = na.activations(random_net, image, layer)
    part = na.activations(random_net, crop, layer)
    halo = (rf - 1) // 2

    def inside(n_act: int, n_img: int) -> np.ndarray:
        centres = O + S * np.arange(n_act)
        return np.flatnonzero((centres - halo >= 0) & (centres + halo <= n_img - 1))

    rows, cols = inside(part.shape[1], crop.shape[0]), inside(part.shape[2], crop.shape[1])
    assert rows.size and cols.size
    np.testing.assert_allclose(
        part[:, rows][:, :, cols], full[:, rows + k][:, :, cols + j], rtol=1e-4, atol=1e-4
    )
    # ... and through the alignment, on the image grid, by k*S and j*S pixels.
    part_img = na.activations(random_net, crop, layer, resize=True)
    full_img = na.activations(random_net, image, layer, resize=True)
    y = O + S * rows
    x = O + S * cols
    np.testing.assert_allclose(
        part_img[:, y][:, :, x], full_img[:, y + k * S][:, :, x + j * S], rtol=1e-4, atol=1e-4
    )


@st.composite
def index_for(draw, n: int):
    """One index along an axis of ``n``: everything, an int, a slice or an index array."""
    kind = draw(st.sampled_from(["all", "int", "slice", "array"]))
    if kind == "all":
        return slice(None)
    if kind == "int":
        return draw(st.integers(-n, n - 1))
    if kind == "slice":
        return slice(
            draw(st.integers(0, n - 1)), draw(st.integers(0, n)), draw(st.sampled_from([1, 2, 3]))
        )
    return np.array(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2)))


@pytest.fixture(scope="module")
def aligned_stack(random_net):
    image = np.random.default_rng(8).random((2, 30, 34)).astype(np.float32)
    aligned = na.activations(random_net, image, "pool1", resize=True)
    return aligned, np.asarray(aligned)


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_indexing_the_lazy_result_equals_indexing_the_array(aligned_stack, data):
    """Any mix of ints, slices and index arrays gives what numpy gives on the full array."""
    aligned, full = aligned_stack
    key = tuple(data.draw(index_for(n)) for n in full.shape)
    key = key[: data.draw(st.integers(1, full.ndim))]
    try:
        expected = full[key]
    except IndexError:
        with pytest.raises(IndexError):
            aligned[key]
        return
    np.testing.assert_allclose(aligned[key], expected, rtol=1e-6, atol=1e-6)


def _every_indexing_form(shape):
    """Keys of every form numpy's indexing has, for a 4-D ``shape`` (T, C, H, W)."""
    T, C, H, W = shape
    two = np.array([1, 2])
    return [
        0,
        -1,
        np.int64(1),
        slice(None),
        Ellipsis,
        (),
        (Ellipsis, 3),
        (0, Ellipsis, 2),
        (0, 1),
        (0, 1, 2),
        (0, 1, 2, 3),
        (-1, -1, -H, -W),
        (slice(None, None, -1),),
        (0, slice(1, None, 2), slice(None, None, -3), slice(5, 2, -1)),
        (0, slice(None), two),
        (slice(None), two, slice(None), 3),  # int & array, apart
        (0, two),
        (0, 0, two),
        (0, 0, two, two),
        (slice(None), two, two),  # two arrays
        (slice(None), slice(None), two, two),
        (0, slice(None), two, [3, 4]),
        (Ellipsis, two, slice(None)),
        (Ellipsis, [1], [2, 3]),  # broadcasting arrays
        (0, slice(None), np.array([[1, 2], [3, 4]]), np.array([[5], [6]])),
        (0, 0, np.array([], dtype=np.intp)),
        (0, 0, np.array([], dtype=np.intp), 3),
        (0, 0, np.arange(H) % 3 == 0),
        (0, np.arange(C) < 2, 3),  # boolean masks
        (0, 0, np.arange(H) % 3 == 0, np.arange(W) % 3 == 0)[:3],
        (0, 0, np.array(3)),
        (0, np.array(1), np.array(2), 4),
        (np.array(1),),  # 0-d arrays
        (None,),
        (0, None, 1),
        (Ellipsis, None),
        (0, slice(None), None, 2, two),  # newaxis
        (0, 0, [True] * H),
        (0, 0, slice(2, 2)),
        (slice(0, 0),),
        (0, [0, -1], 0, [0, -1]),
    ]


@pytest.mark.parametrize("case", range(len(_every_indexing_form((2, 5, 30, 34)))))
def test_every_indexing_form_equals_numpy(aligned_stack, case):
    """Each indexing form numpy has (ints, slices with steps, Ellipsis, newaxis, integer and
    boolean arrays, apart or together, broadcast, 0-d, empty) gives numpy's result and shape."""
    aligned, full = aligned_stack
    key = _every_indexing_form(full.shape)[case]
    expected = full[key]
    got = aligned[key]
    assert np.shape(got) == expected.shape, (key, np.shape(got), expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@st.composite
def rich_index_for(draw, n: int):
    """Like :func:`index_for`, with negative steps, lists, masks, 0-d and 2-D index arrays."""
    kind = draw(st.sampled_from(["all", "int", "slice", "array", "list", "mask", "0d", "2d"]))
    if kind == "slice":
        return slice(
            draw(st.none() | st.integers(-n, n)),
            draw(st.none() | st.integers(-n, n)),
            draw(st.sampled_from([None, 1, 2, -1, -3])),
        )
    if kind in ("all", "int", "array"):
        return draw(index_for(n))
    if kind == "list":
        return draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=3))
    if kind == "mask":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if kind == "0d":
        return np.array(draw(st.integers(0, n - 1)))
    return np.array(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2))).reshape(2, 1)


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_rich_indexing_of_the_lazy_result_equals_numpy(aligned_stack, data):
    """Hypothesis-drawn keys mixing every form, with an Ellipsis or newaxis put in at times."""
    aligned, full = aligned_stack
    key = [data.draw(rich_index_for(n)) for n in full.shape]
    key = key[: data.draw(st.integers(1, full.ndim))]
    extra = data.draw(st.sampled_from([None, "ellipsis", "newaxis"]))
    if extra is not None:
        at = data.draw(st.integers(0, len(key)))
        if extra == "ellipsis":
            key = key[:at] + [Ellipsis] + key[at + 1 :]
        else:
            key.insert(at, None)
    key = tuple(key)
    try:
        expected = full[key]
    except IndexError:
        with pytest.raises(IndexError):
            aligned[key]
        return
    got = aligned[key]
    assert np.shape(got) == expected.shape, key
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
