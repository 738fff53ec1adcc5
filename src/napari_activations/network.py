"""Loading networks with their weights.

- :func:`load_squeezenet`: SqueezeNet v1.1, the default network, with the built-in reference
  weights (the original Caffe release behind MATLAB's ``squeezenet``), torchvision's
  download, a local file, or random.
- :func:`load_network`: any of :func:`list_networks` (SqueezeNet and torchvision's
  classification CNNs, by torchvision's builder names) or the user's own ``torch.nn.Module``.

A network is built once per (network, weights, device) and cached, so the widget and scripts
that load it repeatedly never rebuild it. What a network *is* (layers, geometry, sizes, how to
run it up to a layer) is its :attr:`Network.arch` (:mod:`napari_activations.architecture`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import os
import pickle
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .architecture import SQUEEZENET, Architecture, GraphArchitecture
from .layers import LayerInfo

if TYPE_CHECKING:
    import torch

__all__ = [
    "Network",
    "UnknownNetworkError",
    "load_squeezenet",
    "load_network",
    "list_networks",
    "NETWORK_TITLES",
    "resolve_device",
    "default_weights_path",
    "builtin_weights_path",
    "resolve_weights",
    "describe_weights",
    "weights_metadata",
    "WEIGHTS_CHOICES",
    "WeightsError",
    "WeightsUnavailableError",
    "DeviceUnavailableError",
    "WEIGHTS_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

WEIGHTS_ENV = "NAPARI_ACTIVATIONS_WEIGHTS"
"""Environment variable: a state_dict file that ``weights="DEFAULT"`` resolves to."""

WEIGHTS_CHOICES = {
    "caffe": "the original SqueezeNet v1.1 ImageNet weights (Caffe release, as in MATLAB), "
    "built in",
    "torchvision": "torchvision's SqueezeNet1_1_Weights.IMAGENET1K_V1 (downloaded once into "
    "the torch hub cache)",
}
"""The named weights: ``weights="caffe"`` (the default) or ``weights="torchvision"``."""

BUILTIN_WEIGHTS_FILE = "squeezenet1_1_caffe_imagenet.pth"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownNetworkError(ValueError):
    """A network name that :func:`load_network` does not know; the message lists the closest."""


class WeightsError(RuntimeError):
    """The weights could not be loaded; the message says why and what to do."""


class DeviceUnavailableError(ValueError):
    """The device asked for is not available on this machine."""


class WeightsUnavailableError(WeightsError):
    """torchvision's pretrained weights are neither cached nor downloadable."""


