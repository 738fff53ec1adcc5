"""Inference backends: the truncated network, prepared once, then run on planes and tiles.

A *backend* runs a network up to one layer. Behind this seam:

- ``"torch"`` (:mod:`.torch_backend`): the reference; every device (CPU, CUDA, MPS), the only
  one with gradients, and on GPUs optionally in half precision (``precision=``).
- ``"onnxruntime"`` (:mod:`.onnx_backend`): the CPU fast path. The truncated network is
  exported to ONNX once (dynamic height and width, the requested layer as the graph's
  output), checked against torch, cached on disk, and run by an ONNX Runtime session.

``backend="auto"`` takes ``$NAPARI_ACTIVATIONS_BACKEND`` when that is set, else ONNX Runtime
on the CPU (where installed: 2 to 5x faster than torch there, see the README's "Backends") and
torch on GPUs. Gradients (attribution) always run on torch, whatever is chosen. A backend that
cannot run a layer (the export or the check against torch failed) falls back to torch, says so
once per network, and the result records the backend that really ran (:attr:`Runner.backend`).

Preparing is the slow part (an export takes about a second per layer, the first time only):
:func:`needs_preparing` tells the compute when to show it as a progress step.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..layers import LayerInfo

if TYPE_CHECKING:
    from ..network import Network

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "PRECISIONS",
    "BackendError",
    "BackendFallbackWarning",
    "Runner",
    "available_backends",
    "resolve_backend",
    "check_precision",
    "prepare",
    "needs_preparing",
]

BACKENDS = ("auto", "torch", "onnxruntime")
"""Accepted values of ``backend=``."""

BACKEND_ENV = "NAPARI_ACTIVATIONS_BACKEND"
"""Environment variable: the backend that ``backend="auto"`` picks (``torch`` or
``onnxruntime``), e.g. to run the test suite on each backend."""

PRECISIONS = ("float32", "float16", "bfloat16")
"""Accepted values of ``precision=``: half precisions run on GPUs only (torch backend)."""

BACKEND_TITLES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}


class BackendError(ValueError):
    """A backend or precision that cannot be used here; the message says what to do."""


class BackendFallbackWarning(UserWarning):
    """A fast backend could not run a layer; torch ran it instead."""


class Runner(Protocol):
    """A network prepared to run up to one layer, on one backend.

    ``backend`` is the backend that really runs (``"torch"`` after a fallback), ``steps`` how
    many times :meth:`run` yields (progress steps of one forward pass), and ``run(x)`` takes
    a ``(1, 3, h, w)`` float32 tensor and returns the layer's ``(1, C, h', w')`` float32
    activations as a numpy array, yielding between steps (where cancel can stop it);
    ``release_memory`` (the tiles of a big image) gives working memory back after the run. The
    input is ImageNet-normalised where ``normalised_input`` is true, else intensities in
    [0, 255] (the runner's network scales and normalises them itself).
    """

    backend: str
    steps: int
    normalised_input: bool

    def run(self, x: Any, release_memory: bool = False) -> Generator[None, None, np.ndarray]: ...


def onnxruntime_installed() -> bool:
    """Whether ONNX Runtime and the exporter's needs are installed (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def available_backends(device: Any = "cpu") -> list[str]:
    """Backends that can run on ``device`` here, fastest first (``"auto"`` excluded)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    fast = ["onnxruntime"] if kind == "cpu" and onnxruntime_installed() else []
    return fast + ["torch"]


def resolve_backend(backend: str | None, device: Any) -> str:
    """The backend to use on ``device``: ``"torch"`` or ``"onnxruntime"``.

    ``"auto"`` (or None) takes :data:`BACKEND_ENV` where set and usable on the device, else
    the fastest available there (:func:`available_backends`: ONNX Runtime on the CPU, torch
    on GPUs). An explicit backend that cannot run here raises :class:`BackendError`.
    """
    kind = getattr(device, "type", str(device).split(":")[0])
    name = "auto" if backend is None else str(backend).strip().lower()
    if name not in BACKENDS:
        raise BackendError(
            f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}; got {backend!r}."
        )
    if name == "auto":
        env = os.environ.get(BACKEND_ENV, "").strip().lower()
        if env and env != "auto":
            if env not in BACKENDS:
                raise BackendError(
                    f"{BACKEND_ENV}={env!r} is not a backend; use one of "
                    f"{', '.join(repr(b) for b in BACKENDS)}, or unset it."
                )
            if env in available_backends(kind):
                return env
        return available_backends(kind)[0]
    if name == "onnxruntime":
        if kind != "cpu":
            raise BackendError(
                f"backend='onnxruntime' runs on the CPU; this network is on "
                f"{kind}. Use backend='torch' (or 'auto'), or load the network "
                "with device='cpu'."
            )
        if not onnxruntime_installed():
            raise BackendError(
                "backend='onnxruntime' needs the onnxruntime and onnx packages: "
                "pip install onnxruntime onnx, or use backend='torch'."
            )
    return name


def check_precision(precision: str | None, device: Any, backend: str) -> str:
    """``precision`` checked for the device and backend: ``"float32"`` unless a GPU runs it."""
    name = "float32" if precision is None else str(precision).strip().lower()
    if name not in PRECISIONS:
        raise BackendError(
            f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}; got {precision!r}."
        )
    kind = getattr(device, "type", str(device).split(":")[0])
    if name != "float32" and (kind == "cpu" or backend != "torch"):
        raise BackendError(
            f"precision={name!r} runs on a GPU only (device='cuda' or 'mps', "
            "backend='torch'); on the CPU activations are float32."
        )
    return name


@dataclass
class _Prepared:
    """What one network has prepared: runners by (backend, layer, precision), fallbacks said."""

    runners: dict
    lock: threading.Lock
    warned: bool = False


_PREPARED_ATTR = "_prepared_backends"
_ATTR_LOCK = threading.Lock()


def _prepared(net: Network) -> _Prepared:
    """The per-network store (an attribute of the network: it lives and dies with it)."""
    with _ATTR_LOCK:
        state = net.__dict__.get(_PREPARED_ATTR)
        if state is None:
            state = _Prepared({}, threading.Lock())
            net.__dict__[_PREPARED_ATTR] = state
        return state


def _key(backend: str, info: LayerInfo, precision: str) -> tuple:
    threads = None
    if backend == "onnxruntime":
        import torch

        threads = torch.get_num_threads()  # a session's thread count is fixed when made
    return (backend, info.name, precision, threads)


def needs_preparing(
    net: Network, info: LayerInfo, backend: str, precision: str = "float32"
) -> bool:
    """Whether :func:`prepare` would do real work (export or load a cached export)."""
    if backend == "torch" and precision == "float32":
        return False
    return _key(backend, info, precision) not in _prepared(net).runners


def prepare(net: Network, info: LayerInfo, backend: str, precision: str = "float32") -> Runner:
    """The runner of ``net`` up to ``info`` on ``backend`` (resolved), made once per network.

    Where ONNX Runtime cannot run the layer, torch's runner is returned and a
    :class:`BackendFallbackWarning` says so (once per network).
    """
    from . import torch_backend

    state = _prepared(net)
    key = _key(backend, info, precision)
    runner = state.runners.get(key)
    if runner is not None:
        return runner
    with state.lock:
        runner = state.runners.get(key)
        if runner is not None:
            return runner
        if backend == "onnxruntime":
            from . import onnx_backend

            try:
                runner = onnx_backend.OnnxRunner.create(net, info)
            except onnx_backend.ExportError as exc:
                runner = torch_backend.TorchRunner(net, info, precision, note=str(exc))
                if not state.warned:
                    state.warned = True
                    warnings.warn(
                        f"ONNX Runtime cannot run this network ({exc}); using torch "
                        "instead, which is slower on the CPU but gives the same "
                        "activations.",
                        BackendFallbackWarning,
                        stacklevel=3,
                    )
        else:
            runner = torch_backend.TorchRunner(net, info, precision)
        state.runners[key] = runner
        return runner
