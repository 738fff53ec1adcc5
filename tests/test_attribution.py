"""Grad-CAM and occlusion sensitivity: equal to the peers, placed exactly, plain refusals.

Peers: pytorch-grad-cam (``grad-cam``) and captum, on the same network input. The real-weights
findings, with the built-in Caffe weights, are in the second half.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import napari_activations as na
from napari_activations.attribution import AttributionError, default_feature_layer
from napari_activations.compute import network_input


@pytest.fixture(scope="module")
def small():
    """A (64, 80, 3) uint8 crop of chelsea: big enough for every layer, cheap to occlude."""
    import skimage.data

    return skimage.data.chelsea()[100:164, 150:230].copy()


@pytest.fixture(scope="module")
def peer_model(random_net):
    """The same network for the peers, with its own parameters (they need gradients on)."""
    model = copy.deepcopy(random_net.model)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _close(ours: np.ndarray, theirs: np.ndarray, rel: float = 1e-4) -> None:
    scale = float(np.abs(theirs).max())
    assert scale > 0, "the peer's map is all zero: the comparison would mean nothing"
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=rel * scale)


@pytest.mark.parametrize("layer", [None, "fire9-concat", "fire5-concat"])
def test_grad_cam_equals_pytorch_grad_cam_and_captum(random_net, peer_model, small, layer):
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    info = na.find_layer(layer) if layer else default_feature_layer(random_net)
    cls = 285  # any class: with random weights all are equally meaningless
    ours = na.grad_cam(random_net, small, cls, layer=layer, resize=False)
    x, *_ = network_input(random_net, small, info)
    module = peer_model.get_submodule(info.module)

    cam = GradCAM(model=peer_model, target_layers=[module])
    try:
        targets = [ClassifierOutputTarget(cls)]
        cam(input_tensor=x, targets=targets)  # its own forward and backward
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        theirs = np.maximum(cam.get_cam_image(x, module, targets, acts, grads), 0)[0]
    finally:
        cam.activations_and_grads.release()
    assert ours.shape == theirs.shape
    _close(ours, theirs)

    captum_map = LayerGradCam(peer_model, module).attribute(x, target=cls, relu_attributions=True)
    _close(ours, captum_map[0, 0].detach().numpy())


def test_grad_cam_on_the_image_grid_places_pixel_i_over_O_plus_S_i(random_net, small):
    info = na.find_layer("fire9-concat")
    native = na.grad_cam(random_net, small, 3, layer=info, resize=False)
    placed = na.grad_cam(random_net, small, 3, layer=info)
    assert placed.shape == small.shape[:2] and placed.dtype == np.float32
    S, O = info.stride, int(info.offset)
    rows = O + S * np.arange(native.shape[0])
    cols = O + S * np.arange(native.shape[1])
    inside = rows < placed.shape[0]
    np.testing.assert_allclose(
        placed[np.ix_(rows[inside], cols[cols < placed.shape[1]])],
        native[inside][:, : (cols < placed.shape[1]).sum()],
        rtol=1e-6,
        atol=1e-7,
    )


def test_grad_cam_with_input_scale_covers_the_image(random_net, small):
    placed = na.grad_cam(random_net, small, 3, input_scale=2.0)
    assert placed.shape == small.shape[:2]
    assert np.isfinite(placed).all() and placed.max() > 0


def test_target_by_name_index_and_callable_agree(random_net, small):
    by_index = na.grad_cam(random_net, small, 285, resize=False)
    by_name = na.grad_cam(random_net, small, "egyptian cat", resize=False)  # any case
    by_callable = na.grad_cam(random_net, small, lambda out: out[0, 285], resize=False)
    np.testing.assert_array_equal(by_index, by_name)
    np.testing.assert_allclose(by_callable, by_index, rtol=1e-6)
    # a region target, as for networks that are not classifiers: a different map
    other = na.grad_cam(random_net, small, lambda out: out[0, 280:290].sum(), resize=False)
    assert not np.allclose(other, by_index)


@pytest.mark.parametrize("window,stride,fill", [(16, 8, "mean"), ((20, 12), (8, 6), 0)])
def test_occlusion_equals_captum_and_reuse_equals_full_passes(
    random_net, peer_model, small, window, stride, fill
):
    import torch
    from captum.attr import Occlusion

    cls = 285
    ours = na.occlusion_sensitivity(random_net, small, cls, window=window, stride=stride, fill=fill)
    full = na.occlusion_sensitivity(
        random_net, small, cls, window=window, stride=stride, fill=fill, reuse=False, batch=7
    )
    x, *_ = network_input(random_net, small, "conv1")
    wy, wx = (window, window) if isinstance(window, int) else window
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    if fill == "mean":
        baseline = x.mean(dim=(2, 3), keepdim=True)
    else:  # intensity 0 of a uint8 image, normalised
        mean = torch.tensor(random_net.mean).reshape(1, 3, 1, 1)
        std = torch.tensor(random_net.std).reshape(1, 3, 1, 1)
        baseline = (0 - mean) / std
    with torch.no_grad():
        theirs = (
            Occlusion(peer_model)
            .attribute(
                x,
                sliding_window_shapes=(3, wy, wx),
                strides=(3, sy, sx),
                baselines=baseline,
                target=cls,
                perturbations_per_eval=16,
            )[0, 0]
            .numpy()
        )
    assert ours.shape == theirs.shape == small.shape[:2]
    _close(ours, theirs)
    _close(full, theirs)


def test_occlusion_progress_and_cancel(random_net, small):
    gen = na.iter_occlusion_sensitivity(random_net, small, 1, window=16, stride=8, batch=4)
    first = next(gen)
    assert first.done == 0 and first.total == 63  # 7 x 9 window positions
    second = next(gen)
    assert second.done == 4
    gen.close()  # cancelled: nothing left running, nothing returned


def test_occlusion_with_input_scale_is_on_the_image_grid(random_net, small):
    half = na.occlusion_sensitivity(random_net, small, 1, window=12, stride=6, input_scale=0.75)
    assert half.shape == small.shape[:2] and np.isfinite(half).all()


# --- bad input: plain messages -------------------------------------------------------------


@pytest.mark.parametrize(
    "target,words",
    [
        (1000, ["1000", "out of range", "0 to 999"]),
        (-1, ["-1", "out of range"]),
        ("egyptain cat", ["egyptain cat", "Egyptian cat"]),
        ("zzzz", ["zzzz", "categories"]),
        (2.5, ["float"]),
        (True, ["True"]),
    ],
)
def test_bad_targets_are_refused_plainly(random_net, small, target, words):
    for run in (na.grad_cam, na.occlusion_sensitivity):
        with pytest.raises(AttributionError) as err:
            run(random_net, small, target)
        for word in words:
            assert word in str(err.value)


@pytest.mark.parametrize("layer", ["pool10", "prob"])
def test_layers_after_global_pooling_are_refused(random_net, small, layer):
    with pytest.raises(AttributionError, match="after global pooling.*relu_conv10"):
        na.grad_cam(random_net, small, 1, layer=layer)


def test_non_scalar_target_function_is_refused(random_net, small):
    with pytest.raises(AttributionError, match=r"returned shape \(1, 1000\).*one number"):
        na.grad_cam(random_net, small, lambda out: out)
    with pytest.raises(AttributionError, match=r"returned shape \(1, 1000\).*one number"):
        na.occlusion_sensitivity(random_net, small, lambda out: out, window=32, stride=32)
    with pytest.raises(AttributionError, match="torch tensor"):
        na.grad_cam(random_net, small, lambda out: 1.0)


def test_windows_larger_than_the_image_and_bad_strides_are_refused(random_net, small):
    with pytest.raises(
        AttributionError,
        match=r"window \(100x100 pixels\) is larger than "
        r"the image.*64x80",
    ):
        na.occlusion_sensitivity(random_net, small, 1, window=100)
    with pytest.raises(AttributionError, match="stride .* larger than the window"):
        na.occlusion_sensitivity(random_net, small, 1, window=8, stride=16)
    with pytest.raises(AttributionError, match="window must be a positive"):
        na.occlusion_sensitivity(random_net, small, 1, window=0)
    with pytest.raises(AttributionError, match="fill must be 'mean'"):
        na.occlusion_sensitivity(random_net, small, 1, fill="median")


def test_images_too_small_for_the_network_are_refused(random_net):
    n = na.minimum_input_size("relu_conv10") - 1  # conv1 would run; the network would not
    tiny = np.zeros((n, n), dtype=np.uint8)
    with pytest.raises(na.ImageError, match="too small for layer 'relu_conv10'"):
        na.grad_cam(random_net, tiny, 1, layer="conv1")  # the pass goes on to the output
    with pytest.raises(na.ImageError, match="too small for layer 'relu_conv10'"):
        na.occlusion_sensitivity(random_net, tiny, 1)


def test_stacks_are_refused(random_net, small):
    with pytest.raises(na.ImageError, match="one image.*image\\[0\\]"):
        na.grad_cam(random_net, np.stack([small, small]), 1)


def test_attribution_module_imports_no_torch_until_used():
    import subprocess
    import sys

    code = (
        "import sys, napari_activations as na; na.AttributionError; na.grad_cam; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


# --- our own references, with the real weights ------------------------------------------------

# chelsea (300 x 451): the cat's head fills most of the frame; the blurred background is the
# strip on the right and the top corners. The head box holds eyes, nose and mouth.
HEAD = (slice(40, 300), slice(60, 380))
BACKGROUND = (slice(100, 300), slice(400, 451))


@pytest.mark.real_weights
@pytest.mark.parametrize("layer", [None, "fire9-concat"])
def test_chelsea_egyptian_cat_grad_cam_peaks_on_the_head(real_net, layer):
    import skimage.data

    image = skimage.data.chelsea()
    cam = na.grad_cam(real_net, image, "Egyptian cat", layer=layer)
    peak = np.unravel_index(cam.argmax(), cam.shape)
    head = np.zeros(cam.shape, dtype=bool)
    head[HEAD] = True
    assert head[peak], f"the map peaks at {peak}, outside the head"
    assert cam[HEAD].mean() > 3 * cam[BACKGROUND].mean()


# The Face sample (220 x 180): the eyes span rows 65-78, cols 72-136 (as in
# test_reference_findings); the background box is the same area of plain backdrop, top left.
EYES = (slice(57, 87), slice(64, 145))
BACKDROP = (slice(0, 30), slice(0, 81))


@pytest.mark.real_weights
def test_face_occluding_the_eyes_makes_sunglasses(real_net):
    """What occlusion shows on the Face sample, measured (not what one might expect).

    The network's top class for the crop is 'neck brace' (the spacesuit's collar), and
    covering the eyes raises that score rather than lowering it: a grey bar over the eyes makes
    the network say 'sunglasses'. So the sunglasses map is strongly negative (covering raises
    the score) exactly at the eyes, and not at the backdrop.
    """
    from napari_activations._sample_data import load_sample

    face = load_sample("face")
    # non-overlapping windows: a third of the positions of stride 12, and the finding holds
    # with the same margins (eyes' mean -1.7 at stride 24, -2.1 at stride 12; backdrop 0.14)
    drop = na.occlusion_sensitivity(real_net, face, "sunglasses", window=24, stride=24)
    low = np.unravel_index(drop.argmin(), drop.shape)
    eyes = np.zeros(drop.shape, dtype=bool)
    eyes[EYES] = True
    assert eyes[low], f"covering raises 'sunglasses' most at {low}, not at the eyes"
    assert drop[EYES].mean() < -1.0 < drop[BACKDROP].mean()


# --- region targets and region ranking ----------------------------------------------------------


def _head_mask(shape):
    """A lopsided region on the small crop: rows 10-40, columns 30-70 (not centred)."""
    mask = np.zeros(shape[:2], dtype=bool)
    mask[10:40, 30:70] = True
    return mask


@pytest.mark.parametrize("input_scale", [1.0, 0.8])
def test_region_weights_give_the_placed_maps_mean_in_the_region(random_net, small, input_scale):
    from napari_activations.attribution import region_weights

    info = na.find_layer("fire9-concat")
    x, hw, scale, _ = network_input(random_net, small, info, input_scale=input_scale)
    h, w = na.output_size(info, *x.shape[-2:])
    native = np.random.default_rng(1).random((h, w))
    mask = _head_mask(small.shape)
    weights = region_weights(mask, info, (h, w), scale)
    placed = na.align(native[None].astype(np.float32), info, hw, scale)[0]
    np.testing.assert_allclose((native * weights).sum(), placed[mask].mean(), rtol=1e-5)
    assert weights.min() >= 0 and abs(weights.sum() - 1) < 1e-9


class _ScoreMapNet:
    """SqueezeNet without its global pooling: a network whose output is the (1, 1000, h, w)
    class-score map, like a segmentation network's (module names unchanged)."""

    @staticmethod
    def model(squeezenet):
        import torch

        class ScoreMap(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.features = squeezenet.features
                self.classifier = squeezenet.classifier[:-1]  # dropout, conv10, relu

            def forward(self, x):
                return self.classifier(self.features(x))

        return ScoreMap().eval()


def test_region_target_equals_captum_and_works_for_a_network_that_is_not_a_classifier(
    random_net, peer_model, small
):
    import dataclasses

    import torch
    from captum.attr import LayerGradCam, Occlusion

    from napari_activations.attribution import region_weights

    mask = _head_mask(small.shape)
    cls = 285
    goal = na.region_target(random_net, mask, "Egyptian cat", name="head")
    assert goal.label == "Egyptian cat in head"
    x, hw, scale, _ = network_input(random_net, small, "conv1")
    score_map = _ScoreMapNet.model(peer_model)
    with torch.no_grad():
        h, w = score_map(x).shape[-2:]
    weights = torch.as_tensor(region_weights(mask, na.find_layer("relu_conv10"), (h, w), scale))

    def region_mean(inputs):  # the peer's reductionFcn: one number per batch item
        return (score_map(inputs)[:, cls] * weights.float()).sum(dim=(-2, -1))

    module = peer_model.get_submodule(na.find_layer("fire9-concat").module)
    theirs = LayerGradCam(region_mean, module).attribute(x, relu_attributions=True)[0, 0]
    ours = na.grad_cam(random_net, small, goal, layer="fire9-concat", resize=False)
    _close(ours, theirs.detach().numpy())

    with torch.no_grad():
        captum_occ = (
            Occlusion(region_mean)
            .attribute(
                x,
                sliding_window_shapes=(3, 16, 16),
                strides=(3, 8, 8),
                baselines=x.mean(dim=(2, 3), keepdim=True),
                perturbations_per_eval=16,
            )[0, 0]
            .numpy()
        )
    reused = na.occlusion_sensitivity(random_net, small, goal, window=16, stride=8)
    _close(reused, captum_occ)
    whole = na.occlusion_sensitivity(random_net, small, cls, window=16, stride=8)
    assert np.corrcoef(reused.ravel(), whole.ravel())[0, 1] < 0.99  # the region matters

    # The same target on a network whose output is the score map itself (not a classifier):
    # the same numbers, through full forward passes (its output is no global mean to reuse).
    seg = dataclasses.replace(random_net, model=_ScoreMapNet.model(random_net.model))
    seg_goal = na.region_target(seg, mask, cls, name="head")
    _close(na.grad_cam(seg, small, seg_goal, layer="fire9-concat", resize=False), ours)
    _close(na.occlusion_sensitivity(seg, small, seg_goal, window=16, stride=8), captum_occ)


def test_region_target_from_polygon_vertices(random_net, small):
    square = np.array([[10, 30], [10, 70], [40, 70], [40, 30]], dtype=float)
    from_polygon = na.grad_cam(random_net, small, na.region_target(random_net, square, 3))
    from skimage.draw import polygon2mask

    mask = polygon2mask(small.shape[:2], square)
    from_mask = na.grad_cam(random_net, small, na.region_target(random_net, mask, 3))
    np.testing.assert_array_equal(from_polygon, from_mask)


def test_rank_classes_in_region_equals_grad_cam_per_class(random_net, small):
    mask = _head_mask(small.shape)
    ranking = na.rank_classes_in_region(random_net, small, mask, k=3)
    assert [s for *_, s in ranking] == sorted((s for *_, s in ranking), reverse=True)
    for index, name, score in ranking:
        assert name == random_net.categories[index]
        cam = na.grad_cam(random_net, small, index)
        np.testing.assert_allclose(cam[mask].mean(), score, rtol=1e-4)
    every = na.rank_classes_in_region(random_net, small, mask, k=None)
    assert len(every) == 1000 and every[:3] == ranking
    last, _, low = every[-1]  # the weakest class there: its own map agrees
    np.testing.assert_allclose(
        na.grad_cam(random_net, small, last)[mask].mean(), low, rtol=1e-4, atol=1e-9
    )


def test_grad_cam_of_a_region_at_the_score_map_is_the_whole_class_map(random_net, small):
    """A property of Grad-CAM, documented: it averages the gradient over the layer, and at the
    class-score map the region's weights sum to one as the global mean's do, so a region
    target changes nothing there. Occlusion (tested above) and earlier layers see the region."""
    goal = na.region_target(random_net, _head_mask(small.shape), 285)
    np.testing.assert_allclose(
        na.grad_cam(random_net, small, goal), na.grad_cam(random_net, small, 285), rtol=1e-5
    )


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda net, m: na.region_target(net, np.zeros_like(m), 1), ["empty"]),
        (lambda net, m: na.region_target(net, m, 1000), ["out of range", "0 to 999"]),
        (
            lambda net, m: na.region_target(net, m, 600, layer="fire9-concat"),
            ["Channel 600", "512 channels"],
        ),
        (
            lambda net, m: na.region_target(net, m, "tabby", layer="fire9-concat"),
            ["no category names", "whole number"],
        ),
        (lambda net, m: na.region_target(net, m, 1, layer="pool10"), ["after global pooling"]),
        (lambda net, m: na.region_target(net, m, lambda out: out[0, 1]), ["not a function"]),
    ],
)
def test_bad_region_targets_are_refused_plainly(random_net, small, make, words):
    with pytest.raises(AttributionError) as err:
        make(random_net, _head_mask(small.shape))
    for word in words:
        assert word in str(err.value)


