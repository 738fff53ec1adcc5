"""The napari plugin without a viewer: manifest, imports, sample data, layer properties."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import napari_activations as na
from napari_activations._napari_layers import (
    METADATA_KEY,
    ActivationResult,
    ChannelFirst,
    ChannelRanges,
    activation_layer_kwargs,
    activation_layer_name,
    channel_contrast_limits,
    expand_transform,
    starting_channel,
)
from napari_activations._sample_data import face, face_one_eye_covered, load_sample
from napari_activations.alignment import AlignedActivations
from napari_activations.layers import find_layer

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_activations" / "napari.yaml"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


# -- manifest and imports -------------------------------------------------------------------


def test_importing_the_package_loads_neither_torch_nor_qt():
    proc = run_python(
        "import sys, napari_activations\n"
        "bad = [m for m in ('torch', 'torchvision', 'onnxruntime', 'onnx', 'qtpy', 'PyQt6',"
        " 'PyQt5', 'PySide6')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    assert proc.returncode == 0, proc.stderr


def test_napari_plugin_scan_loads_neither_torch_nor_qt():
    # What napari does at start-up: discover plugins and read their manifests.
    proc = run_python(
        "import sys, npe2\n"
        "pm = npe2.PluginManager()\n"
        "pm.discover()\n"
        "mf = pm.get_manifest('napari-activations')\n"
        "assert mf.contributions.widgets, 'no widget'\n"
        "npe2.PluginManifest.from_distribution('napari-activations')\n"
        "bad = [m for m in ('torch', 'torchvision', 'onnxruntime', 'onnx', 'qtpy', 'PyQt6',"
        " 'napari_activations._widget')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    assert proc.returncode == 0, proc.stderr


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    proc = subprocess.run(
        [str(npe2), "validate", "napari-activations", "--imports"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_manifest_contributions():
    import npe2

    mf = npe2.PluginManifest.from_file(MANIFEST)
    assert "SqueezeNet activations" in [w.display_name for w in mf.contributions.widgets]
    assert {s.display_name for s in mf.contributions.sample_data} == {
        "Face",
        "Face, one eye covered",
    }
    ids = {c.id for c in mf.contributions.commands}
    assert "napari-activations.show_activations" in ids
    # The repository-root manifest is the package's, not a copy that can drift.
    assert (ROOT / "napari.yaml").resolve() == MANIFEST.resolve()


def test_show_activations_is_public_api():
    import napari_activations as na
    from napari_activations._napari_layers import show_activations

    assert na.show_activations is show_activations
    assert "show_activations" in na.__all__


@pytest.mark.slow
def test_plugin_found_from_built_wheel(tmp_path):
    """The wheel and sdist carry the manifest, the built-in weights and their licence, and
    napari finds the plugin from a plain install of the wheel, which loads those weights."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--sdist",
            "--no-isolation",
            "--outdir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("napari_activations-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [
        "napari.yaml",
        "data/face.png",
        "data/squeezenet1_1_caffe_imagenet.pth",
        "data/SQUEEZENET_WEIGHTS_LICENSE.txt",
    ]
    for name in shipped:
        assert f"napari_activations/{name}" in names, name
    sdist = next((tmp_path / "dist").glob("napari_activations-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for name in shipped:
        assert f"src/napari_activations/{name}" in in_sdist, name
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert "napari.manifest" in zipfile.ZipFile(wheel).read(entry[0]).decode()

    # A fresh venv that sees this environment's packages (napari, torch, ...) as a plain path,
    # so that the editable install's own .pth is not processed: napari_activations comes
    # from the wheel alone.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    here = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "_parent_env.pth").write_text("\n".join(here) + "\n")
    py = env_dir / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    check = subprocess.run(
        [
            str(py),
            "-c",
            (
                "import npe2, napari_activations, json\n"
                "pm = npe2.PluginManager(); pm.discover()\n"
                "mf = pm.get_manifest('napari-activations')\n"
                "net = napari_activations.load_squeezenet(device='cpu')\n"
                "print(json.dumps([napari_activations.__file__,"
                " [s.key for s in mf.contributions.sample_data], net.weights]))\n"
            ),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    location, samples, weights = json.loads(check.stdout.strip().splitlines()[-1])
    assert str(env_dir) in location  # the wheel's copy, not the source tree
    assert samples == ["face", "face_one_eye_covered"]
    assert weights == "caffe"


# -- the open-napari command ------------------------------------------------------------------


def test_demo_uses_the_builtin_weights_or_the_variable_and_says_when_it_cannot(
    monkeypatch, tmp_path
):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "napari_demo", ROOT / "scripts" / "napari_demo.py"
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    # The conftest points TORCH_HOME at an empty folder and unsets the variable.
    assert demo.find_weights()[0] == "caffe"
    monkeypatch.setenv("NAPARI_ACTIVATIONS_WEIGHTS", str(tmp_path / "missing.pth"))
    weights, why = demo.find_weights()
    assert weights is None and "missing.pth" in why
    assert "NAPARI_ACTIVATIONS_WEIGHTS" in demo.how_to_fix()
    present = tmp_path / "present.pth"
    present.write_bytes(b"x")
    monkeypatch.setenv("NAPARI_ACTIVATIONS_WEIGHTS", str(present))
    assert demo.find_weights()[0] == "DEFAULT"  # load_squeezenet reads the variable itself


# -- sample data ----------------------------------------------------------------------------


def test_face_sample_is_the_reference_crop():
    import skimage.data

    ((data, meta, kind),) = face()
    assert kind == "image" and meta["name"] == "Face" and meta["rgb"]
    np.testing.assert_array_equal(data, skimage.data.astronaut()[30:250, 120:300])


def test_covered_face_differs_only_at_the_left_eye():
    ((open_eye, _, _),) = face()
    ((covered, meta, _),) = face_one_eye_covered()
    assert meta["name"] == "Face, one eye covered"
    assert covered.shape == open_eye.shape == (220, 180, 3)
    rows, cols = np.nonzero((covered != open_eye).any(axis=-1))
    # The image-left eye sits around row 70, columns 70-97 of the crop.
    assert rows.min() >= 60 and rows.max() <= 80
    assert cols.min() >= 66 and cols.max() <= 100
    # Filled with skin: no dark pupil left.
    assert covered[rows, cols].mean() > open_eye[rows, cols].mean() + 20


@pytest.mark.real_weights
def test_eye_channels_lose_their_response_at_the_covered_eye(real_net):
    """The reference workflow's step 7, on the shipped sample pair."""
    import napari_activations as na

    layer = "fire6-relu_squeeze1x1"
    opened = np.asarray(na.activations(real_net, load_sample("face"), layer, resize=True))
    covered = np.asarray(
        na.activations(real_net, load_sample("face_one_eye_covered"), layer, resize=True)
    )
    left_eye = (slice(64, 78), slice(72, 94))
    right_eye = (slice(62, 80), slice(110, 145))
    for channel in (13, 46):  # MATLAB's channels 14 and 47
        assert opened[channel][left_eye].mean() > 2 * opened[channel].mean()
        assert covered[channel][left_eye].mean() < 0.5 * opened[channel][left_eye].mean()
        assert covered[channel][right_eye].mean() == pytest.approx(
            opened[channel][right_eye].mean(), rel=0.1
        )


# -- layer properties -----------------------------------------------------------------------


def fake_source(ndim=2, **kw):
    from napari.layers import Image

    return Image(np.zeros((5,) * (ndim - 2) + (40, 30)), **kw)


def fake_result(native, layer="conv1", hw=(40, 30), trained=True):
    info = find_layer(layer)
    net = SimpleNamespace(
        description="test net",
        weights="/w.pth",
        sha256="abc",
        trained=trained,
        mean=(0.4, 0.4, 0.4),
        std=(0.2, 0.2, 0.2),
        device="cpu",
    )
    return ActivationResult(
        AlignedActivations(native, info, hw),
        info,
        net,
        1.0,
        (0.0, 255.0),
        "Cells",
        backend="onnxruntime",
    )


def test_layer_name():
    assert activation_layer_name("Face", "features.0") == "Face: conv1"


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scale": (0.5, 2.0), "translate": (10.0, -5.0)},
        {"scale": (0.3, 0.7), "translate": (1.0, 2.0), "rotate": 30, "shear": [0.2]},
        {"affine": np.array([[1.0, 0.2, 3.0], [0.0, 2.0, -1.0], [0.0, 0.0, 1.0]])},
    ],
)
def test_expanded_transform_keeps_the_image_world_geometry(kw):
    from napari.layers import Image

    source = fake_source(**kw)
    result = Image(np.zeros((7, 40, 30)), **expand_transform(source, 1))
    corners = np.array([[y, x] for y in (0, 39) for x in (0, 29)], dtype=float)
    for channel in (0, 6):
        with_channel = np.column_stack([np.full(len(corners), channel), corners])
        mapped = np.array([result.data_to_world(p) for p in with_channel])
        np.testing.assert_allclose(mapped[:, 0], channel)  # the channel axis is its index
        np.testing.assert_allclose(
            mapped[:, 1:], [source.data_to_world(p) for p in corners], atol=1e-9
        )


def test_per_channel_contrast_is_mat2gray_and_diverging_is_centred():
    native = np.zeros((3, 4, 5), dtype=np.float32)
    native[0] = np.linspace(-2, 1, 20).reshape(4, 5)
    native[1] = np.linspace(0, 10, 20).reshape(4, 5)
    native[2] = 3.0  # constant: still a valid range
    pre = channel_contrast_limits(native, find_layer("conv1"))
    np.testing.assert_allclose(pre[:2], [[-2, 2], [-10, 10]])
    post = channel_contrast_limits(native, find_layer("relu_conv1"))
    np.testing.assert_allclose(post[:2], [[-2, 1], [0, 10]])
    assert post[2, 1] > post[2, 0]
    whole = channel_contrast_limits(native, find_layer("relu_conv1"), "global")
    np.testing.assert_allclose(whole, [[-2, 10]] * 3)
    assert na.strongest_channels(native, 1, include_border=True)[0][0] == 1
    # The slider starts on the same channel (here every pixel counts).
    acts = AlignedActivations(native, find_layer("relu_conv1"), (4, 5))
    assert starting_channel(ChannelRanges(acts, include_border=True)) == 1


def test_derived_layers_are_one_definition_for_every_widget():
    from napari_activations._layer_kinds import (
        ATTRIBUTION_KEY,
        DIFFERENCE_KEY,
        MONTAGE_KEY,
        channel_metadata,
        is_derived_layer,
    )

    def layer(key=None):
        return SimpleNamespace(metadata={} if key is None else {key: {"k": key}})

    kinds = [METADATA_KEY, DIFFERENCE_KEY, MONTAGE_KEY, ATTRIBUTION_KEY]
    assert all(is_derived_layer(layer(key)) for key in kinds)
    assert not is_derived_layer(layer()) and not is_derived_layer(layer("someone_else"))
    assert not is_derived_layer(SimpleNamespace())  # no metadata at all
    # Only activation and difference layers have a channel axis first.
    assert [channel_metadata(layer(key)) is not None for key in kinds] == [
        True,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize("weights", ["torchvision", "caffe"])
def test_network_for_reads_the_weights_of_activation_and_difference_layers(weights):
    from napari_activations._analysis_layers import network_for
    from napari_activations._layer_kinds import DIFFERENCE_KEY
    from napari_activations.network import weights_metadata

    made_by = SimpleNamespace(weights=weights, trained=True, sha256=None, description="d")
    meta = weights_metadata(made_by)
    for key in (METADATA_KEY, DIFFERENCE_KEY):
        layer = SimpleNamespace(name="x", metadata={key: {"weights": meta}})
        assert network_for(layer) == weights, key


def test_layer_kwargs_colormaps_labels_and_metadata():
    rng = np.random.default_rng(0)
    native = rng.normal(size=(64, 19, 14)).astype(np.float32)
    native[17] += 10
    source = fake_source(scale=(0.5, 2.0), axis_labels=("y", "x"))
    kw = activation_layer_kwargs(source, fake_result(native))
    assert kw["name"] == "Cells: conv1"
    assert kw["axis_labels"] == ("conv1 channel", "y", "x")
    assert kw["scale"] == (1.0, 0.5, 2.0)
    assert kw["colormap"].name == "activation blue-red"  # conv1 is before its ReLU
    lo, hi = kw["contrast_limits"]
    assert lo == -hi and hi == pytest.approx(np.abs(native[17]).max())
    meta = kw["metadata"][METADATA_KEY]
    assert meta["layer"]["name"] == "conv1" and meta["layer"]["module"] == "features.0"
    assert (meta["geometry"]["stride"], meta["geometry"]["offset"]) == (2, 1.0)
    assert meta["weights"]["sha256"] == "abc" and meta["weights"]["trained"]
    assert meta["normalisation"]["intensity_range"] == [0.0, 255.0]
    assert meta["backend"] == {"name": "onnxruntime", "precision": "float32", "device": "cpu"}
    json.dumps(meta)  # plain values: saved with the layer, readable later

    post = activation_layer_kwargs(source, fake_result(np.abs(native), "relu_conv1"))
    assert post["colormap"].name == "activation magma"
    assert post["opacity"] < 1  # the image shows through


def test_channel_first_view_of_a_stack():
    info = find_layer("conv1")
    native = np.random.default_rng(1).normal(size=(3, 64, 19, 14)).astype(np.float32)
    stack = AlignedActivations(native, info, (40, 30))
    view = ChannelFirst(stack)
    assert view.shape == (64, 3, 40, 30)
    full = np.moveaxis(np.asarray(stack), 1, 0)
    np.testing.assert_allclose(np.asarray(view), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view[5, 2], full[5, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view[5], full[5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view[2:4, 1, 3:9], full[2:4, 1, 3:9], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(view[:, 0, 7, 7], full[:, 0, 7, 7], rtol=1e-5, atol=1e-6)
