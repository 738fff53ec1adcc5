"""bioimage.io model packages: a package built here, around the small U-Net of ``_unet.py``.

Nothing downloads: the packages are folders and zips in tmp_path, with random weights (these
tests are about loading, geometry and preprocessing, not about what a model learned).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _unet import SmallUNet

import napari_activations as na
from napari_activations.bioimageio import BioimageioError

pytest.importorskip("bioimageio.core")  # the [bioimageio] extra; in the testing extra too

UNET_SOURCE = Path(__file__).with_name("_unet.py")
EPS = 1e-6
ZMUV = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"], "eps": EPS}}]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_package(
    folder: Path,
    *,
    preprocessing: list | None = None,
    in_channels: int = 1,
    z: bool = False,
    weights: str = "pytorch_state_dict",
    kwargs_width: int = 4,
    seed: int = 0,
) -> Path:
    """A bioimage.io model package (format 0.5) in ``folder``: the U-Net's source, its
    state_dict, test tensors and ``rdf.yaml`` (written as JSON, which is YAML)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = SmallUNet(in_channels=in_channels).eval()
    shutil.copy(UNET_SOURCE, folder / "unet.py")
    spatial = ["z", "y", "x"] if z else ["y", "x"]
    x = np.random.default_rng(seed).random((1, in_channels) + (32,) * len(spatial))
    np.save(folder / "test_input.npy", x.astype(np.float32))
    np.save(folder / "test_output.npy", np.zeros((1, 1) + (32,) * len(spatial), np.float32))
    (folder / "README.md").write_text("A small U-Net for tests.\n")

    def axes(size_of):
        return [
            {"type": "batch"},
            {"type": "channel", "channel_names": [f"c{i}" for i in range(in_channels)]},
        ] + [{"type": "space", "id": a, "size": size_of(a)} for a in spatial]

    entries = {}
    if weights == "pytorch_state_dict":
        torch.save(model.state_dict(), folder / "weights.pt")
        entries["pytorch_state_dict"] = {
            "source": "weights.pt",
            "sha256": _sha(folder / "weights.pt"),
            "architecture": {
                "source": "unet.py",
                "sha256": _sha(folder / "unet.py"),
                "callable": "SmallUNet",
                "kwargs": {"in_channels": in_channels, "out_channels": 1, "width": kwargs_width},
            },
            "pytorch_version": "2.1",
        }
    else:
        torch.jit.script(model).save(str(folder / "model.pt"))
        entries["torchscript"] = {
            "source": "model.pt",
            "sha256": _sha(folder / "model.pt"),
            "pytorch_version": "2.1",
        }
    rdf = {
        "type": "model",
        "format_version": "0.5.4",
        "name": "Small U-Net",
        "description": "A small U-Net with transposed convolutions, for tests.",
        "authors": [{"name": "napari-activations tests"}],
        "cite": [{"text": "napari-activations", "url": "https://example.com"}],
        "license": "BSD-3-Clause",
        "documentation": "README.md",
        "inputs": [
            {
                "id": "raw",
                "axes": axes(lambda a: {"min": 16, "step": 4}),
                "test_tensor": {
                    "source": "test_input.npy",
                    "sha256": _sha(folder / "test_input.npy"),
                },
                "preprocessing": ZMUV if preprocessing is None else preprocessing,
            }
        ],
        "outputs": [
            {
                "id": "mask",
                "axes": axes(lambda a: {"tensor_id": "raw", "axis_id": a})[:1]
                + [{"type": "channel", "channel_names": ["fg"]}]
                + axes(lambda a: {"tensor_id": "raw", "axis_id": a})[2:],
                "test_tensor": {
                    "source": "test_output.npy",
                    "sha256": _sha(folder / "test_output.npy"),
                },
            }
        ],
        "weights": entries,
    }
    (folder / "rdf.yaml").write_text(json.dumps(rdf, indent=1))
    return folder


def zip_package(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f.name)
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("bioimageio") / "unet")


