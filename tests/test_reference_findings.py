"""The reference workflow's findings, with the built-in original Caffe weights (MATLAB's
SqueezeNet); they never skip."""

from __future__ import annotations

import numpy as np
import pytest

import napari_activations as na

pytestmark = pytest.mark.real_weights

CATS = {"Egyptian cat", "tabby", "tiger cat"}

# In the face crop (220 x 180, rows x cols; skimage.data.astronaut()[30:250, 120:300]), looked
# up on the image: the eyes span rows 65-78, the left one (in the image) cols 72-95, the right
# one cols 114-136. The boxes add 8 pixels, half of fire6's 16-pixel stride, on every side.
EYE_BOXES = [(slice(57, 87), slice(64, 104)), (slice(57, 87), slice(106, 145))]
# The face itself, hair and collar excluded.
FACE_BOX = (slice(15, 175), slice(35, 170))
EYE_CHANNELS = [13, 46]  # MATLAB's channels 14 and 47


def _masks(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    eyes = np.zeros(shape, dtype=bool)
    for box in EYE_BOXES:
        eyes[box] = True
    face = np.zeros(shape, dtype=bool)
    face[FACE_BOX] = True
    return eyes, face & ~eyes


def test_chelsea_is_a_cat(real_net):
    import skimage.data

    top = na.classify(real_net, skimage.data.chelsea(), top=3)
    assert top[0][0] in CATS
    assert sum(p for name, p in top if name in CATS) > 0.8


def test_coffee_is_espresso(real_net):
    import skimage.data

    ((name, p),) = na.classify(real_net, skimage.data.coffee(), top=1)
    assert name == "espresso" and p > 0.9


def test_conv1_has_64_channels_and_edge_detectors_of_both_signs(real_net, face):
    act = na.activations(real_net, face, "conv1")
    assert act.shape == (64, 109, 89)
    strongest = int(act.max(axis=(1, 2)).argmax())
    assert act[strongest].max() > 0 and act[strongest].min() < 0


def test_fire6_squeeze_has_negatives_and_its_relu_keeps_the_positives(real_net, face):
    pre = na.activations(real_net, face, "fire6-squeeze1x1")
    post = na.activations(real_net, face, "fire6-relu_squeeze1x1")
    assert pre.shape == post.shape == (48, 13, 11)
    assert pre.min() < -0.1 * pre.max()  # strongly negative as well as positive
    np.testing.assert_array_equal(np.maximum(pre, 0), post)


@pytest.mark.parametrize("input_scale", [1.0, 2.0])
@pytest.mark.parametrize("channel", EYE_CHANNELS)
def test_eye_channels_are_brightest_at_the_eyes(real_net, face, channel, input_scale):
    A = na.activations(
        real_net, face, "fire6-relu_squeeze1x1", resize=True, input_scale=input_scale
    )
    assert A.shape == (48, 220, 180)
    a = A[channel]
    eyes, rest = _masks(a.shape)
    peak = np.unravel_index(a.argmax(), a.shape)
    assert eyes[peak], f"channel {channel} peaks at {peak}, outside the eyes"
    # both eyes light up, not just one
    for box in EYE_BOXES:
        assert a[box].max() > 0.6 * a.max()
    assert a[eyes].mean() > 2.0 * a[rest].mean()


def test_eye_channels_stand_out_among_the_layer(real_net, face):
    """Of fire6's 48 channels, 14 and 47 (MATLAB) are among the few that prefer the eyes."""
    a = np.asarray(na.activations(real_net, face, "fire6-relu_squeeze1x1", resize=True))
    eyes, rest = _masks(a.shape[-2:])
    ratio = a[:, eyes].mean(axis=1) / np.maximum(a[:, rest].mean(axis=1), 1e-6)
    ranked = list(np.argsort(-ratio))
    for channel in EYE_CHANNELS:
        assert ranked.index(channel) < 5
        assert ratio[channel] > 2.5 * np.median(ratio)
