"""Microscopy data: the border where zero padding shows, stacks' contrast, channel layers as
R, G, B, dark or saturated input, and multiscale (pyramid) layers.

Random weights wherever the meaning does not matter; the border stripe that wins "strongest"
is a property of the trained weights, so those tests use them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import napari_activations as na
from napari_activations import alignment
from napari_activations._napari_layers import (
    METADATA_KEY,
    ChannelRanges,
    ChannelsAsRGB,
    LayerInputError,
    choose_level,
    exposure_warning,
    show_activations,
    starting_channel,
)
from napari_activations.alignment import AlignedActivations, interior
from napari_activations.compute import LazyNative
from napari_activations.layers import find_layer

WIDGET = ("napari-activations", "SqueezeNet activations")
BORDER_CHANNEL = 208  # fire5-concat's channel that answers the zero padding (Caffe weights)


def nuclei(size: int = 512, n: int = 80, seed: int = 0) -> np.ndarray:
    """``(size, size)`` uint16: dim, soft-edged round nuclei on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.full((size, size), 20.0, np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        radius, brightness = rng.uniform(8, 14), rng.uniform(100, 400)
        d = np.clip((np.hypot(yy - cy, xx - cx) - radius) * 0.5, -50, 50)
        img += brightness / (1 + np.exp(d))
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


# -- the border ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["conv1", "fire2-concat", "fire5-concat", "fire6-squeeze1x1", "fire9-concat"]
)
def test_interior_is_exactly_where_a_blank_image_gives_constant_activations(random_net, name):
    # Away from the padding, a constant image gives each channel one constant value; within
    # half a receptive field of the edge the zero padding shows. interior() must be that line.
    info = find_layer(name)
    image = np.full((300, 260), 0.3, dtype=np.float32)
    native = na.activations(random_net, image, info, intensity_range=(0, 1))
    rows, cols = interior(info, native.shape[-2], 300), interior(info, native.shape[-1], 260)
    inside = native[:, rows, cols]
    np.testing.assert_allclose(
        inside, inside[:, :1, :1] + np.zeros_like(inside), rtol=1e-4, atol=1e-4
    )
    if rows.start > 0:  # one pixel further out the padding shows in some channel
        edge = native[:, rows.start - 1, cols]
        assert np.abs(edge - inside[:, :1, 0]).max() > 1e-3
    else:
        assert name == "conv1" and (rows, cols) == (
            slice(0, native.shape[-2]),
            slice(0, native.shape[-1]),
        )


def test_interior_in_image_pixels_is_half_the_receptive_field():
    info = find_layer("fire5-concat")  # S 8, O 7, RF 63: 31 image pixels either side
    acts = AlignedActivations(np.zeros((256, 63, 63), np.float32), info, (512, 512))
    rows, cols = acts.image_interior()
    assert rows.start == (info.receptive_field - 1) // 2 == 31
    assert rows.stop == 512 - 31 - 1  # last inside centre: O + 8*59 = 479 ... up to 480
    assert acts.native_interior() == (slice(3, 60), slice(3, 60))
    # An image too small to have an inside keeps every pixel rather than none.
    tiny = AlignedActivations(np.zeros((256, 6, 6), np.float32), info, (60, 60))
    assert tiny.native_interior() == (slice(0, 6), slice(0, 6))


@pytest.fixture(scope="module")
def fire5_on_images(real_net):
    out = {}
    for name, img in [("nuclei", nuclei()), ("blank", np.zeros((512, 512), np.uint16))]:
        limits = (float(img.min()), float(img.max())) if img.max() else (0.0, 1.0)
        out[name] = na.activations(
            real_net, img, "fire5-concat", resize=True, intensity_range=limits
        )
    return out


@pytest.mark.real_weights
@pytest.mark.parametrize("image", ["nuclei", "blank"])
def test_the_border_stripe_channel_no_longer_wins(fire5_on_images, image):
    acts = fire5_on_images[image]
    stripe = np.asarray(acts[BORDER_CHANNEL])
    assert stripe[0].mean() > 10 * max(stripe[64:-64, 64:-64].mean(), 1.0)  # a top-edge stripe
    # Counting the border, the padding wins (as before); by default it does not.
    assert na.strongest_channels(acts, 1, include_border=True)[0][0] == BORDER_CHANNEL
    assert na.strongest_channels(acts.native, 1, include_border=True)[0][0] == BORDER_CHANNEL
    best = na.strongest_channels(acts, 1)[0][0]
    assert best != BORDER_CHANNEL
    ranges = ChannelRanges(acts)
    assert starting_channel(ranges) == best
    assert starting_channel(ChannelRanges(acts, include_border=True)) == BORDER_CHANNEL
    # Native activations with their layer named give the same answer.
    assert na.strongest_channels(acts.native, 1, layer="fire5-concat")[0][0] == best


