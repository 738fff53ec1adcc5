"""The torch backend: the network's own modules, walked up to the requested layer.

SqueezeNet's walk is written here (:func:`forward`); every other network is walked through its
``torch.fx`` graph by its architecture.

The reference for every other backend, on every device. On CUDA and MPS it can run in half
precision (``"float16"``, ``"bfloat16"``) on a channels_last copy of the network; the result is
always float32.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..layers import LayerInfo

if TYPE_CHECKING:
    import torch

    from ..network import Network

__all__ = ["TorchRunner", "forward", "forward_steps"]


def _module_path(info: LayerInfo) -> tuple[int, int | None, str | None]:
    """(last features index to run, classifier index or None, sub-module inside a fire)."""
    parts = info.module.split(".")
    if parts[0] == "features":
        return int(parts[1]), None, (parts[2] if len(parts) > 2 else None)
    if parts[0] == "classifier":
        return 12, int(parts[1]), None
    return 12, 3, "softmax"


def forward_steps(info: LayerInfo) -> int:
    """How many progress steps one forward pass to ``info`` yields."""
    feat, cls, _ = _module_path(info)
    return feat + 1 + (0 if cls is None else cls + 1)


def forward(model: Any, x: torch.Tensor, info: LayerInfo) -> Generator[None, None, torch.Tensor]:
    """Run ``model`` on ``x`` up to and including ``info``; yield after each block.

    The walk calls the model's own modules, so the values equal a full forward pass; it stops
    at the requested layer and never reads a tensor that an in-place ReLU has since changed,
    so pre-ReLU layers keep their negative values.
    """
    import torch

    feat, cls, sub = _module_path(info)
    for i in range(feat + 1):
        module = model.features[i]
        if i == feat and cls is None and sub is not None:
            x = _fire_part(module, x, sub)
        else:
            x = module(x)
        yield
    if cls is None:
        return x
    for j in range(cls + 1):
        x = model.classifier[j](x)
        yield
    if sub == "softmax":
        x = torch.softmax(torch.flatten(x, 1), dim=1)[:, :, None, None]
    return x


def _fire_part(fire: Any, x: torch.Tensor, sub: str) -> torch.Tensor:
    s = fire.squeeze(x)
    if sub == "squeeze":
        return s
    s = fire.squeeze_activation(s)
    if sub == "squeeze_activation":
        return s
    branch = "expand1x1" if sub.startswith("expand1x1") else "expand3x3"
    e = getattr(fire, branch)(s)
    if sub == branch:
        return e
    return getattr(fire, f"{branch}_activation")(e)


_HALF_LOCK = threading.Lock()


def _model_for(net: Network, precision: str) -> tuple[Any, Any, Any]:
    """(model, dtype, memory format) for ``precision``: the network's own model for float32.

    Half precision runs on a converted copy in channels_last (the layout whose half-precision
    convolutions use tensor cores on CUDA), made once per network and precision.
    """
    import torch

    if precision == "float32":
        return net.model, torch.float32, torch.contiguous_format
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[precision]
    attr = f"_model_{precision}"
    with _HALF_LOCK:
        model = net.__dict__.get(attr)
        if model is None:
            model = copy.deepcopy(net.model).to(dtype=dtype, memory_format=torch.channels_last)
            net.__dict__[attr] = model
    return model, dtype, torch.channels_last


class TorchRunner:
    """Runs ``net`` up to ``info`` with torch (its architecture's walk, see
    :meth:`~napari_activations.architecture.Architecture.forward`); yields after each
    network block.

    ``note`` says why torch runs where another backend was asked for (a fallback).
    """

    backend = "torch"
    normalised_input = True  # takes ImageNet-normalised input

    def __init__(
        self, net: Network, info: LayerInfo, precision: str = "float32", note: str | None = None
    ):
        self.net = net
        self.info = info
        self.precision = precision
        self.note = note
        self.steps = net.arch.forward_steps(info)

    def run(
        self, x: torch.Tensor, release_memory: bool = False
    ) -> Generator[None, None, np.ndarray]:
        import torch

        model, dtype, memory_format = _model_for(self.net, self.precision)
        if dtype != torch.float32:
            x = x.to(dtype=dtype, memory_format=memory_format)
        out = yield from self.net.arch.forward(model, x, self.info)
        return out.detach().to("cpu", torch.float32).numpy()
