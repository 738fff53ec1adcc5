"""The bad-input corpus: whatever layer a user points the plugin at, through the API and the widget.

Each case either gives the correct result (checked against an independent rewrite of the
documented preprocessing) or a clear refusal: a specific exception type whose message says what
is wrong and what to do; in the widget, a plain error notification (no traceback), no new layer,
and the widget back to ready. Either way the source layer is bit-identical afterwards (data
bytes, layout and every property) and the viewer still responds.

Random weights throughout: these tests are about handling, not about what the network learned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import pytest
from _robustness import (
    assert_error_notified,
    assert_no_traceback,
    assert_viewer_responds,
    assert_widget_ready,
    data_digest,
    layer_fingerprint,
    oracle_input,
    record_notifications,
)

import napari_activations as na
from napari_activations._napari_layers import LayerInputError

RNG = np.random.default_rng(6)
GRAY = RNG.random((40, 50)).astype(np.float32)
TOO_SMALL = ("too small", "at least")
UNTILED = "1G"  # references are computed whole, whatever budget a case sets


@dataclass(frozen=True)
class Case:
    """One bad input.

    ``make()`` gives ``(layer kind, data, add_<kind> keyword arguments)``; kind ``None`` is an
    empty viewer. ``error`` is ``(exception type of the API, words its message and the
    widget's notification contain)``; ``None`` means a correct result is expected.
    ``napari_refuses``: napari cannot hold this data in a layer, so only the array API sees it.
    """

    id: str
    make: Callable[[], tuple[str | None, Any, dict]]
    layer: str = "conv1"
    error: tuple[type[Exception], tuple[str, ...]] | None = None
    napari_refuses: bool = False
    widget_words: tuple[str, ...] | None = None  # the widget's message, where it differs
    array_error: tuple[type[Exception], tuple[str, ...]] | None = None  # na.activations's
    env: dict = field(default_factory=dict)


def image(data: Any, **kwargs: Any) -> Callable[[], tuple[str, Any, dict]]:
    return lambda: ("image", data() if callable(data) else data, kwargs)


def huge() -> np.ndarray:
    # 40000 x 40000 pixels that take one byte: conv1 would need ~96 GiB of activations.
    return np.broadcast_to(np.zeros(1, np.uint8), (40000, 40000))


CASES = [
    Case(
        "labels",
        lambda: ("labels", np.zeros((40, 40), np.uint8), {}),
        error=(LayerInputError, ("Labels layer", "Image layer")),
        widget_words=("no image",),
    ),
    Case(
        "points",
        lambda: ("points", np.array([[1.0, 1.0], [20.0, 30.0]]), {}),
        error=(LayerInputError, ("Points layer", "Image layer")),
        widget_words=("no image",),
    ),
    Case(
        "shapes",
        lambda: ("shapes", [np.array([[0.0, 0.0], [10, 10], [0, 10]])], {"shape_type": "polygon"}),
        error=(LayerInputError, ("Shapes layer", "Image layer")),
        widget_words=("no image",),
    ),
    Case(
        "surface",
        lambda: (
            "surface",
            (np.array([[0.0, 0], [0, 10], [10, 0]]), np.array([[0, 1, 2]]), np.ones(3)),
            {},
        ),
        error=(LayerInputError, ("Surface layer", "Image layer")),
        widget_words=("no image",),
    ),
    Case(
        "vectors",
        lambda: ("vectors", np.zeros((2, 2, 2)), {}),
        error=(LayerInputError, ("Vectors layer", "Image layer")),
        widget_words=("no image",),
    ),
    Case(
        "empty viewer",
        lambda: (None, None, {}),
        error=(LayerInputError, ("no image layer", "open an image")),
        widget_words=("no image", "open"),
    ),
    Case(
        "zero-size",
        image(np.zeros((0, 40), np.float32)),
        napari_refuses=True,
        error=(na.ImageError, ("empty", "(0, 40)")),
    ),
    Case("1x1", image(np.ones((1, 1), np.float32)), error=(na.ImageError, TOO_SMALL + ("3x3",))),
    Case(
        "smaller than the receptive field",
        image(RNG.random((12, 12))),
        layer="fire9-concat",
        error=(na.ImageError, TOO_SMALL + ("fire9-concat", "17x17", "earlier layer")),
    ),
    Case("4D stack", image(RNG.random((2, 2, 33, 35)).astype(np.float32))),
    Case("5D stack", image(RNG.random((2, 1, 2, 31, 33)))),
    Case(
        "2 channels last",
        image(RNG.random((40, 40, 2))),
        error=(na.ImageError, TOO_SMALL + ("40x2", "channels")),
    ),
    Case("2 channels first", image(RNG.random((2, 40, 40)))),
    Case("4 channels, not RGBA", image(RNG.random((36, 36, 4)), rgb=False)),
    Case("RGBA", image(RNG.integers(0, 256, (40, 44, 4), dtype=np.uint8), rgb=True)),
    Case(
        "complex",
        image(GRAY.astype(np.complex64)),
        napari_refuses=True,
        error=(na.ImageError, ("complex", "np.abs")),
    ),
    Case("bool", image(GRAY > 0.5)),
    Case(
        "int64 extremes",
        image(np.where(GRAY > 0.5, np.iinfo(np.int64).max, np.iinfo(np.int64).min)),
    ),
    Case(
        "uint64 high", image((GRAY > 0.5).astype(np.uint64) * np.uint64(2**62) + np.uint64(2**63))
    ),
    Case("uint16 tiny range", image((1000 + (GRAY > 0.5)).astype(np.uint16))),
    Case("float NaN", image(np.where(GRAY > 0.8, np.nan, GRAY))),
    Case("float inf", image(np.where(GRAY > 0.8, np.inf, np.where(GRAY < 0.2, -np.inf, GRAY)))),
    Case(
        "all NaN",
        image(np.full((40, 40), np.nan, np.float32)),  # napari: limits (0, 1)
        array_error=(na.ImageError, ("no finite values", "intensity_range", "nan_to_num")),
    ),
    Case("constant", image(np.full((40, 40), 7.0))),
    Case("float16", image(GRAY.astype(np.float16))),
    Case("big-endian", image(GRAY.astype(">f4"))),
    Case("big-endian uint16", image((GRAY * 60000).astype(">u2"))),
    Case("non-contiguous", image(RNG.random((80, 100)).astype(np.float32)[::2, ::2])),
    Case("negative strides", image(GRAY[::-1, ::-1])),
    Case("Fortran order", image(np.asfortranarray(GRAY))),
    Case("read-only", image(lambda: _read_only(GRAY))),
    Case("dask", image(da.from_array(GRAY, chunks=(20, 25)))),
    Case("dask stack", image(da.from_array(RNG.random((3, 36, 36)), chunks=(1, 36, 18)))),
    # Multiscale layers compute on one level (tests/test_microscopy.py); too small a level
    # for the network layer is said plainly.
    Case(
        "multiscale too small",
        lambda: ("image", [RNG.random((40, 2)), RNG.random((20, 1))], {"multiscale": True}),
        error=(na.ImageError, ("too small", "conv1")),
        array_error=(na.ImageError, ("list of arrays", "image[0]")),
    ),
    Case("scale and translate", image(GRAY, scale=(0.5, 2.0), translate=(10.0, -5.0))),
    Case("rotation and shear", image(GRAY, rotate=30, shear=[0.3], scale=(2.0, 0.5))),
    Case("affine", image(GRAY, affine=np.array([[1.0, 0.2, 3], [0.1, 2.0, -4], [0, 0, 1]]))),
    Case(
        "far beyond the memory budget",
        image(RNG.random((120, 130)).astype(np.float32)),
        env={"NAPARI_ACTIVATIONS_MEMORY_BUDGET": "1M"},
    ),
    Case(
        "beyond the machine's memory",
        image(huge, contrast_limits=(0, 255)),
        error=(na.ImageError, ("GiB", "memory", "input_scale")),
    ),
]


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def add_layer(viewer: Any, kind: str, data: Any, kwargs: dict) -> Any:
    return getattr(viewer, f"add_{kind}")(data, name="source", **kwargs)


# -- checking a result ------------------------------------------------------------------------


def spatial_shape(source: Any) -> tuple[int, ...]:
    shape = tuple(source.data.shape)
    return shape[:-1] if source.rgb else shape


def check_result(net: na.Network, source: Any, result: Any, layer: str) -> None:
    """The activation layer over ``source`` is right: shape, geometry and values."""
    info = na.find_layer(layer)
    assert result.data.shape == (info.channels,) + spatial_shape(source)
    assert result.data.dtype == np.float32
    # The world extents agree: the channel axis is extra, the rest follows the source.
    np.testing.assert_allclose(
        np.asarray(result.extent.world)[:, 1:],
        np.asarray(source.extent.world),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(result.rotate[1:, 1:], source.rotate)
    native = np.asarray(result.data.native)
    assert np.isfinite(native).all()
    # The values: the documented preprocessing (napari's contrast limits as the intensity
    # range), rewritten here, then the network on a plain float image in [0, 1].
    plain = oracle_input(source.data, tuple(source.contrast_limits), bool(source.rgb))
    expected = na.activations(
        net, plain, layer, intensity_range=(0.0, 1.0), rgb=bool(source.rgb), memory_budget=UNTILED
    )
    np.testing.assert_allclose(native, expected, rtol=1e-4, atol=1e-4)


def check_array_result(net: na.Network, data: Any, out: Any, layer: str) -> None:
    """``na.activations(..., resize=True)`` on the bare array is right."""
    info = na.find_layer(layer)
    colour = na.is_rgb(tuple(data.shape))
    spatial = tuple(data.shape)[:-1] if colour else tuple(data.shape)
    assert out.shape == spatial[:-2] + (info.channels,) + spatial[-2:]
    assert out.dtype == np.float32
    native = np.asarray(out.native)
    assert np.isfinite(native).all()
    expected = na.activations(
        net,
        oracle_input(data, None, colour),
        layer,
        intensity_range=(0.0, 1.0),
        rgb=colour,
        memory_budget=UNTILED,
    )
    np.testing.assert_allclose(native, expected, rtol=1e-4, atol=1e-4)


def assert_clear_error(exc: BaseException, words: tuple[str, ...]) -> None:
    message = str(exc)
    missing = [w for w in words if w.lower() not in message.lower()]
    assert not missing, (missing, message)


# -- through the API ----------------------------------------------------------------------------


@pytest.fixture
def case_env(request, monkeypatch):
    for key, value in request.param.env.items():
        monkeypatch.setenv(key, value)
    return request.param


@pytest.mark.parametrize("case_env", CASES, ids=[c.id for c in CASES], indirect=True)
def test_api(case_env, random_net):
    """``na.show_activations`` on a viewer holding the case, and ``na.activations`` on its data."""
    from napari.components import ViewerModel

    case = case_env
    kind, data, kwargs = case.make()
    viewer = ViewerModel()
    if case.napari_refuses:
        with pytest.raises(Exception):  # noqa: B017 - napari's own refusal, whatever it is
            add_layer(viewer, kind, data, kwargs)
        source = None
    elif kind is not None:
        source = add_layer(viewer, kind, data, kwargs)
    else:
        source = None
    before = layer_fingerprint(source) if source is not None else None
    n_layers = len(viewer.layers)

    if source is not None or kind is None:
        target = source if source is not None else "Face"
        if case.error is None:
            result = na.show_activations(viewer, target, case.layer, network=random_net)
            check_result(random_net, source, result, case.layer)
            assert len(viewer.layers) == n_layers + 1
        else:
            error_type, words = case.error
            with pytest.raises(error_type) as err:
                na.show_activations(viewer, target, case.layer, network=random_net)
            assert_clear_error(err.value, words)
            assert len(viewer.layers) == n_layers
        if source is not None:
            assert layer_fingerprint(source) == before
        assert_viewer_responds(viewer)

    if kind == "image" and not (case.error and case.error[0] is LayerInputError):
        snapshot = data_digest(data)
        array_error = case.array_error or case.error
        if array_error is None:
            out = na.activations(random_net, data, case.layer, resize=True)
            check_array_result(random_net, data, out, case.layer)
        else:
            error_type, words = array_error
            with pytest.raises(error_type) as err:
                na.activations(random_net, data, case.layer, resize=True)
            assert_clear_error(err.value, words)
        assert data_digest(data) == snapshot


# -- through the widget ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_gui(random_net, qapp):
    """One viewer with the dock widget for the whole corpus: each case also checks that the
    cases before it left the viewer and widget usable. Emptied between cases."""
    import napari

    from napari_activations._widget import ActivationsWidget

    viewer = napari.Viewer(show=False)
    widget = ActivationsWidget(viewer, network=random_net)
    viewer.window.add_dock_widget(widget)
    yield viewer, widget
    viewer.close()


@pytest.mark.gui
@pytest.mark.parametrize(
    "case_env",
    [c for c in CASES if not c.napari_refuses],
    ids=[c.id for c in CASES if not c.napari_refuses],
    indirect=True,
)
def test_widget(case_env, random_net, shared_gui, qtbot, monkeypatch):
    """The same cases through the dock widget: a result, or a notification and a ready widget."""
    case = case_env
    viewer, widget = shared_gui
    viewer.layers.clear()
    notifications = record_notifications(monkeypatch)
    kind, data, kwargs = case.make()
    source = add_layer(viewer, kind, data, kwargs) if kind is not None else None
    if source is not None and kind != "image":
        assert widget.image_combo.count() == 0  # only Image layers are offered
    if kind == "image":
        assert widget.selected_image() is source
    before = layer_fingerprint(source) if source is not None else None
    n_layers = len(viewer.layers)

    widget.set_network_layer(case.layer)
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    qtbot.wait(10)  # let queued signals land

    if case.error is None:
        result = viewer.layers[f"source: {case.layer}"]
        check_result(random_net, source, result, case.layer)
        assert len(viewer.layers) == n_layers + 1
        assert_no_traceback(notifications)
    else:
        assert_error_notified(notifications, *(case.widget_words or case.error[1]))
        assert len(viewer.layers) == n_layers
    assert_widget_ready(widget)
    if source is not None:
        assert layer_fingerprint(source) == before
    assert_viewer_responds(viewer, qtbot)


# -- inputs only the array API can be given -----------------------------------------------------


@pytest.mark.parametrize(
    "data, kwargs, words",
    [
        ([np.zeros((64, 64)), np.zeros((32, 32))], {}, ("different shapes", "pyramid", "image[0]")),
        (np.zeros(40), {}, ("at least two axes", "(40,)")),
        (np.full((40, 40), "a"), {}, ("<U1", "pass numbers")),
        (np.array([[object()] * 4] * 4), {}, ("object", "pass numbers")),
        (np.zeros((40, 40, 2)), {"rgb": True}, ("rgb=True", "3 (RGB) or 4 (RGBA)")),
        (np.zeros((40, 40)), {"input_scale": float("nan")}, ("input_scale", "positive")),
        (np.zeros((40, 40)), {"intensity_range": (1.0, 1.0)}, ("intensity_range", "high > low")),
    ],
    ids=[
        "pyramid list",
        "1-D",
        "strings",
        "objects",
        "rgb=True on 2 channels",
        "NaN scale",
        "empty intensity range",
    ],
)
def test_array_api_refusals(random_net, data, kwargs, words):
    digest = data_digest(data)
    with pytest.raises(na.ImageError) as err:
        na.activations(random_net, data, "conv1", **kwargs)
    assert_clear_error(err.value, words)
    assert data_digest(data) == digest


def test_nested_python_lists_are_images(random_net):
    rows = np.random.default_rng(9).random((20, 24)).tolist()
    out = na.activations(random_net, rows, "conv1")
    np.testing.assert_allclose(out, na.activations(random_net, np.asarray(rows), "conv1"))