@pytest.mark.gui
@pytest.mark.real_weights
def test_widgets_leave_the_border_out_unless_asked(make_napari_viewer, qtbot, real_net):
    from napari_activations._analysis_widget import AnalysisWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((512, 512), np.uint16), name="Blank")
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.set_network(real_net)
    widget.set_network_layer("fire5-concat")
    assert not widget.border_check.isChecked()
    starts = []
    for count_border in (False, True):
        widget.border_check.setChecked(count_border)
        widget.run()
        qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
        layer = viewer.layers["Blank: fire5-concat"]
        assert layer.metadata[METADATA_KEY]["include_border"] is count_border
        starts.append(int(viewer.dims.current_step[0]))
        if not count_border:
            analysis = AnalysisWidget(viewer, network=real_net)
            analysis.find_strongest()
            assert analysis.channels_tab.strongest[0][0] == starts[0] != BORDER_CHANNEL
            analysis.border_check.setChecked(True)
            analysis.find_strongest()
            assert analysis.channels_tab.strongest[0][0] == BORDER_CHANNEL
        viewer.layers.remove(layer)
    assert starts[1] == BORDER_CHANNEL


@pytest.mark.real_weights
def test_region_ranking_leaves_the_border_out(fire5_on_images):
    acts = fire5_on_images["blank"]
    top = np.zeros((512, 512), bool)
    top[:40] = True  # a region along the top edge of a blank image: only padding is there
    with pytest.raises(ValueError, match="zero padding"):
        na.rank_channels(acts, region=_band(0, 20))
    rows = na.rank_channels(acts, region=top, include_border=True, sort="difference")
    assert rows["channel"][0] == BORDER_CHANNEL  # counting the border, the stripe "is" there
    rows = na.rank_channels(acts, region=top, sort="difference")
    assert rows["channel"][0] != BORDER_CHANNEL
    assert abs(rows["difference"]).max() < 1e-3  # a blank image inside: nothing to rank


def _band(y0: int, y1: int) -> np.ndarray:
    mask = np.zeros((512, 512), bool)
    mask[y0:y1] = True
    return mask


# -- stacks -------------------------------------------------------------------------------


def _stack(planes: int = 12, size: int = 64) -> np.ndarray:
    """A stack whose contrast grows plane by plane: plane 0 is dim and flat."""
    rng = np.random.default_rng(3)
    base = rng.random((size, size)).astype(np.float32)
    return np.stack([base * (0.1 + 0.9 * (z / (planes - 1)) ** 2) for z in range(planes)])


def test_stack_contrast_samples_a_few_planes_and_never_the_whole_stack(random_net):
    stack = _stack(planes=20)
    acts = na.activations(random_net, stack, "relu_conv1", resize=True, intensity_range=(0, 1))
    lazy = acts.native
    assert isinstance(lazy, LazyNative) and lazy.forward_passes == 1
    ranges = ChannelRanges(acts)
    ranges.plane((0,))
    drain(ranges.sample(5))
    assert lazy.forward_passes == 5  # the first plane was computed already
    assert ranges.planes == [(0,), (5,), (10,), (14,), (19,)]
    assert len(lazy._cache) == 1  # sampled planes do not push shown planes out of the cache
    low, high = ranges.stack()
    assert (high >= ranges.plane((19,))[1]).all() and (high > ranges.plane((0,))[1]).any()