@pytest.fixture(scope="module")
def unet(package) -> na.Network:
    return na.load_bioimageio(package, device="cpu")


def _zmuv(raw: np.ndarray) -> np.ndarray:
    """The model's declared preprocessing, written again: over channel, y and x."""
    raw = raw.astype(np.float64)
    return ((raw - raw.mean()) / (raw.std() + EPS)).astype(np.float32)


def _image(h: int = 64, w: int = 72, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((h, w)) * 4000 + 100).astype(np.uint16)


def test_the_package_loads_as_a_network(package, unet):
    assert unet.title == "Small U-Net"
    assert unet.in_channels == 1
    assert unet.find_layer(unet.layers[3]) is unet.layers[3]
    assert unet.input_sizes == ((16, 4), (16, 4))
    assert "weights.pt" in unet.description
    assert unet.sha256 == _sha(package / "weights.pt")
    torch.manual_seed(0)
    saved = SmallUNet().state_dict()
    for name, value in unet.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    # load_network takes the package too; the same network comes back (cached)
    assert na.load_network(package, device="cpu") is unet
    assert na.load_network(str(package / "rdf.yaml"), device="cpu") is unet


def test_a_zipped_package_gives_the_same_activations(package, unet, tmp_path):
    zipped = na.load_bioimageio(zip_package(package, tmp_path / "unet.zip"), device="cpu")
    image = _image(32, 36)
    np.testing.assert_array_equal(
        na.activations(zipped, image, "dec2.3"), na.activations(unet, image, "dec2.3")
    )


# every kind of layer: down path, pooled, bottleneck, after each ConvTranspose2d, the output
LAYERS = {
    "enc1.3": 1,
    "pool": 2,
    "enc2.3": 2,
    "bottleneck.3": 4,
    "up2": 2,
    "dec2.3": 2,
    "up1": 1,
    "cat_1": 1,
    "out": 1,
}


def _bilinear(native: np.ndarray, stride: float, offset: float, hw: tuple[int, int]):
    """Activation pixel i over image pixel O + S*i, bilinear between, edges held: the
    documented placement, written again with np.interp."""
    out = native
    for axis, n in ((1, hw[0]), (2, hw[1])):
        centres = offset + stride * np.arange(out.shape[axis])
        out = np.apply_along_axis(
            lambda v, c=centres, n=n: np.interp(np.arange(n), c, v), axis, out
        )
    return out