@dataclass(eq=False)
class Network:
    """A network ready for inference, with what is known about its weights.

    Attributes
    ----------
    model : torch.nn.Module
        The model in eval mode, on :attr:`device` (torchvision's ``SqueezeNet`` for the
        default network).
    weights : str
        Which weights: ``"caffe"`` (built in), ``"torchvision"``, a torchvision weights name
        (``"IMAGENET1K_V2"``), ``"file:<file name>"``, ``"module"`` (a model given as it is)
        or ``"random"``. Never a machine path.
    trained : bool
        False for random weights: their activations mean nothing.
    categories : list of str or None
        Class names in output order (ImageNet's 1000 for the built-in networks), or None for
        a model that is not a classifier or did not say.
    device : torch.device
    sha256 : str or None
        Hash of the weights file, where there is one.
    mean, std : tuple of float
        Per input channel: the network sees ``(x - mean) / std`` for intensities ``x`` in
        [0, 1] (ImageNet's for the built-in networks; 0 and 1 for a model that declares none).
    source : str or None
        The ``weights`` argument that loads these weights again (for a file, its resolved
        path; kept out of the description and layer metadata).
    arch : Architecture
        Layers, geometry, sizes and how to run the network up to a layer.
    preprocess : callable or None
        The network's own input preparation, in place of the intensity scaling and
        :attr:`mean` / :attr:`std`: called on one whole plane's raw values, ``(C, H, W)``
        float32, it returns the network's input, ``(C, H, W)`` float32 (a bioimage.io
        model's declared ``preprocessing``, such as ``zero_mean_unit_variance``). None: the
        intensities in [0, 1], then ``(x - mean) / std``.
    input_sizes : ((int, int), (int, int)) or None
        ``((min_h, step_h), (min_w, step_w))``: the network takes heights
        ``min_h + k * step_h`` and widths ``min_w + k * step_w`` only (a U-Net whose skip
        connections need sizes divisible by its total stride). None: any size from the
        layer's minimum.
    """

    model: Any
    weights: str
    trained: bool
    categories: list[str] | None
    device: Any
    sha256: str | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    source: str | None = field(default=None, repr=False)
    arch: Architecture = field(default=SQUEEZENET, repr=False)
    preprocess: Any = field(default=None, repr=False)
    input_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def name(self) -> str:
        """The network's short name (``"squeezenet1_1"``, ``"resnet50"``, ``"module:UNet"``)."""
        return self.arch.name

    @property
    def title(self) -> str:
        """The network's name for people (``"SqueezeNet v1.1"``, ``"ResNet-50"``)."""
        return self.arch.title

    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        """The layer table, in network order: rows with ``name``, ``channels``, ``stride``,
        ``offset``, ``receptive_field``, ``after_relu``, ``aligned`` (see
        :class:`~napari_activations.LayerInfo`)."""
        return self.arch.layers

    @property
    def in_channels(self) -> int:
        """Input channels the network takes (3 for RGB networks)."""
        return self.arch.in_channels

    def find_layer(self, layer: str | LayerInfo) -> LayerInfo:
        """The row of one of this network's layers, by name (case-insensitive)."""
        return self.arch.find_layer(layer)

    @property
    def description(self) -> str:
        """One line for people: the network, the weights and the device."""
        title = self.arch.title
        if not self.trained:
            return (
                f"{title} with RANDOM, UNTRAINED weights on {self.device} "
                "(for tests only: its activations mean nothing)"
            )
        if self.weights == "caffe":
            what = "original Caffe ImageNet weights (MATLAB's, built in)"
        elif self.weights == "torchvision":
            what = "torchvision's ImageNet weights (IMAGENET1K_V1)"
        elif self.weights == "module":
            what = "its own weights"
        elif self.weights.startswith("file:"):
            what = f"weights from {self.weights.removeprefix('file:')}"
            if self.sha256:
                what += f" (sha256 {self.sha256[:12]})"
        else:
            what = f"torchvision's weights {self.weights}"
        return f"{title}, {what}, on {self.device}"

    def __repr__(self) -> str:
        return f"<Network: {self.description}>"

    def __dask_tokenize__(self) -> tuple:
        # dask names each chunk's task by hashing its arguments; hashing the dataclass would
        # walk every weight tensor, once per chunk (seconds for a graph of a few hundred).
        return (
            "napari_activations.Network",
            self.arch.name,
            self.weights,
            self.sha256,
            str(self.device),
            id(self.model),
        )

    def __reduce__(self):
        # Pickled as how to load it, not as tensors: a dask worker loads (and caches) its own
        # copy, so a graph that names this network stays small. A user's model has no other
        # way to be loaded again, so it travels as itself.
        if self.arch is SQUEEZENET:
            return (_load_pickled, (self.source, self.device.type))
        if self.arch.name in NETWORK_TITLES:
            return (_load_pickled_named, (self.arch.name, self.source, self.device.type))
        if self.source is not None and self.preprocess is not None:
            from .bioimageio import is_bioimageio_package, load_bioimageio

            if is_bioimageio_package(self.source):  # its code lives in the package
                load = functools.partial(load_bioimageio, device=self.device.type)
                return (load, (self.source,))
        return (
            _module_network,
            (self.model, self.weights, self.trained, self.categories, self.mean, self.std),
        )


_CACHE: dict[tuple, Network] = {}
_CACHE_LOCK = threading.Lock()