@pytest.mark.gui
@pytest.mark.parametrize("mode", ["stack", "plane"])
def test_stack_contrast_in_the_viewer(make_napari_viewer, random_net, mode):
    viewer = make_napari_viewer()
    image = viewer.add_image(_stack(planes=20), name="Cells", contrast_limits=(0, 1))
    layer = show_activations(viewer, image, "relu_conv1", network=random_net, stack_contrast=mode)
    lazy = layer.data.stack.native
    assert layer.metadata[METADATA_KEY]["stack_contrast"] == mode
    z_axis = 1
    on_screen = int(viewer.dims.current_step[z_axis])  # napari opens on the middle plane
    sampled = {0, 5, 10, 14, 19} if mode == "stack" else {0}
    assert lazy.forward_passes == len(sampled | {on_screen})
    # A channel whose range grows with the planes' contrast.
    channel = int(np.argmax(np.ptp(lazy[19], axis=(1, 2)) - np.ptp(lazy[0], axis=(1, 2))))
    viewer.dims.set_current_step(0, channel)

    def shown(z):
        viewer.dims.set_current_step(z_axis, z)
        return tuple(layer.contrast_limits)

    at_first = shown(0)
    at_last = shown(19)
    at_middle = shown(7)  # not sampled
    truth = [np.asarray(lazy[z, channel]) for z in (0, 19, 7)]
    if mode == "plane":  # each plane its own full range
        for limits, plane in zip((at_first, at_last, at_middle), truth, strict=False):
            low, high = float(plane.min()), float(plane.max())
            high = high if high > low else low + 1  # a flat plane still gets a valid range
            assert limits == pytest.approx((low, high), rel=1e-5, abs=1e-6)
        assert at_first != at_last
    else:  # one range for every plane, from the sampled planes; plane 0 alone is far smaller
        assert at_first == at_last == at_middle
        assert at_first[1] == pytest.approx(max(p.max() for p in truth), rel=1e-5)
        assert at_first[1] > 2 * truth[0].max()
    # Only what was sampled or shown (a sampled plane is computed again when shown: the
    # cache keeps planes on screen, not samples), never all 20.
    assert lazy.forward_passes <= len(sampled | {on_screen}) + 3


@pytest.mark.gui
def test_a_channel_move_in_3d_runs_no_forward_pass(make_napari_viewer, random_net, monkeypatch):
    """napari's 3D view reads one channel of every plane: once the stack has been seen, a
    channel move resizes that channel of each plane once and runs no network; in 2D a move
    stays one plane's one channel."""
    viewer = make_napari_viewer()
    image = viewer.add_image(_stack(planes=6, size=32), name="Cells", contrast_limits=(0, 1))
    layer = show_activations(viewer, image, "relu_conv1", network=random_net)
    stack, lazy = layer.data.stack, layer.data.stack.native
    whole = np.asarray(stack)  # computes (and keeps) every plane
    passes = lazy.forward_passes
    resized = []
    align = alignment.align

    def counting_align(source, *args, **kwargs):
        resized.append(source.shape)
        return align(source, *args, **kwargs)

    monkeypatch.setattr(alignment, "align", counting_align)
    h, w = lazy.shape[-2:]
    viewer.dims.ndisplay = 3
    for channel in (3, 11, 7):
        resized.clear()
        viewer.dims.set_current_step(0, channel)
        assert resized == [(6, 1, h, w)]
        shown = np.asarray(layer._slice.image.raw)
        np.testing.assert_allclose(shown, whole[:, channel], rtol=1e-5, atol=1e-6)
    viewer.dims.ndisplay = 2
    resized.clear()
    viewer.dims.set_current_step(0, 12)
    assert resized == [(1, 1, h, w)]  # one plane, one channel
    assert lazy.forward_passes == passes


@pytest.mark.gui
def test_plane_contrast_follows_a_layer_with_a_one_plane_axis(make_napari_viewer, random_net):
    """A second network layer on a stack gets a one-plane axis (the first one's channels):
    its contrast still follows the plane slider, plane by plane."""
    viewer = make_napari_viewer()
    image = viewer.add_image(_stack(planes=3), name="Cells", contrast_limits=(0, 1))
    show_activations(
        viewer, image, "relu_conv1", network=random_net, stack_contrast="plane", include_border=True
    )
    layer = show_activations(
        viewer,
        image,
        "fire2-relu_squeeze1x1",
        network=random_net,
        stack_contrast="plane",
        include_border=True,
    )
    assert layer.data.shape[:3] == (16, 1, 3)  # channel, one-plane axis, the stack's planes
    channel_axis, z_axis = 0, viewer.dims.ndim - 3
    viewer.dims.set_current_step(channel_axis, 5)
    for z in (0, 2, 1):
        viewer.dims.set_current_step(z_axis, z)
        plane = np.asarray(layer.data.native[z, 5])
        low, high = float(plane.min()), float(plane.max())
        high = high if high > low else low + 1
        assert tuple(layer.contrast_limits) == pytest.approx((low, high), rel=1e-5, abs=1e-6)


