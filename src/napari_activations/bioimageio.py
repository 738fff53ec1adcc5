"""bioimage.io models with PyTorch state_dict weights, as networks.

:func:`load_bioimageio` reads a local bioimage.io model package (a ``.zip``, or a folder with
``rdf.yaml`` / ``bioimageio.yaml``) with ``bioimageio.spec`` and builds its network with
``bioimageio.core`` (the optional extra ``napari-activations[bioimageio]``): the
architecture that the ``pytorch_state_dict`` weights entry names (its Python source, inside
the package, runs), the weights loaded with ``weights_only=True``, then
:func:`~napari_activations.load_network` on that module. From the description: the title
(its ``name``), the input channels, the sizes it takes, and its ``preprocessing``
(``zero_mean_unit_variance``, ``scale_range``, ...), which the compute applies to each
plane in place of the intensity scaling and mean/std of other networks.

Only 2D models with one input tensor of axes (batch, channel, y, x) are taken; TorchScript,
ONNX and TensorFlow weights are not (forward hooks and torch.fx, which read a network's
layers, do not work on them).
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .network import WeightsError, load_network

if TYPE_CHECKING:
    from .network import Network

__all__ = ["load_bioimageio", "is_bioimageio_package", "BioimageioError", "PACKAGE_FILES"]

PACKAGE_FILES = ("rdf.yaml", "bioimageio.yaml")
"""The description file names of a bioimage.io package, in the order they are looked for."""

_EXTRA = "pip install 'napari-activations[bioimageio]'"
_OTHER_WEIGHTS = {
    "torchscript": "TorchScript",
    "onnx": "ONNX",
    "tensorflow_saved_model_bundle": "TensorFlow",
    "tensorflow_js": "TensorFlow.js",
    "keras_hdf5": "Keras",
    "keras_v3": "Keras",
}


class BioimageioError(WeightsError):
    """A bioimage.io package that cannot be used; the message says why and what to do."""


def is_bioimageio_package(source: Any) -> bool:
    """Whether ``source`` is a path to a local bioimage.io package: a ``.zip`` file, a folder
    with ``rdf.yaml`` or ``bioimageio.yaml``, or such a file itself. Reads no file."""
    try:
        path = Path(source).expanduser()
    except TypeError:
        return False
    if path.is_dir():
        return any((path / name).is_file() for name in PACKAGE_FILES)
    return path.is_file() and (
        path.suffix.lower() == ".zip" or path.name.lower().endswith(PACKAGE_FILES)
    )


def _package(source: Any) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        for name in PACKAGE_FILES:
            if (path / name).is_file():
                return path / name
        raise BioimageioError(
            f"The folder {path} has no rdf.yaml or bioimageio.yaml: it is not a bioimage.io "
            "package. Pass the package's .zip file, or the folder it was unpacked into."
        )
    if not path.is_file():
        raise BioimageioError(f"No bioimage.io package at {path}. Check the path.")
    if path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
        raise BioimageioError(f"{path} is not a zip file (damaged?). Download it again.")
    return path


def _imports() -> tuple[Any, Any, Any]:
    try:
        from bioimageio.core.backends.pytorch_backend import load_torch_model
        from bioimageio.spec import load_model_description
        from bioimageio.spec.model import v0_5
    except ImportError as exc:
        raise BioimageioError(
            f"bioimage.io packages need bioimageio.core, which is not installed: {_EXTRA}"
        ) from exc
    return load_model_description, load_torch_model, v0_5


_CACHE: dict[tuple, Network] = {}
_CACHE_LOCK = threading.Lock()


def load_bioimageio(source: Any, *, device: Any = "auto") -> Network:
    """A bioimage.io model package with PyTorch state_dict weights, as a network.

    Loading runs the Python file of the model's architecture that the package holds (as
    bioimage.io's own tools do): load packages you trust.

    Parameters
    ----------
    source : str or path
        A local package: a ``.zip``, a folder with ``rdf.yaml`` or ``bioimageio.yaml``, or
        that file itself. Nothing is downloaded.
    device : "auto", "cpu", "cuda", "mps" or torch.device

    Returns
    -------
    Network
        Titled with the description's ``name``; :attr:`~Network.preprocess` applies the
        model's declared preprocessing to each whole plane (raw values: ``intensity_range``
        does not apply), :attr:`~Network.input_sizes` the sizes it takes. Cached per package
        file and device.

    Raises
    ------
    BioimageioError
        bioimageio.core not installed; not a package; an invalid description; no
        ``pytorch_state_dict`` weights (TorchScript, ONNX or TensorFlow only); inputs other
        than one (batch, channel, y, x) tensor (a z axis: a 3D model); weights that do not
        fit the architecture.
    """
    from .network import resolve_device

    path = _package(source)
    dev = resolve_device(device)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, str(dev))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    load_model_description, load_torch_model, v0_5 = _imports()
    try:
        # "latest": older (0.4) descriptions are converted; no io checks: nothing downloads
        descr = load_model_description(path, format_version="latest", perform_io_checks=False)
    except Exception as exc:  # noqa: BLE001 - the validator's ValueError or a YAML error
        raise BioimageioError(
            f"{path.name} is not a valid bioimage.io model description: {_first_lines(exc)}"
        ) from exc
    title = str(descr.name)
    weights = descr.weights.pytorch_state_dict
    if weights is None:
        formats = sorted({_OTHER_WEIGHTS.get(k, k) for k, v in descr.weights if v is not None})
        raise BioimageioError(
            f"{title} has {' and '.join(formats)} weights only. napari-activations needs "
            "PyTorch state_dict weights (pytorch_state_dict): it reads a network's layers "
            "with forward hooks and torch.fx, which do not work on TorchScript (a compiled "
            "graph), ONNX or TensorFlow models. Ask the model's authors for its "
            "pytorch_state_dict weights, or load the PyTorch model yourself and pass it to "
            "napari_activations.load_network(model)."
        )
    in_channels, sizes = _input_of(descr, v0_5, title)
    if str(weights.source).startswith(("http://", "https://")):
        raise BioimageioError(
            f"{title}'s weights are at {weights.source}, not in the package. Download the "
            "whole package (a .zip from bioimage.io) and load that."
        )
    try:
        module = load_torch_model(weights, load_state=True, devices=["cpu"])
    except Exception as exc:  # noqa: BLE001 - the package's own code, or its weights file
        raise BioimageioError(
            f"Could not build {title} from its package: {type(exc).__name__}: "
            f"{_first_lines(exc)}. Check that the package is complete and fits this "
            "PyTorch version."
        ) from exc
    side = _taken(224, sizes)  # the size layer shapes are first worked out at
    net = load_network(module, device=dev, in_channels=in_channels, title=title, input_size=side)
    net.weights = f"file:{Path(str(weights.source)).name}"
    net.sha256 = str(weights.sha256) if weights.sha256 is not None else None
    net.source = str(path.resolve())
    net.preprocess = Preprocessing(descr)
    net.input_sizes = sizes
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, net)


def _taken(n: int, sizes: tuple) -> int:
    """The smallest side from ``n`` up that both axes take (``(min, step)`` per axis)."""
    for side in range(n, n + 4096):
        if all(
            side >= low and (side - low) % step == 0 if step else side == low for low, step in sizes
        ):
            return side
    return max(low for low, _ in sizes)


def _first_lines(exc: BaseException, n: int = 4) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(line.strip() for line in lines[:n]) or type(exc).__name__


def _input_of(descr: Any, v0_5: Any, title: str) -> tuple[int, tuple]:
    """The input's channels and ``((min_h, step_h), (min_w, step_w))``."""
    if len(descr.inputs) != 1:
        raise BioimageioError(
            f"{title} takes {len(descr.inputs)} input tensors; napari-activations feeds a "
            "network one image."
        )
    tensor = descr.inputs[0]
    kinds = [(str(a.type), str(a.id)) for a in tensor.axes]
    if any(t == "space" and i == "z" for t, i in kinds):
        raise BioimageioError(
            f"{title} is a 3D model (its input has a z axis): napari-activations looks inside "
            "2D networks only, which take (batch, channel, y, x) images."
        )
    want = [("batch", "batch"), ("channel", "channel"), ("space", "y"), ("space", "x")]
    if [t for t, _ in kinds] != [t for t, _ in want] or [i for _, i in kinds[2:]] != ["y", "x"]:
        names = ", ".join(i for _, i in kinds)
        raise BioimageioError(
            f"{title}'s input has axes ({names}); napari-activations takes models whose "
            "input axes are (batch, channel, y, x), in that order."
        )
    channel = tensor.axes[1]
    sizes = []
    for axis in tensor.axes[2:]:
        size = axis.size
        if isinstance(size, int):
            sizes.append((size, 0))
        elif isinstance(size, v0_5.ParameterizedSize):
            sizes.append((int(size.min), int(size.step)))
        else:  # a size given by another tensor's: any size from 1
            sizes.append((1, 1))
    return len(channel.channel_names), tuple(sizes)