@pytest.mark.parametrize("name", LAYERS)
def test_every_kind_of_layer_lands_on_the_image_grid(unet, name):
    from torchvision.models.feature_extraction import create_feature_extractor

    image = _image()
    info = unet.find_layer(name)
    s = LAYERS[name]
    assert info.aligned and info.stride == s
    native = na.activations(unet, image, name, backend="torch")
    # the layer's values, by torchvision's feature extraction on the preprocessing written again
    x = torch.from_numpy(_zmuv(image))[None, None]
    with torch.inference_mode():
        want = create_feature_extractor(unet.model, [name])(x)[name][0].numpy()
    assert native.shape == want.shape == (info.channels, 64 // s, 72 // s)
    np.testing.assert_allclose(native, want, rtol=0, atol=1e-5 * max(np.abs(want).max(), 1e-6))
    aligned = np.asarray(na.activations(unet, image, name, resize=True, backend="torch"))
    assert aligned.shape == (info.channels, 64, 72)
    np.testing.assert_allclose(
        aligned, _bilinear(native, info.stride, info.offset, (64, 72)), rtol=0, atol=1e-5
    )
    if s == 1:  # stride 1, offset 0 (after the ConvTranspose2d too): the image grid itself
        assert info.offset == 0
        np.testing.assert_array_equal(aligned, native)


def test_the_output_is_the_models_own_output_on_the_same_pixels(unet):
    image = _image()
    out = np.asarray(na.activations(unet, image, "out", resize=True, backend="torch"))
    x = torch.from_numpy(_zmuv(image))[None, None]
    with torch.inference_mode():
        want = unet.model(x)[0].numpy()
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_the_output_moves_with_the_image(unet):
    # max pools twice: the output is equivariant to shifts by 4 pixels (and only those)
    image = _image(96, 96)
    base = np.asarray(na.activations(unet, image, "out", resize=True, backend="torch"))
    shifted = np.roll(image, (4, 8), axis=(0, 1))  # circular: same statistics
    moved = np.asarray(na.activations(unet, shifted, "out", resize=True, backend="torch"))
    inner = np.s_[:, 30:66, 30:66]  # away from the wrapped border by more than RF/2 = 23
    np.testing.assert_allclose(
        np.roll(base, (4, 8), axis=(1, 2))[inner], moved[inner], rtol=0, atol=1e-5
    )


def test_an_impulse_reaches_the_output_within_its_receptive_field_only(unet):
    info = unet.find_layer("out")
    assert info.receptive_field == 47
    image = np.zeros((64, 64), np.float32)
    image[::5, ::7] = 1.0  # texture, so that the ReLUs pass something everywhere
    poked = image.copy()
    poked[32, 28] += 50.0
    # intensity_range plays no part (raw values, per-image statistics): compare the model's
    # own layer on the two inputs with the same normalisation
    x = torch.from_numpy(np.stack([image, poked]))[:, None]
    with torch.inference_mode():
        out = unet.model(x)[:, 0].numpy()
    changed = np.argwhere(np.abs(out[1] - out[0]) > 1e-6)
    half = info.receptive_field // 2
    assert changed.size
    assert (np.abs(changed - [32, 28]) <= half).all()
    # and the derived support equals the measured one where ConvTranspose2d brings it back
    assert na.check_geometry(unet.model, ["up2", "up1", "out"]) == []


def test_stack_planes_are_normalised_each_on_their_own(unet):
    a, b = _image(32, 32, seed=2), _image(32, 32, seed=3) * 3
    stack = np.stack([a, b])
    got = na.activations(unet, stack, "dec1.3", backend="torch")
    np.testing.assert_allclose(got[1], na.activations(unet, b, "dec1.3", backend="torch"))
    np.testing.assert_allclose(got[0], na.activations(unet, a, "dec1.3", backend="torch"))


def test_a_dask_image_gives_the_numpy_result(unet):
    da = pytest.importorskip("dask.array")
    image = _image(64, 64)
    lazy = na.activations(unet, da.from_array(image, chunks=32), "up1", backend="torch")
    np.testing.assert_allclose(
        np.asarray(lazy), na.activations(unet, image, "up1", backend="torch"), atol=1e-6
    )


def test_scale_range_is_applied_with_the_planes_own_percentiles(tmp_path):
    pre = [
        {
            "id": "scale_range",
            "kwargs": {"axes": ["y", "x"], "min_percentile": 1, "max_percentile": 99.8},
        }
    ]
    net = na.load_bioimageio(build_package(tmp_path / "p", preprocessing=pre), device="cpu")
    raw = _image(32, 32).astype(np.float32)[None]
    lo, hi = np.percentile(raw, [1, 99.8])
    np.testing.assert_allclose(net.preprocess(raw), (raw - lo) / (hi - lo + EPS), atol=1e-4)
    image = _image(32, 32)
    assert not np.array_equal(image, raw[0] + 1)  # the caller's image is kept as it was
    before = image.copy()
    na.activations(net, image, "out")
    np.testing.assert_array_equal(image, before)


def test_a_size_the_model_does_not_take_is_refused_plainly(unet):
    with pytest.raises(na.ImageError, match=r"16 \+ a multiple of 4.*Crop it to 28x32"):
        na.activations(unet, _image(30, 33), "out")
    with pytest.raises(na.ImageError, match="Use a larger image"):
        na.activations(unet, _image(12, 40), "enc1.3")


def test_the_network_travels_to_a_dask_worker_as_its_package(unet):
    again = pickle.loads(pickle.dumps(unet))
    assert again is unet  # reloaded from the package: the cached network


def test_torchscript_weights_only_are_refused_with_the_reason(tmp_path):
    folder = build_package(tmp_path / "ts", weights="torchscript")
    with pytest.raises(BioimageioError, match="TorchScript weights only") as err:
        na.load_bioimageio(folder, device="cpu")
    assert "forward hooks" in str(err.value) and "pytorch_state_dict" in str(err.value)


def test_a_3d_model_is_refused_plainly(tmp_path):
    folder = build_package(tmp_path / "3d", z=True)
    with pytest.raises(BioimageioError, match=r"3D model \(its input has a z axis\)"):
        na.load_bioimageio(folder, device="cpu")


def test_weights_for_another_architecture_are_refused(tmp_path):
    folder = build_package(tmp_path / "w", kwargs_width=8)
    with pytest.raises(BioimageioError, match="Could not build Small U-Net"):
        na.load_bioimageio(folder, device="cpu")


def test_what_is_not_a_package_says_so(tmp_path):
    with pytest.raises(BioimageioError, match="no rdf.yaml or bioimageio.yaml"):
        na.load_bioimageio(tmp_path, device="cpu")
    with pytest.raises(BioimageioError, match="No bioimage.io package at"):
        na.load_bioimageio(tmp_path / "missing.zip", device="cpu")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(BioimageioError, match="not a zip file"):
        na.load_bioimageio(tmp_path / "broken.zip", device="cpu")
    folder = build_package(tmp_path / "invalid")
    rdf = json.loads((folder / "rdf.yaml").read_text())
    del rdf["inputs"]
    (folder / "rdf.yaml").write_text(json.dumps(rdf))
    with pytest.raises(BioimageioError, match="not a valid bioimage.io model description"):
        na.load_bioimageio(folder, device="cpu")


def test_a_format_0_4_package_is_converted_and_gives_the_same_network(package, unet, tmp_path):
    # most models in the zoo are described in format 0.4: axes as letters, preprocessing by name
    folder = tmp_path / "v04"
    shutil.copytree(package, folder)
    (folder / "rdf.yaml").write_text(
        f"""format_version: 0.4.10
type: model
name: Small U-Net
description: A small U-Net with transposed convolutions, for tests.
authors: [{{name: napari-activations tests}}]
cite: [{{text: napari-activations, url: "https://example.com"}}]
license: BSD-3-Clause
documentation: README.md
tags: [test]
test_inputs: [test_input.npy]
test_outputs: [test_output.npy]
timestamp: "2026-01-01T00:00:00"
inputs:
  - name: raw
    axes: bcyx
    data_type: float32
    data_range: [-.inf, .inf]
    shape: {{min: [1, 1, 16, 16], step: [0, 0, 4, 4]}}
    preprocessing:
      - {{name: zero_mean_unit_variance, kwargs: {{mode: per_sample, axes: cyx, eps: {EPS}}}}}
outputs:
  - name: mask
    axes: bcyx
    data_type: float32
    data_range: [-.inf, .inf]
    shape: {{reference_tensor: raw, scale: [1, 1, 1, 1], offset: [0, 0, 0, 0]}}
weights:
  pytorch_state_dict:
    source: weights.pt
    sha256: {_sha(folder / "weights.pt")}
    architecture: unet.py:SmallUNet
    architecture_sha256: {_sha(folder / "unet.py")}
    kwargs: {{in_channels: 1, out_channels: 1, width: 4}}
"""
    )
    with warnings.catch_warnings():  # the spec's own notes on converting the output shape
        warnings.simplefilter("ignore", UserWarning)
        old = na.load_bioimageio(folder, device="cpu")
    assert old.input_sizes == unet.input_sizes and old.in_channels == 1
    image = _image(32, 40)
    np.testing.assert_array_equal(
        na.activations(old, image, "out", backend="torch"),
        na.activations(unet, image, "out", backend="torch"),
    )