@pytest.mark.gui
def test_widget_stack_contrast_choice(make_napari_viewer, qtbot, random_net):
    viewer = make_napari_viewer()
    viewer.add_image(_stack(planes=8, size=48), name="Cells", contrast_limits=(0, 1))
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.set_network(random_net)
    assert widget.stack_contrast_combo.currentData() == "stack"  # the default
    for mode, passes in (("stack", 5), ("plane", 1)):
        widget.stack_contrast_combo.setCurrentIndex(widget.stack_contrast_combo.findData(mode))
        widget.run()
        qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
        layer = viewer.layers["Cells: conv1"]
        assert layer.metadata[METADATA_KEY]["stack_contrast"] == mode
        on_screen = int(viewer.dims.current_step[1])
        extra = on_screen not in ({0, 2, 4, 5, 7} if mode == "stack" else {0})
        assert layer.data.stack.native.forward_passes == passes + extra


# -- channel layers as R, G, B -------------------------------------------------------------


def _three_channels(viewer, **kw):
    rng = np.random.default_rng(5)
    data = (rng.random((3, 64, 80)) * [[[1000]], [[200]], [[50]]]).astype(np.uint16)
    layers = viewer.add_image(data, channel_axis=0, name=["DNA", "Actin", "Tubulin"], **kw)
    return data, layers


@pytest.mark.gui
def test_channel_layers_are_the_networks_r_g_b(make_napari_viewer, random_net):
    viewer = make_napari_viewer()
    data, layers = _three_channels(viewer, scale=(0.5, 0.5), translate=(3, 4))
    for layer, limits in zip(layers, [(0, 900), (10, 150), (0, 40)], strict=False):
        layer.contrast_limits = limits
    out = show_activations(viewer, ["DNA", "Actin", "Tubulin"], "conv1", network=random_net)
    assert out.name == "DNA + Actin + Tubulin: conv1"
    rgb = np.stack(
        [
            np.clip((d - lo) / (hi - lo), 0, 1)
            for d, (lo, hi) in zip(
                data.astype(np.float32), [(0, 900), (10, 150), (0, 40)], strict=False
            )
        ],
        axis=-1,
    )
    want = na.activations(random_net, rgb, "conv1", intensity_range=(0, 1))
    np.testing.assert_allclose(out.data.native, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.extent.world[:, 1:], layers[0].extent.world)
    meta = out.metadata[METADATA_KEY]["channel_layers"]
    assert meta["names"] == ["DNA", "Actin", "Tubulin"] and meta["as"] == ["R", "G", "B"]
    assert meta["intensity_ranges"][1] == [10.0, 150.0]
    # Two layers: blue is zero; None leaves green out.
    two = show_activations(viewer, ["DNA", None, "Tubulin"], "conv1", network=random_net)
    assert two.metadata[METADATA_KEY]["channel_layers"]["as"] == ["R", "B"]
    rb = rgb.copy()
    rb[..., 1] = 0
    np.testing.assert_allclose(
        two.data.native,
        na.activations(random_net, rb, "conv1", intensity_range=(0, 1)),
        rtol=1e-5,
        atol=1e-5,
    )
    # One layer in a list stays gray.
    gray = show_activations(viewer, ["Actin"], "conv1", network=random_net)
    assert gray.name == "Actin: conv1"
    assert all(
        np.array_equal(layer.data, d) for layer, d in zip(layers, data, strict=False)
    )  # untouched


@pytest.mark.gui
def test_widget_takes_green_and_blue_layers(make_napari_viewer, qtbot, random_net):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    _, (dna, actin, tubulin) = _three_channels(viewer)
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.set_network(random_net)
    widget.image_combo.setCurrentText("DNA")
    widget.set_channel_layers(None, "Tubulin")
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    out = viewer.layers["DNA + Tubulin: conv1"]
    assert out.metadata[METADATA_KEY]["channel_layers"]["as"] == ["R", "B"]
    want = show_activations(viewer, ["DNA", None, "Tubulin"], "conv1", network=random_net)
    assert want is out
    widget.set_channel_layers("Actin", "Tubulin")
    actin.translate = (0.0, 2.0)
    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "DNA + Actin + Tubulin: conv1" not in viewer.layers
    assert any("'Actin' has [0.0, 2.0]" in m and "translate" in m for m in seen)
    assert "failed" in widget.status_label.text()