class Preprocessing:
    """A bioimage.io model's declared preprocessing of its input, run by bioimageio.core.

    Called on one whole plane, ``(C, H, W)`` raw values, it returns ``(C, H, W)`` float32:
    the plane as one sample of batch 1. Statistics (``zero_mean_unit_variance``,
    ``scale_range`` percentiles) are those of that plane alone, so a plane's result never
    depends on the planes seen before it (bioimageio.core would keep updating dataset
    statistics across samples).
    """

    def __init__(self, descr: Any):
        self.descr = descr
        self.steps = [str(p.id) for p in descr.inputs[0].preprocessing]

    def __call__(self, plane: np.ndarray) -> np.ndarray:
        from bioimageio.core import Sample, Tensor
        from bioimageio.core.proc_setup import setup_pre_and_postprocessing

        pre = setup_pre_and_postprocessing(self.descr, []).pre  # fresh: no stats carried over
        member = self.descr.inputs[0].id
        data = Tensor(plane[np.newaxis], dims=("batch", "channel", "y", "x"))
        sample = Sample(members={member: data}, stat={}, id=None)
        for op in pre:
            op(sample)
        out = sample.members[member].data.values[0]
        return np.asarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<bioimage.io preprocessing: {', '.join(self.steps) or 'none'}>"
