"""The user's own model from files: a Python file that defines it, and a state_dict.

What the widget's "Your model…" loads, usable as well from napari's console or a script::

    from napari_activations.user_model import load_model_file
    net = load_model_file("my_unet.py", "my_unet_weights.pth")

The Python file is *run* (it is Python code: load only files you trust). It defines the model
at its top level, as one of:

- ``model = MyNet()``: a ``torch.nn.Module`` instance named ``model``;
- ``def model(): return MyNet()``: a function named ``model`` that takes no arguments and
  returns one;
- ``class model(nn.Module): ...``: a module class named ``model`` that takes no arguments.

Optional top-level names the file may define as well: ``in_channels`` (int), ``mean`` and
``std`` (one value per input channel: the network sees ``(x - mean) / std`` for intensities
``x`` in [0, 1]; default 0 and 1), ``categories`` (class names in output order),
``input_size`` (the side of the images it takes; default 224) and ``title`` (its name in
menus and napari layer names; default the class name).

The state_dict file is loaded with ``torch.load(weights_only=True)`` (no code runs) and
``strict=True``. Every failure is a :class:`UserModelError` (a
:class:`~napari_activations.network.WeightsError`) whose message says what was wrong, never a
traceback. No napari, no Qt.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import os
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

from .network import Network, WeightsError, load_network, resolve_device

__all__ = ["MODEL_NAME", "UserModelError", "load_model_file", "on_device", "with_state_dict"]

MODEL_NAME = "model"
"""The top-level name the Python file defines the model under."""

_OPTIONAL = ("in_channels", "mean", "std", "categories", "input_size", "title")


class UserModelError(WeightsError):
    """The user's model file or state_dict could not be used; the message says why."""


def _module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"napari_activations_user_model_{stem}_{digest}"


_RUN_LOCK = threading.Lock()


def _run_file(path: Path) -> Any:
    """Run the Python file as a module (registered in ``sys.modules``, so that its classes
    can be pickled; its folder on ``sys.path`` while it runs, so that it can import files
    beside it)."""
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserModelError(f"{path.name} cannot be loaded as a Python file.")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    with _RUN_LOCK:
        sys.path.insert(0, folder)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(name, None)
            raise UserModelError(
                f"{path.name} is not valid Python: {exc.msg} (line {exc.lineno}). Fix the file "
                "and load it again."
            ) from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything the user's code raises
            sys.modules.pop(name, None)
            raise UserModelError(
                f"{path.name} raised {type(exc).__name__}: {exc} (while running it to define "
                "the model). Fix the file and load it again."
            ) from None
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
    return module


def _model_from(module: Any, path: Path) -> Any:
    from torch import nn

    how = (
        f"Define a top-level `{MODEL_NAME} = MyNet()` (a torch.nn.Module), or a function "
        f"`{MODEL_NAME}()` that returns one."
    )
    if not hasattr(module, MODEL_NAME):
        modules = [k for k, v in vars(module).items() if isinstance(v, nn.Module)]
        seen = f" It defines the module(s) {', '.join(modules[:3])}." if modules else ""
        raise UserModelError(f"{path.name} defines no `{MODEL_NAME}`.{seen} {how}")
    obj = getattr(module, MODEL_NAME)
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - the user's function or constructor
            raise UserModelError(
                f"`{MODEL_NAME}()` in {path.name} raised {type(exc).__name__}: {exc}. It must "
                "take no arguments and return a torch.nn.Module."
            ) from None
    if not isinstance(obj, nn.Module):
        raise UserModelError(
            f"`{MODEL_NAME}` in {path.name} is of type {type(obj).__name__}, not a "
            f"torch.nn.Module. {how}"
        )
    return obj


def load_model_file(
    path: str | os.PathLike,
    state_dict: str | os.PathLike | None = None,
    *,
    device: Any = "cpu",
) -> Network:
    """Run a Python file that defines a model, load a state_dict into it, and make a network.

    Parameters
    ----------
    path : str or path
        A ``.py`` file defining ``model`` at its top level (see the module docstring). It is
        run: load only files you trust.
    state_dict : str, path or None
        A state_dict file for that model (``torch.save(model.state_dict(), path)``), loaded
        with ``weights_only=True`` and ``strict=True``; None keeps the weights the file gave
        the model.
    device : "auto", "cpu", "cuda", "mps" or torch.device

    Returns
    -------
    Network
        Named ``"module:<class name>"``, titled by the class name; layers, geometry and
        in_channels derived from the model's graph (see
        :func:`~napari_activations.load_network`).

    Raises
    ------
    UserModelError
        The file is missing, is not Python, raises, defines no model, or the model's layers
        cannot be read; the state_dict is missing, unreadable or for another architecture.
    """
    from .geometry import GeometryError

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserModelError(f"No Python file at {path}. Choose the .py file that defines it.")
    if path.suffix.lower() != ".py":
        raise UserModelError(
            f"{path.name} is not a Python (.py) file. Choose the .py file that defines the "
            "model; its weights (a state_dict, .pth) go under 'State dict'."
        )
    module = _run_file(path.resolve())
    model = _model_from(module, path)
    options = {k: getattr(module, k) for k in _OPTIONAL if hasattr(module, k)}
    weights: Any = "DEFAULT" if state_dict is None else Path(state_dict).expanduser()
    try:
        return load_network(model, weights, device=device, **options)
    except UserModelError:
        raise
    except WeightsError as exc:
        raise UserModelError(str(exc)) from None
    except (GeometryError, ValueError, TypeError) as exc:
        raise UserModelError(f"{path.name}: {exc}") from None


def with_state_dict(net: Network, state_dict: str | os.PathLike) -> Network:
    """``net`` (a user's model) with the weights of a state_dict file, without running its
    Python file again: a new network from a copy of its model, with what it declares (input
    channels, normalisation, categories, title) kept.

    Raises
    ------
    UserModelError
        The file is missing, unreadable, or a state_dict of another architecture.
    """
    try:
        return load_network(
            net.model,
            Path(state_dict).expanduser(),
            device=net.device,
            in_channels=net.in_channels,
            mean=net.mean,
            std=net.std,
            categories=net.categories,
            input_size=net.arch.input_size,
            title=net.title,
        )
    except WeightsError as exc:
        raise UserModelError(str(exc)) from None


_MOVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MOVED_LOCK = threading.Lock()


def on_device(net: Network, device: Any = "auto") -> Network:
    """``net`` on ``device``: itself where it is there already, else a copy moved there (kept
    while ``net`` lives, so that moving happens once).

    For a user's model, which cannot be loaded again by name: the copy shares its
    architecture (layers, geometry) with ``net``.
    """
    dev = resolve_device(device)
    if str(dev) == str(net.device):
        return net
    with _MOVED_LOCK:
        moved = _MOVED.setdefault(net, {})
        if str(dev) not in moved:
            model = copy.deepcopy(net.model).to(dev)
            moved[str(dev)] = dataclasses.replace(net, model=model, device=dev)
        return moved[str(dev)]