@pytest.mark.gui
def test_channel_layers_that_do_not_agree_are_refused_plainly(make_napari_viewer, random_net):
    viewer = make_napari_viewer()
    _, (dna, actin, tubulin) = _three_channels(viewer)
    actin.scale = (1.0, 0.5)
    with pytest.raises(
        LayerInputError,
        match=r"same pixels in the world: 'DNA' has scale \[1.0, 1.0\] "
        r"and 'Actin' has \[1.0, 0.5\]",
    ):
        show_activations(viewer, ["DNA", "Actin"], "conv1", network=random_net)
    viewer.add_image(np.zeros((64, 81), np.uint16), name="Wider")
    with pytest.raises(LayerInputError, match=r"same shape.*\(64, 80\).*\(64, 81\)"):
        show_activations(viewer, ["DNA", "Wider"], "conv1", network=random_net)
    with pytest.raises(LayerInputError, match="chosen twice"):
        show_activations(viewer, ["DNA", "DNA"], "conv1", network=random_net)
    viewer.add_image(np.zeros((64, 80, 3), np.uint8), name="Photo")
    with pytest.raises(LayerInputError, match="'Photo' is an RGB layer"):
        show_activations(viewer, ["DNA", "Photo"], "conv1", network=random_net)
    with pytest.raises(LayerInputError, match="first .red."):
        show_activations(viewer, [None, "DNA"], "conv1", network=random_net)
    assert not any(METADATA_KEY in layer.metadata for layer in viewer.layers)


def test_channels_as_rgb_reads_only_the_planes_asked_for():
    reads = []

    class Recorder:
        shape, dtype, ndim = (4, 8, 9), np.dtype(np.uint16), 3

        def __getitem__(self, key):
            reads.append(key)
            return np.full((8, 9), 100, np.uint16)

    view = ChannelsAsRGB([Recorder(), None, Recorder()], [(0, 200), None, (50, 150)])
    assert view.shape == (4, 8, 9, 3) and view.dtype == np.float32
    plane = view[2]
    assert plane.shape == (8, 9, 3)
    np.testing.assert_allclose(plane[0, 0], [0.5, 0.0, 0.5])
    assert reads == [(2,), (2,)]


# -- dark or saturated input ----------------------------------------------------------------


def test_exposure_warning_says_dark_saturated_or_nothing():
    img = nuclei(128)
    fine = (float(img.min()), float(img.max()))
    assert exposure_warning("N", img, fine) is None
    dark = exposure_warning("N", img, (0, 65535))
    assert "nearly black" in dark and "0 to 65535" in dark and "auto-contrast" in dark
    assert "reset_contrast_limits()" in dark
    bright = exposure_warning("N", img + 60000, (0, 1000))
    assert "nearly saturated" in bright
    assert exposure_warning("N", np.zeros((2, 4, 4), complex), (0, 1)) is None  # refused later


@pytest.mark.gui
def test_dark_input_warns_in_the_api_and_the_widget(
    make_napari_viewer, qtbot, random_net, monkeypatch
):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    img = nuclei(128)
    layer = viewer.add_image(img, name="Nuclei", contrast_limits=(0, 65535))
    with pytest.warns(UserWarning, match="'Nuclei' is nearly black"):
        show_activations(viewer, "Nuclei", "conv1", network=random_net)
    layer.reset_contrast_limits()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        show_activations(viewer, "Nuclei", "conv1", network=random_net)

    seen = []
    original = notification_manager.dispatch
    monkeypatch.setattr(
        notification_manager, "dispatch", lambda n: (seen.append(str(n.message)), original(n))[1]
    )
    layer.contrast_limits = (0, 65535)
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.set_network(random_net)
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "nearly black" in widget.status_label.text()
    assert any("nearly black" in m and "auto-contrast" in m for m in seen)


# -- multiscale ----------------------------------------------------------------------------


