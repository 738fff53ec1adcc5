"""Sample data for napari's File > Open Sample menu: the reference workflow's face pair.

Both images are small PNGs shipped in ``data/`` (made by ``scripts/make_sample_data.py``), so
opening a sample reads a file and computes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["face", "face_one_eye_covered", "load_sample"]

DATA_DIR = Path(__file__).resolve().parent / "data"

SAMPLES = {
    "face": ("face.png", "Face"),
    "face_one_eye_covered": ("face_one_eye_covered.png", "Face, one eye covered"),
}


def load_sample(key: str) -> np.ndarray:
    """The sample image ``key`` (``"face"`` or ``"face_one_eye_covered"``): (220, 180, 3) uint8."""
    from imageio.v3 import imread

    filename, _ = SAMPLES[key]
    return np.asarray(imread(DATA_DIR / filename))


def _layer_data(key: str) -> list[tuple]:
    _, name = SAMPLES[key]
    return [(load_sample(key), {"name": name, "rgb": True}, "image")]


def face() -> list[tuple]:
    """The astronaut's face, ``skimage.data.astronaut()[30:250, 120:300]``, as a LayerDataTuple."""
    return _layer_data("face")


def face_one_eye_covered() -> list[tuple]:
    """The same face with the image-left eye filled in from the surrounding skin."""
    return _layer_data("face_one_eye_covered")
