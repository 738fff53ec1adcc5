"""Regenerate the sample images shipped in src/napari_activations/data/.

"Face" is the crop of ``skimage.data.astronaut()`` (rows 30:250, columns 120:300) on which the
built-in weights' eye channels (MATLAB's 14 and 47 of fire6-relu_squeeze1x1) are checked; "Face,
one eye covered" is the same crop with the image-left eye filled in from the surrounding skin
(biharmonic inpainting), the reference workflow's closed-eye photo. They are precomputed so that
opening a sample in napari reads two small PNGs and nothing else.

Run: ``.venv/bin/python scripts/make_sample_data.py``
"""

from pathlib import Path

import numpy as np
import skimage.data
import skimage.io
from skimage.draw import ellipse
from skimage.restoration import inpaint_biharmonic

DATA = Path(__file__).resolve().parents[1] / "src" / "napari_activations" / "data"

FACE_CROP = (slice(30, 250), slice(120, 300))
# The image-left eye, lashes included (found by eye on the crop): centre row, col; radii.
EYE = (70.5, 83.0, 8.0, 15.0)


def main() -> None:
    face = skimage.data.astronaut()[FACE_CROP].copy()
    mask = np.zeros(face.shape[:2], dtype=bool)
    rr, cc = ellipse(EYE[0], EYE[1], EYE[2], EYE[3], shape=mask.shape)
    mask[rr, cc] = True
    covered = inpaint_biharmonic(face, mask, channel_axis=-1)
    covered = np.clip(np.round(covered * 255), 0, 255).astype(np.uint8)
    covered[~mask] = face[~mask]
    DATA.mkdir(parents=True, exist_ok=True)
    skimage.io.imsave(DATA / "face.png", face, check_contrast=False)
    skimage.io.imsave(DATA / "face_one_eye_covered.png", covered, check_contrast=False)
    print(f"wrote {DATA / 'face.png'} and {DATA / 'face_one_eye_covered.png'}")


if __name__ == "__main__":
    main()