def resolve_device(device: Any = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is checked."""
    import torch

    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"{device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'mps'."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "device='cuda' was asked for, but PyTorch sees no CUDA GPU here; "
            "use device='auto' or 'cpu'."
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DeviceUnavailableError(
            "device='mps' was asked for, but Apple MPS is not available here; "
            "use device='auto' or 'cpu'."
        )
    return dev


def default_weights_path() -> Path:
    """Where torchvision keeps (or would keep) its SqueezeNet 1.1 download.

    ``$TORCH_HOME/hub/checkpoints/squeezenet1_1-b8a52dc0.pth`` (``~/.cache/torch`` by default).
    """
    import torch
    from torchvision.models import SqueezeNet1_1_Weights

    url = SqueezeNet1_1_Weights.DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def weights_metadata(network: Network) -> dict[str, Any]:
    """Plain, JSON-able values saying which weights made a result (in napari layer metadata
    and exports): ``description``, ``name`` (:attr:`Network.weights`), ``sha256``, ``trained``.
    """
    return {
        "description": network.description,
        "name": network.weights,
        "sha256": network.sha256,
        "trained": bool(network.trained),
    }


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_SAFE_GLOBAL_MODULES = ("torch", "collections", "numpy")


def _pickle_globals(path: Path) -> list[str] | None:
    """The ``module.name`` globals that the pickle in ``path`` would import, read without
    running it (a torch zip file's ``data.pkl`` or a raw pickle); None where it is no pickle."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                data = zf.read(name)
        else:
            data = path.read_bytes()
        found, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # not a pickle at all: damaged, or another kind of file
        return None


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise WeightsError(
            f"No weights file at {path}. Check the path, or use "
            "weights='DEFAULT' for the built-in weights."
        )
    if path.stat().st_size == 0:
        raise WeightsError(f"The weights file {path} is empty. Download it again.")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols, for any raw pickle
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ) as exc:
        unsafe = [
            g for g in (_pickle_globals(path) or []) if g.split(".")[0] not in _SAFE_GLOBAL_MODULES
        ]
        if unsafe:
            raise WeightsError(
                f"Refused to load {path}: it is a pickle that would import and call "
                f"{unsafe[0]!r}, so loading it could run code. Only plain weights are "
                "loaded: save them with torch.save(model.state_dict(), path)."
            ) from exc
        if isinstance(exc, pickle.UnpicklingError) and "global" in str(exc).lower():
            raise WeightsError(
                f"Refused to load {path}: it holds Python objects other than tensors, and "
                "loading it could run code. Use a plain state_dict saved with "
                "torch.save(model.state_dict(), path)."
            ) from exc
        raise WeightsError(
            f"Could not read {path}: it is damaged or not a PyTorch weights "
            f"file ({type(exc).__name__}). Download or save it again."
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise WeightsError(f"{path} is not a state_dict (a mapping of names to tensors).")
    return state


def builtin_weights_path() -> Path:
    """The built-in reference weights file inside the package.

    The original SqueezeNet v1.1 ImageNet weights (the Caffe release behind MATLAB's
    ``squeezenet``; BSD-2-Clause, licence beside the file), with Caffe's input convention
    folded into ``conv1`` so that they take torchvision's ImageNet preprocessing. Stored as
    float16 (the precision of the upstream release) except ``conv1``, float32; loaded as
    float32.
    """
    return Path(__file__).resolve().parent / "data" / BUILTIN_WEIGHTS_FILE


def _read_builtin() -> dict:
    state = _read_state_dict(builtin_weights_path())
    return {k: v.float() for k, v in state.items()}


def _apply_state_dict(model: Any, state: dict, source: str, title: str = "SqueezeNet 1.1") -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        keys = model.state_dict()
        missing = [k for k in keys if k not in state]
        unexpected = [k for k in state if k not in keys]
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {missing[0]!r})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if not detail:
            detail.append("tensor shapes differ")
        raise WeightsError(
            f"{source} is not a {title} state_dict: {'; '.join(detail)}. Load it with the "
            "network it was saved from."
        ) from exc


def _download_default(progress: bool) -> dict:
    """torchvision's SqueezeNet 1.1 state_dict: from the hub cache, else downloaded into it."""
    from torchvision.models import SqueezeNet1_1_Weights

    weights = SqueezeNet1_1_Weights.DEFAULT
    path = default_weights_path()
    if path.is_file():
        # Read like any local file: never unpickle objects (torch.hub's default would), and
        # a damaged cache file is reported as such, not as a failed download.
        return _read_state_dict(path)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as exc:  # urllib, ssl, socket, hash check: all end the same way for users
        if path.is_file():  # the download worked; reading it did not
            return _read_state_dict(path)
        raise WeightsUnavailableError(
            f"Could not get torchvision's pretrained SqueezeNet 1.1 weights "
            f"({type(exc).__name__}: {exc}).\n"
            f"  URL: {weights.url}\n"
            f"  A file downloaded by hand is picked up at: {path}\n"
            f"  Or point the environment variable {WEIGHTS_ENV} at a SqueezeNet 1.1 "
            "state_dict file, or pass weights='path/to/file.pth'."
        ) from exc


def _choice(weights: str) -> str | None:
    """``"caffe"``, ``"torchvision"`` or None for a string that names no weights choice."""
    w = weights.strip().lower()
    if w in WEIGHTS_CHOICES:
        return w
    if w in ("matlab", "builtin", "built-in", "reference"):
        return "caffe"
    if w in ("imagenet1k_v1",):
        return "torchvision"
    return None


def resolve_weights(weights: str | os.PathLike | None = "DEFAULT") -> str | Path | None:
    """Which weights ``weights`` names: ``"caffe"``, ``"torchvision"``, a file, or None.

    The one place that says where the weights come from: ``"DEFAULT"`` is the file named by
    ``$NAPARI_ACTIVATIONS_WEIGHTS`` where that is set, else ``"caffe"`` (the built-in ones);
    other names as :func:`load_squeezenet` lists them. Reads no weights.

    Returns
    -------
    str, pathlib.Path or None
        ``"caffe"`` or ``"torchvision"``; the path of a state_dict file (``~`` expanded);
        None for random weights.

    Raises
    ------
    WeightsError
        A file that is not there, or a value that names no weights.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights.strip().upper() == "DEFAULT":
        env = os.environ.get(WEIGHTS_ENV, "").strip()
        if not env:
            return "caffe"
        path = Path(env).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{WEIGHTS_ENV} names {path}, but there is no file there. "
                f"Fix or unset {WEIGHTS_ENV}."
            )
        return path
    if isinstance(weights, str) and _choice(weights) is not None:
        return _choice(weights)
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"No weights file at {path}. Check the path, or use "
                "weights='caffe' (built in) or 'torchvision'."
            )
        return path
    raise WeightsError(
        f"weights must be 'DEFAULT', 'caffe', 'torchvision', a file path or "
        f"None, not {type(weights).__name__}."
    )


def describe_weights(weights: str | os.PathLike | None, network: Network | None = None) -> str:
    """One line for people: which weights ``weights`` names (a file by its name only, never
    its folder), or ``network.description`` where the network is given. Never raises: a
    missing file is described by its name."""
    if network is not None:
        return network.description
    if weights is None:
        return "random, untrained (for tests only: the activations mean nothing)"
    try:
        source = resolve_weights(weights)
    except WeightsError:
        source = None
    if isinstance(source, str):
        return WEIGHTS_CHOICES[source]
    if isinstance(weights, str) and weights.strip().upper() == "DEFAULT":
        env = os.environ.get(WEIGHTS_ENV, "").strip()
        return f"file {Path(env).name} (from ${WEIGHTS_ENV})"
    return f"file {Path(os.fspath(weights)).name}"


def load_squeezenet(
    weights: str | os.PathLike | None = "DEFAULT", *, device: Any = "auto", progress: bool = True
) -> Network:
    """Build SqueezeNet v1.1 with pretrained or given weights, ready for inference.

    Parameters
    ----------
    weights : "DEFAULT", "caffe", "torchvision", path or None
        ``"DEFAULT"``: the file named by ``$NAPARI_ACTIVATIONS_WEIGHTS`` when that is set, else
        ``"caffe"``. ``"caffe"``: the built-in original SqueezeNet v1.1 ImageNet weights (the
        Caffe release behind MATLAB's ``squeezenet``, so MATLAB's channel numbers hold; offline,
        on every install). ``"torchvision"``: torchvision's separately trained
        ``SqueezeNet1_1_Weights.IMAGENET1K_V1``, downloaded once into the torch hub cache
        (``$TORCH_HOME``). A path: a ``squeezenet1_1`` state_dict, loaded with
        ``weights_only=True`` and ``strict=True``. ``None``: random weights (seeded, for tests).
    device : "auto", "cpu", "cuda", "mps" or torch.device
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    progress : bool
        Show a download progress bar (``"torchvision"`` only).

    Returns
    -------
    Network
        Cached: the same weights on the same device return the same object.

    Raises
    ------
    WeightsError
        Unreadable, unsafe or mismatched weights; :class:`WeightsUnavailableError` when
        torchvision's weights can be neither found nor downloaded.
    """
    import torch
    from torchvision.models import SqueezeNet1_1_Weights, squeezenet1_1

    dev = resolve_device(device)
    categories = list(SqueezeNet1_1_Weights.DEFAULT.meta["categories"])

    source = resolve_weights(weights)
    path = source if isinstance(source, Path) else None
    if path is not None:
        key: tuple = _file_key(path)
    else:
        key = (source or "random",)
    key = key + (str(dev),)

    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = squeezenet1_1(weights=None)
        sha = None
        source: str | None = key[0]
        if key[0] == "random":
            name, trained, source = "random", False, None
        elif key[0] == "caffe":
            _apply_state_dict(model, _read_builtin(), "The built-in weights file")
            name, trained, sha = "caffe", True, _sha256(builtin_weights_path())
        elif key[0] == "torchvision":
            _apply_state_dict(model, _download_default(progress), str(default_weights_path()))
            name, trained = "torchvision", True
            sha = _sha256(default_weights_path())
        else:
            assert path is not None
            _apply_state_dict(model, _read_state_dict(path), str(path))
            name, trained, sha = f"file:{path.name}", True, _sha256(path)
            source = str(path.resolve())
        model.eval().to(dev)
        for p in model.parameters():
            p.requires_grad_(False)
        net = Network(
            model=model,
            weights=name,
            trained=trained,
            categories=categories,
            device=dev,
            sha256=sha,
            source=source,
        )
        _CACHE[key] = net
        return net


def loaded_network(sha256: str | None, device: Any = None) -> Network | None:
    """A network already loaded with the weights of this hash (on ``device``, if given)."""
    with _CACHE_LOCK:
        for net in _CACHE.values():
            if (
                sha256 is not None
                and net.sha256 == sha256
                and (device is None or str(net.device) == str(device))
            ):
                return net
    return None


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return ("file", str(path.resolve()), st.st_size, st.st_mtime_ns)


def _load_pickled(weights: str | None, device: str) -> Network:
    """Unpickling a :class:`Network`: load it on this machine, falling back to the CPU."""
    try:
        return load_squeezenet(weights, device=device, progress=False)
    except ValueError:
        return load_squeezenet(weights, device="cpu", progress=False)


def _load_pickled_named(name: str, weights: str | None, device: str) -> Network:
    try:
        return load_network(name, weights, device=device, progress=False)
    except ValueError:
        return load_network(name, weights, device="cpu", progress=False)


def _module_network(model, weights, trained, categories, mean, std) -> Network:
    net = load_network(model, device="cpu", categories=categories, mean=mean, std=std)
    net.weights, net.trained = weights, trained
    return net


# --- any network -----------------------------------------------------------------------------

NETWORK_TITLES: dict[str, str] = {
    "squeezenet1_1": "SqueezeNet v1.1",
    "alexnet": "AlexNet",
    "vgg16": "VGG-16",
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
    "googlenet": "GoogLeNet",
    "inception_v3": "Inception v3",
    "mobilenet_v2": "MobileNet v2",
    "mobilenet_v3_large": "MobileNet v3 (large)",
    "mobilenet_v3_small": "MobileNet v3 (small)",
    "efficientnet_b0": "EfficientNet-B0",
    "densenet121": "DenseNet-121",
    "convnext_tiny": "ConvNeXt-Tiny",
    "regnet_y_400mf": "RegNetY-400MF",
}
"""The networks :func:`load_network` knows by name (torchvision's builder names), with their
names for people. SqueezeNet v1.1 first: the default."""

MEASURED_BYTES_PER_PIXEL: dict[str, int] = {
    "squeezenet1_1": 160,
    "alexnet": 50,
    "vgg16": 850,
    "resnet18": 155,
    "resnet50": 275,
    "googlenet": 170,
    "inception_v3": 220,
    "mobilenet_v2": 260,
    "mobilenet_v3_large": 225,
    "mobilenet_v3_small": 95,
    "efficientnet_b0": 305,
    "densenet121": 295,
    "convnext_tiny": 430,
    "regnet_y_400mf": 180,
}
"""Peak working memory of one untiled forward pass to each network's last local layer, bytes
per input pixel, what tiling plans with: the larger of torch's and ONNX Runtime's, measured on
1024x1024 RGB (``benchmarks/bench_networks.py --bytes-all``, ``ru_maxrss`` in a fresh process),
plus 10 %."""

_ALIASES = {"squeezenet": "squeezenet1_1", "squeezenet1.1": "squeezenet1_1"}
_INCEPTIONS = ("googlenet", "inception_v3")
_ARCH_CACHE: dict[str, Architecture] = {}
_ARCH_LOCK = threading.Lock()


def list_networks() -> list[str]:
    """Names :func:`load_network` accepts, SqueezeNet v1.1 (the default) first.

    torchvision's classification CNNs, by their builder names (``"resnet50"``); their titles
    are in :data:`NETWORK_TITLES`. Any ``torch.nn.Module`` is accepted as well.
    """
    return list(NETWORK_TITLES)


def _network_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in NETWORK_TITLES:
        close = difflib.get_close_matches(key, list(NETWORK_TITLES), 3, 0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNetworkError(
            f"Unknown network {name!r}.{hint} See napari_activations.list_networks(), or "
            "pass your own torch.nn.Module."
        )
    return key


def _builder_kwargs(name: str, trained: bool) -> dict:
    if name in _INCEPTIONS:
        # As torchvision builds them with pretrained weights: the input conversion of the
        # original release inside, no auxiliary classifiers (eval mode never runs them).
        return {"aux_logits": False, "transform_input": True, "init_weights": not trained}
    return {}


def _tv_weights_enum(name: str) -> Any:
    from torchvision.models import get_model_weights

    return get_model_weights(name)


def torchvision_architecture(name: str) -> Architecture:
    """The architecture of torchvision's ``name``, derived once (from a weightless copy)."""
    import torch
    from torchvision.models import get_model

    name = _network_name(name)
    if name == "squeezenet1_1":
        return SQUEEZENET
    with _ARCH_LOCK:
        arch = _ARCH_CACHE.get(name)
        if arch is None:
            try:
                with torch.device("meta"):
                    model = get_model(name, weights=None, **_builder_kwargs(name, True))
            except NotImplementedError:  # a builder that computes with tensors (RegNet)
                with torch.random.fork_rng(devices=[]):
                    model = get_model(name, weights=None, **_builder_kwargs(name, True))
            crop = _tv_weights_enum(name).DEFAULT.transforms.keywords.get("crop_size", 224)
            arch = GraphArchitecture(model, name, NETWORK_TITLES[name], input_size=int(crop))
            arch.__dict__["_bytes_per_pixel"] = MEASURED_BYTES_PER_PIXEL[name]
            _ARCH_CACHE[name] = arch
    return arch


def _tv_weights(name: str, weights: Any) -> Any:
    """torchvision's weights entry that ``weights`` names, or None if it names none."""
    enum = _tv_weights_enum(name)
    if isinstance(weights, enum):
        return weights
    if not isinstance(weights, str):
        return None
    key = weights.strip()
    if key.upper() in ("DEFAULT", "TORCHVISION"):
        return enum.DEFAULT
    for member in enum:
        if member.name.lower() == key.lower():
            return member
    return None


def _download(entry: Any, title: str, progress: bool) -> tuple[dict, Path]:
    """torchvision's state_dict of ``entry``: from the hub cache, else downloaded into it."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(entry.url)
    if path.is_file():
        return _read_state_dict(path), path
    try:
        return entry.get_state_dict(progress=progress, check_hash=True, weights_only=True), path
    except Exception as exc:  # urllib, ssl, socket, hash check
        if path.is_file():
            return _read_state_dict(path), path
        raise WeightsUnavailableError(
            f"Could not get torchvision's pretrained {title} weights "
            f"({type(exc).__name__}: {exc}).\n"
            f"  URL: {entry.url}\n"
            f"  A file downloaded by hand is picked up at: {path}\n"
            "  Or pass weights='path/to/file.pth', or weights=None for random weights."
        ) from exc


def load_network(
    name_or_module: Any = "squeezenet1_1",
    weights: Any = "DEFAULT",
    *,
    device: Any = "auto",
    progress: bool = True,
    in_channels: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    categories: list[str] | None = None,
    input_size: int | None = None,
    title: str | None = None,
) -> Network:
    """A network ready for inference: one of :func:`list_networks`, or your own model.

    Parameters
    ----------
    name_or_module : str or torch.nn.Module
        A name from :func:`list_networks` (``"squeezenet1_1"``, ``"resnet50"``, ...), or any
        ``torch.nn.Module`` taking one ``(N, C, H, W)`` image tensor (a copy is used: your
        model is not changed).
        Or a local bioimage.io model package (a ``.zip``, or a folder with ``rdf.yaml``):
        :func:`~napari_activations.load_bioimageio` (``weights`` is then not used).
    weights : "DEFAULT", str, path or None
        SqueezeNet: as :func:`load_squeezenet` (built-in weights by default). torchvision's
        networks: ``"DEFAULT"`` (torchvision's best ImageNet weights, downloaded once into
        the torch hub cache, ``$TORCH_HOME``), a weights name (``"IMAGENET1K_V1"``), a
        state_dict file (loaded with ``weights_only=True``, ``strict=True``), or None for
        random weights (seeded). A module: None marks its weights as untrained; anything
        else keeps them as they are (a path loads that state_dict into the copy first).
    device : "auto", "cpu", "cuda", "mps" or torch.device
    in_channels, mean, std, categories, input_size, title
        For a module only: what it takes and declares. Default: the first convolution's
        input channels; no normalisation (mean 0, std 1: the network sees intensities in
        [0, 1]); no categories; 224; the class name.

    Returns
    -------
    Network
        Named networks are cached: the same weights on the same device return the same
        object.

    Raises
    ------
    ValueError
        An unknown name. :class:`WeightsError` for weights that cannot be used;
        :class:`~napari_activations.GeometryError` for a module that can neither be traced
        nor run on an image.
    """
    import torch

    if isinstance(name_or_module, torch.nn.Module):
        return _load_module(
            name_or_module,
            weights,
            device=device,
            in_channels=in_channels,
            mean=mean,
            std=std,
            categories=categories,
            input_size=input_size,
            title=title,
        )
    if isinstance(name_or_module, (str, os.PathLike)):
        from .bioimageio import is_bioimageio_package, load_bioimageio

        if is_bioimageio_package(name_or_module):
            return load_bioimageio(name_or_module, device=device)
    if not isinstance(name_or_module, str):
        raise ValueError(
            f"load_network takes a network name (see list_networks()) or a torch.nn.Module, "
            f"not {type(name_or_module).__name__}."
        )
    name = _network_name(name_or_module)
    if name == "squeezenet1_1":
        return load_squeezenet(weights, device=device, progress=progress)
    return _load_torchvision(name, weights, device=device, progress=progress)


def _load_torchvision(name: str, weights: Any, *, device: Any, progress: bool) -> Network:
    import torch
    from torchvision.models import get_model

    title = NETWORK_TITLES[name]
    dev = resolve_device(device)
    arch = torchvision_architecture(name)
    default = _tv_weights_enum(name).DEFAULT
    entry = None if weights is None else _tv_weights(name, weights)
    path = None
    if weights is not None and entry is None:
        if not isinstance(weights, (str, os.PathLike)):
            raise WeightsError(
                f"weights must be 'DEFAULT', a torchvision weights name, a file path or None, "
                f"not {type(weights).__name__}."
            )
        path = Path(weights).expanduser()
        if not path.is_file():
            names = ", ".join(repr(m.name) for m in _tv_weights_enum(name))
            raise WeightsError(
                f"{weights!r} names no weights of {title}: use 'DEFAULT', one of {names}, "
                "a state_dict file, or None."
            )
    if path is not None:
        key: tuple = (name,) + _file_key(path)
    else:
        key = (name, entry.name if entry is not None else "random")
    key = key + (str(dev),)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        trained = weights is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = get_model(name, weights=None, **_builder_kwargs(name, trained))
        sha = None
        if entry is not None:
            state, file = _download(entry, title, progress)
            _apply_state_dict(model, _drop_aux(name, state), str(file), title)
            label, source, sha = entry.name, entry.name, _sha256(file) if file.is_file() else None
        elif path is not None:
            _apply_state_dict(model, _drop_aux(name, _read_state_dict(path)), str(path), title)
            label, source, sha = f"file:{path.name}", str(path.resolve()), _sha256(path)
        else:
            label, source = "random", None
        model.eval().to(dev)
        for p in model.parameters():
            p.requires_grad_(False)
        meta = (entry or default).meta
        tf = (entry or default).transforms()
        net = Network(
            model=model,
            weights=label,
            trained=trained,
            categories=list(meta["categories"]),
            device=dev,
            sha256=sha,
            mean=tuple(float(v) for v in tf.mean),
            std=tuple(float(v) for v in tf.std),
            source=source,
            arch=arch,
        )
        _CACHE[key] = net
        return net


def _drop_aux(name: str, state: dict) -> dict:
    if name not in _INCEPTIONS:
        return state
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}


def _load_module(
    module: Any,
    weights: Any,
    *,
    device: Any,
    in_channels: int | None,
    mean: Any,
    std: Any,
    categories: Any,
    input_size: int | None,
    title: str | None,
) -> Network:
    from .geometry import GeometryError

    dev = resolve_device(device)
    try:
        model = copy.deepcopy(module)
    except Exception as exc:  # noqa: BLE001 - a module that cannot be copied
        raise WeightsError(
            f"Cannot copy the model ({type(exc).__name__}: {exc}); napari-activations works "
            "on a copy so that your model is never changed."
        ) from exc
    label, sha, source = "module", None, None
    if isinstance(weights, (str, os.PathLike)) and str(weights).strip().upper() != "DEFAULT":
        path = Path(weights).expanduser()
        cls = type(module).__name__
        _apply_state_dict(model, _read_state_dict(path), str(path), cls)
        label, sha, source = f"file:{path.name}", _sha256(path), str(path.resolve())
    model.eval().to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    cls = type(module).__name__
    name = f"module:{cls}"
    try:
        arch = GraphArchitecture(
            model, name, title or cls, in_channels=in_channels, input_size=input_size or 224
        )
    except GeometryError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything the model raises on a dummy image
        raise GeometryError(
            f"Cannot read the layers of {title or cls}: {type(exc).__name__}: {exc}"
        ) from exc
    c = arch.in_channels
    mean = tuple(float(v) for v in (mean if mean is not None else (0.0,) * c))
    std = tuple(float(v) for v in (std if std is not None else (1.0,) * c))
    if len(mean) != c or len(std) != c or not all(v > 0 for v in std):
        raise ValueError(
            f"mean and std need one value per input channel ({c}), std positive; got "
            f"mean={mean}, std={std}."
        )
    return Network(
        model=model,
        weights=label,
        trained=weights is not None,
        categories=list(categories) if categories is not None else None,
        device=dev,
        sha256=sha,
        mean=mean,
        std=std,
        source=source,
        arch=arch,
    )