def test_region_targets_that_do_not_fit_the_image_are_refused(random_net, small):
    wrong = na.region_target(random_net, np.ones((10, 10), dtype=bool), 1)
    with pytest.raises(AttributionError, match="10x10 pixels but the image is 64x80"):
        na.grad_cam(random_net, small, wrong)
    outside = na.region_target(random_net, np.array([[500, 500], [500, 600], [600, 600]]), 1)
    with pytest.raises(AttributionError, match="covers no pixel of the 64x80 image"):
        na.occlusion_sensitivity(random_net, small, outside, window=32, stride=32)
    early = na.region_target(random_net, _head_mask(small.shape), 1, layer="fire5-concat")
    with pytest.raises(AttributionError, match="comes before Grad-CAM's layer 'relu_conv10'"):
        na.grad_cam(random_net, small, early)
    with pytest.raises(AttributionError, match="10x10 pixels but the image is 64x80"):
        na.rank_classes_in_region(random_net, small, np.ones((10, 10), dtype=bool))


@pytest.mark.real_weights
def test_chelsea_classes_ranked_in_the_head_are_cats_and_not_in_the_background(real_net):
    import skimage.data

    image = skimage.data.chelsea()
    head = np.zeros(image.shape[:2], dtype=bool)
    head[HEAD] = True
    background = np.zeros(image.shape[:2], dtype=bool)
    background[BACKGROUND] = True
    cats = {"Egyptian cat", "tiger cat", "tabby", "lynx", "Siamese cat", "Persian cat"}
    in_head = [name for _, name, _ in na.rank_classes_in_region(real_net, image, head)]
    in_background = [name for _, name, _ in na.rank_classes_in_region(real_net, image, background)]
    assert set(in_head[:3]) <= cats, in_head
    assert not cats & set(in_background), in_background