def test_default_level_is_the_finest_at_most_2048_pixels():
    assert choose_level([(512, 512), (256, 256), (128, 128)]) == 0
    assert choose_level([(8192, 6000), (4096, 3000), (2048, 1500), (1024, 750)]) == 2
    assert choose_level([(60, 9000, 9000), (60, 4500, 4500)]) == 1  # none small: coarsest
    assert choose_level([(4096, 4096, 3), (2048, 2048, 3)], rgb=True) == 1


def _pyramid():
    rng = np.random.default_rng(7)
    base = (rng.random((512, 384)) * 255).astype(np.uint8)
    return [base, base[::2, ::2].copy(), base[::4, ::4].copy()]


@pytest.mark.gui
def test_multiscale_layer_computes_on_one_level_placed_over_full_resolution(
    make_napari_viewer, qtbot, random_net
):
    viewer = make_napari_viewer()
    levels = _pyramid()
    image = viewer.add_image(
        levels,
        multiscale=True,
        name="Slide",
        scale=(0.5, 0.25),
        translate=(10, -4),
        contrast_limits=(0, 255),
    )
    out = show_activations(viewer, image, "fire2-concat", network=random_net, level=1)
    assert out.data.shape == (128, 256, 192)
    np.testing.assert_allclose(out.scale, (1.0, 1.0, 0.5))
    np.testing.assert_allclose(out.translate, (0.0, 10.0, -4.0))
    np.testing.assert_allclose(
        out.data.native,
        na.activations(random_net, levels[1], "fire2-concat", intensity_range=(0, 255)),
        rtol=1e-5,
        atol=1e-5,
    )
    # Level 1 pixel j lies where napari draws it: full-resolution pixel 2j.
    for j in [(0, 0), (255, 191), (100, 37)]:
        np.testing.assert_allclose(
            out.data_to_world((0,) + j)[1:], image.data_to_world(tuple(2 * np.array(j)))
        )
    assert out.metadata[METADATA_KEY]["pyramid_level"] == 1
    default = show_activations(viewer, image, "conv1", network=random_net)
    assert default.metadata[METADATA_KEY]["pyramid_level"] == 0
    with pytest.raises(LayerInputError, match="levels 0 to 2"):
        show_activations(viewer, image, "conv1", network=random_net, level=3)
    # The widget offers the levels, the default chosen, and computes on the one chosen.
    _, widget = viewer.window.add_plugin_dock_widget(*WIDGET)
    widget.set_network(random_net)
    widget.image_combo.setCurrentText("Slide")
    assert [widget.level_combo.itemText(i) for i in range(3)] == [
        "0: 512×384",
        "1: 256×192",
        "2: 128×96",
    ]
    assert widget.level_combo.currentIndex() == 0 and widget.level_combo.isEnabled()
    widget.level_combo.setCurrentIndex(2)
    widget.set_network_layer("conv1")
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    shown = viewer.layers["Slide: conv1"]
    assert shown.data.shape[1:] == (128, 96) and "pyramid level 2" in widget.status_label.text()
    np.testing.assert_allclose(shown.scale, (1.0, 2.0, 1.0))


@pytest.mark.gui
def test_ome_zarr_pyramid_from_napari_ome_zarr(make_napari_viewer, tmp_path, random_net):
    zarr = pytest.importorskip("zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    rng = np.random.default_rng(11)
    data = (rng.random((256, 320)) * 4000).astype(np.uint16)
    path = tmp_path / "cells.ome.zarr"
    store = parse_url(str(path), mode="w").store
    write_image(data, zarr.group(store=store), axes="yx", scale_factors=(2, 4))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-ome-zarr")
    assert layer.multiscale and len(layer.data) == 3
    out = show_activations(viewer, layer, "fire2-concat", network=random_net, level=2)
    assert out.data.shape[1:] == tuple(layer.level_shapes[2])
    np.testing.assert_allclose(out.scale[1:], np.asarray(layer.scale) * 4)
    np.testing.assert_allclose(
        out.data.native,
        na.activations(
            random_net,
            np.asarray(layer.data[2]),
            "fire2-concat",
            intensity_range=tuple(layer.contrast_limits),
        ),
        rtol=1e-5,
        atol=1e-5,
    )
    corner = np.asarray(out.extent.world)[:, 1:]
    np.testing.assert_allclose(corner[0], np.asarray(layer.extent.world)[0])
