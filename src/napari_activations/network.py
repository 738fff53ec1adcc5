"""Loading SqueezeNet v1.1 with its weights: the built-in reference weights (the original Caffe
release behind MATLAB's ``squeezenet``), torchvision's download, a local file, or random.

The network is built once per (weights, device) and cached, so the widget and scripts that
call :func:`load_squeezenet` repeatedly never rebuild it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .layers import LAYERS, LayerInfo

if TYPE_CHECKING:
    import torch

__all__ = [
    "Network",
    "load_squeezenet",
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


class WeightsError(RuntimeError):
    """The weights could not be loaded; the message says why and what to do."""


class DeviceUnavailableError(ValueError):
    """The device asked for is not available on this machine."""


class WeightsUnavailableError(WeightsError):
    """torchvision's pretrained weights are neither cached nor downloadable."""


@dataclass(eq=False)
class Network:
    """A SqueezeNet v1.1 ready for inference, with what is known about its weights.

    Attributes
    ----------
    model : torch.nn.Module
        torchvision ``SqueezeNet`` in eval mode, on :attr:`device`.
    weights : str
        Which weights: ``"caffe"`` (built in), ``"torchvision"``, ``"file:<file name>"`` or
        ``"random"``. Never a machine path.
    trained : bool
        False for random weights: their activations mean nothing.
    categories : list of str
        The 1000 ImageNet class names, in output order.
    device : torch.device
    sha256 : str or None
        Hash of the weights file, where there is one.
    source : str or None
        The ``weights`` argument of :func:`load_squeezenet` that loads these weights again
        (for a file, its resolved path; kept out of the description and layer metadata).
    """

    model: Any
    weights: str
    trained: bool
    categories: list[str]
    device: Any
    sha256: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str | None = field(default=None, repr=False)

    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        """The layer table, in network order (see :data:`napari_activations.LAYERS`)."""
        return LAYERS

    @property
    def description(self) -> str:
        """One line for people: the weights and the device."""
        if not self.trained:
            return (
                f"SqueezeNet v1.1 with RANDOM, UNTRAINED weights on {self.device} "
                "(for tests only: its activations mean nothing)"
            )
        if self.weights == "caffe":
            what = "original Caffe ImageNet weights (MATLAB's, built in)"
        elif self.weights == "torchvision":
            what = "torchvision's ImageNet weights (IMAGENET1K_V1)"
        else:
            what = f"weights from {self.weights.removeprefix('file:')}"
            if self.sha256:
                what += f" (sha256 {self.sha256[:12]})"
        return f"SqueezeNet v1.1, {what}, on {self.device}"

    def __repr__(self) -> str:
        return f"<Network: {self.description}>"

    def __dask_tokenize__(self) -> tuple:
        # dask names each chunk's task by hashing its arguments; hashing the dataclass would
        # walk every weight tensor, once per chunk (seconds for a graph of a few hundred).
        return (
            "napari_activations.Network",
            self.weights,
            self.sha256,
            str(self.device),
            id(self.model),
        )

    def __reduce__(self):
        # Pickled as how to load it, not as tensors: a dask worker loads (and caches) its own
        # copy, so a graph that names this network stays small.
        return (_load_pickled, (self.source, self.device.type))


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


def _apply_state_dict(model: Any, state: dict, source: str) -> None:
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
            f"{source} is not a SqueezeNet 1.1 state_dict: {'; '.join(detail)}."
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
