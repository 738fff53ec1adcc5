"""What a network *is*, apart from its weights: its layer table, input convention, sizes and
how to run it up to one layer.

Every computation takes these from the network it is given (``net.arch``), never from a
global. Two kinds:

- :class:`SqueezeNetArchitecture`: SqueezeNet v1.1 with its MATLAB / Caffe layer names and
  the hand-checked table of :mod:`napari_activations.layers` (pure Python: the widget reads
  it before any network is loaded).
- :class:`GraphArchitecture`: any other ``torch.nn.Module`` (torchvision's CNNs, the user's
  own model, bioimage.io models). Layers are the nodes of its ``torch.fx`` graph, named as
  ``torchvision.models.feature_extraction`` names them (``layer3.1.relu_1``), with geometry
  derived from the graph (:func:`napari_activations.geometry.derive_geometry`). A model that
  ``torch.fx`` cannot trace gets its leaf modules as layers, with measured geometry, and is
  run with a forward hook.

Pure torch at call time (imported lazily): no napari, no Qt.
"""

from __future__ import annotations

import copy
import difflib
import math
import threading
from collections import OrderedDict
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from . import layers as _squeeze
from .layers import LayerInfo, UnknownLayerError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Architecture",
    "SqueezeNetArchitecture",
    "GraphArchitecture",
    "SQUEEZENET",
    "architecture_of",
]


class Architecture:
    """The structure of one network: what every computation needs besides the weights.

    Attributes
    ----------
    name : str
        Short identifier: ``"squeezenet1_1"``, a torchvision builder name (``"resnet50"``),
        or ``"module:<ClassName>"`` for a user's model.
    title : str
        For people: ``"SqueezeNet v1.1"``, ``"ResNet-50"``.
    layers : tuple of LayerInfo
        The network layers in execution order.
    in_channels : int
        Input channels the network takes (3 for RGB networks).
    input_size : int
        Side of the images it was trained on (what :func:`~napari_activations.classify`
        resizes to).
    """

    name: str
    title: str
    layers: tuple[LayerInfo, ...]
    in_channels: int = 3
    input_size: int = 224

    # --- lookup ---------------------------------------------------------------------------

    def find_layer(self, layer: str | LayerInfo) -> LayerInfo:
        """The row of ``layer`` (a name, case-insensitive, or a row of this network)."""
        if isinstance(layer, LayerInfo):
            if layer.network != self.name:
                raise UnknownLayerError(
                    f"Layer {layer.name!r} belongs to {layer.network}, not to {self.title}; "
                    f"name a layer of {self.title} (see net.layers)."
                )
            return layer
        if not isinstance(layer, str):
            raise UnknownLayerError(
                f"A layer is named by a string such as {self.layers[0].name!r}, "
                f"not {type(layer).__name__}."
            )
        found = self._lookup().get(layer.strip().lower())
        if found is not None:
            return found
        close = difflib.get_close_matches(layer.strip().lower(), list(self._lookup()), 5, 0.5)
        names = list(dict.fromkeys(self._lookup()[c].name for c in close))
        hint = (
            f" Closest: {', '.join(repr(c) for c in names)}."
            if names
            else f" Valid names run from {self.layers[0].name!r} to {self.layers[-1].name!r}; "
            "see net.layers."
        )
        raise UnknownLayerError(f"{self.title} has no layer {layer!r}.{hint}")

    def _lookup(self) -> dict[str, LayerInfo]:
        table = self.__dict__.get("_by_name")
        if table is None:
            table = {}
            for info in self.layers:
                table.setdefault(info.module.lower(), info)
            for info in self.layers:
                table[info.name.lower()] = info
            self.__dict__["_by_name"] = table
        return table

    def index(self, info: LayerInfo) -> int:
        """Position of ``info`` in :attr:`layers`."""
        positions = self.__dict__.get("_positions")
        if positions is None:
            positions = {row.name: i for i, row in enumerate(self.layers)}
            self.__dict__["_positions"] = positions
        return positions[info.name]

    def layer_names(self) -> list[str]:
        return [info.name for info in self.layers]

    # --- sizes ----------------------------------------------------------------------------

    def output_size(self, info: LayerInfo, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of ``info``'s activation for a ``height x width`` input; ``(0, 0)`` where
        the input is too small for the layer."""
        raise NotImplementedError

    def minimum_input_size(self, info: LayerInfo) -> int:
        """Smallest square input side (pixels) that gives ``info`` at least one pixel."""
        cache = self.__dict__.setdefault("_minimum", {})
        if info.name not in cache:
            lo, hi = 1, 2
            while self.output_size(info, hi, hi)[0] < 1:
                lo, hi = hi, hi * 2
                if hi > 1 << 14:
                    raise UnknownLayerError(
                        f"Layer {info.name!r} of {self.title} has no pixel even for a "
                        f"{hi}x{hi} input."
                    )
            while lo < hi:  # smallest n in [lo, hi] with a pixel
                mid = (lo + hi) // 2
                if self.output_size(info, mid, mid)[0] >= 1:
                    hi = mid
                else:
                    lo = mid + 1
            cache[info.name] = lo
        return cache[info.name]

    def size_problem(self, info: LayerInfo, height: int, width: int) -> str:
        """Why ``info`` has no pixel for a ``height x width`` input (for messages)."""
        n = self.minimum_input_size(info)
        return f"it needs at least {n}x{n} pixels"

    # --- global layers in tiles -----------------------------------------------------------

    def context_layer(self, info: LayerInfo) -> LayerInfo | None:
        """For a global layer: the local layer whose mean over the image it is a function of
        (what a tiled run computes tile by tile), or None where there is none."""
        return None

    def from_context(self, pooled: Any, info: LayerInfo, model: Any) -> Any:
        """Global layer ``info`` from its context layer's ``(C, 1, 1)`` float64 mean."""
        raise NotImplementedError

    # --- running --------------------------------------------------------------------------

    def forward_steps(self, info: LayerInfo) -> int:
        """How many times :meth:`forward` yields (progress steps of one forward pass)."""
        raise NotImplementedError

    def forward(
        self, model: Any, x: torch.Tensor, info: LayerInfo
    ) -> Generator[None, None, torch.Tensor]:
        """``model`` run on ``x`` (normalised input) up to ``info``: ``(N, C, h, w)``."""
        raise NotImplementedError

    def pre_relu(self, info: LayerInfo) -> LayerInfo | None:
        """The layer a ReLU layer ``info`` is computed from (``relu(pre) == info``), else None."""
        return None

    def truncated(self, model: Any, info: LayerInfo) -> nn.Module:
        """A module computing ``model`` up to ``info`` from normalised input (for export)."""
        import torch

        from .compute import drain

        arch = self

        class Truncated(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return drain(arch.forward(self.model, x, info))

        return Truncated().eval()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self.layers)} layers>"


class SqueezeNetArchitecture(Architecture):
    """SqueezeNet v1.1 with MATLAB / Caffe layer names (:data:`napari_activations.LAYERS`)."""

    name = "squeezenet1_1"
    title = "SqueezeNet v1.1"
    in_channels = 3
    input_size = 227

    def __init__(self) -> None:
        self.layers = _squeeze.LAYERS

    def find_layer(self, layer: str | LayerInfo) -> LayerInfo:
        if isinstance(layer, LayerInfo) and layer.network != self.name:
            return super().find_layer(layer)
        return _squeeze.find_layer(layer)

    def index(self, info: LayerInfo) -> int:
        return _squeeze._INDEX[info.name]

    def output_size(self, info: LayerInfo, height: int, width: int) -> tuple[int, int]:
        return _squeeze.output_size(info, height, width)

    def minimum_input_size(self, info: LayerInfo) -> int:
        return _squeeze.minimum_input_size(info)

    def context_layer(self, info: LayerInfo) -> LayerInfo | None:
        return _squeeze.find_layer("relu_conv10") if info.is_global else None

    def from_context(self, pooled: Any, info: LayerInfo, model: Any) -> Any:
        import numpy as np

        if info.name == "prob":
            e = np.exp(pooled - pooled.max())
            pooled = e / e.sum()
        return pooled

    def forward_steps(self, info: LayerInfo) -> int:
        from .backends.torch_backend import forward_steps

        return forward_steps(info)

    def forward(self, model, x, info):
        from .backends.torch_backend import forward

        return (yield from forward(model, x, info))

    def pre_relu(self, info: LayerInfo) -> LayerInfo | None:
        if info.module.endswith(("_activation", "features.1", "classifier.2")):
            return self.layers[info.index - 1]
        return None

    def __reduce__(self):
        return (_squeezenet, ())


def _squeezenet() -> SqueezeNetArchitecture:
    return SQUEEZENET


SQUEEZENET = SqueezeNetArchitecture()
"""SqueezeNet v1.1's architecture (one object: its rows keep ``arch=None``)."""


def architecture_of(info: LayerInfo) -> Architecture:
    """The architecture a layer row belongs to (SqueezeNet's for the built-in table)."""
    return SQUEEZENET if info.arch is None else info.arch


# --- any torch.nn.Module ---------------------------------------------------------------------


_RELU_OPS = {"ReLU", "relu", "relu_"}


def _number(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _lcm_unit(unit: int, stride: float | None) -> int:
    if stride is None:
        return unit
    s = max(1, math.ceil(stride - 1e-9))
    return unit * s // math.gcd(unit, s)


class _StopForward(Exception):
    """Raised by a forward hook to end a hooked forward pass at the requested module."""

    def __init__(self, value: Any):
        super().__init__()
        self.value = value


class GraphArchitecture(Architecture):
    """Any ``torch.nn.Module``: layers from its ``torch.fx`` graph (or hooked leaf modules).

    Parameters
    ----------
    model : torch.nn.Module
        The model (any weights, any device; it is neither modified nor kept: sizes are
        computed on a copy on PyTorch's ``meta`` device).
    name, title : str
        See :class:`Architecture`.
    in_channels : int, optional
        Default: those of the first convolution.
    input_size : int
        Training image side, for classification.
    """

    def __init__(
        self,
        model: nn.Module,
        name: str,
        title: str,
        *,
        in_channels: int | None = None,
        input_size: int = 224,
    ):
        import torch

        from . import geometry

        self.name = name
        self.title = title
        self.input_size = int(input_size)
        self.in_channels = int(in_channels or geometry._first_conv_channels(model))
        meta = _meta_copy(model)
        self._meta = meta
        try:
            self._gm, names = geometry._trace(meta)
            self.traced = True
        except Exception:  # noqa: BLE001 - untraceable: hooks on leaf modules
            self._gm, names = None, {}
            self.traced = False
        self._names = names
        side = max(64, self.input_size)
        rows = geometry.derive_geometry(
            model if not self.traced else _cpu_twin(model),
            input_size=(side, side),
            in_channels=self.in_channels,
        )
        self.source = rows[0].source if rows else ("traced" if self.traced else "measured")
        self._dims: dict[str, tuple[int, int] | None] = {}
        table: list[LayerInfo] = []
        unit = 1
        for row in rows:
            if row.channels is None:
                continue
            stride = offset = rf = None
            aligned, note = row.aligned, row.note
            if row.stride is not None:
                same = row.stride[0] == row.stride[1] and row.offset[0] == row.offset[1]
                if same:
                    # One grid. A field taller than wide (Inception's 7x1) keeps the larger
                    # side: the halo of a tile and the interior are then on the safe side.
                    stride, offset, rf = (
                        _number(row.stride[0]),
                        float(row.offset[0]),
                        _number(max(row.receptive_field)),
                    )
                    if row.receptive_field[0] != row.receptive_field[1]:
                        rows_, cols_ = (_number(v) for v in row.receptive_field)
                        note = note or f"receptive field {rows_}x{cols_} (rows x columns)"
                    unit = _lcm_unit(unit, stride)
                else:
                    aligned = False
                    note = note or "rows and columns have different geometry"
            self._dims[row.name] = row.dims
            table.append(
                LayerInfo(
                    row.name,
                    row.name,
                    int(row.channels),
                    stride,
                    offset,
                    rf,
                    bool(row.after_relu),
                    row.block or row.name.split(".")[0],
                    network=name,
                    aligned=bool(aligned) or row.is_global,
                    note=note,
                    unit=unit if stride is not None else None,
                    global_context=bool(row.global_context),
                    op=row.op,
                    geometry_source=row.source,
                    arch=self,
                )
            )
        self._sizes: OrderedDict[tuple[int, int], dict[str, tuple[int, ...]]] = OrderedDict()
        self._sizes_lock = threading.Lock()
        # Only images are layers: (N, C, H, W) (or channels-last) maps and (N, C) vectors;
        # not, say, the (N, H, W) slices of an input conversion.
        shapes = self._shapes(side, side)
        table = [row for row in table if _is_image(shapes.get(row.name), row, self._dims)]
        if not table:
            raise UnknownLayerError(f"{title}: no node of the model carries an activation.")
        self.layers = tuple(table)
        del torch

    def _shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Shapes of every node for a ``height x width`` input (a cached pass on ``meta``)."""
        key = (int(height), int(width))
        with self._sizes_lock:
            if key in self._sizes:
                self._sizes.move_to_end(key)
                return self._sizes[key]
        shapes, _ = _meta_shapes(self._gm, self._names, self._meta, self.in_channels, key)
        with self._sizes_lock:
            self._sizes[key] = shapes
            while len(self._sizes) > 64:
                self._sizes.popitem(last=False)
        return shapes

    def output_size(self, info: LayerInfo, height: int, width: int) -> tuple[int, int]:
        shape = self._shapes(height, width).get(info.name)
        if shape is None:
            return (0, 0)
        if info.is_global:
            return (1, 1)
        dims = self._dims.get(info.name) or (2, 3)
        if len(shape) <= max(dims):
            return (0, 0)
        h, w = shape[dims[0]], shape[dims[1]]
        return (h, w) if h > 0 and w > 0 else (0, 0)

    def size_problem(self, info: LayerInfo, height: int, width: int) -> str:
        n = self.minimum_input_size(info)
        failed = self._shapes(height, width).get(_FAILED)
        if min(height, width) >= n and failed:
            unit = max((row.tile_unit for row in self.layers if row.stride), default=1)
            hint = f" (sides that are multiples of {unit} work)" if unit > 1 else ""
            return f"{self.title} does not run on a {height}x{width} input ({failed[0]}){hint}"
        return super().size_problem(info, height, width)

    @property
    def bytes_per_pixel(self) -> int:
        """Peak bytes per input pixel of a forward pass (what tiling plans with): the most
        bytes alive at once in the graph (meta pass, 256x256) times :data:`MEMORY_OVERHEAD`."""
        value = self.__dict__.get("_bytes_per_pixel")
        if value is None:
            from .tiling import FORWARD_BYTES_PER_PIXEL

            _, peak = _meta_shapes(self._gm, self._names, self._meta, self.in_channels, (256, 256))
            value = math.ceil(MEMORY_OVERHEAD * peak / 256**2) if peak else 0
            value = max(value, FORWARD_BYTES_PER_PIXEL)  # untraced: SqueezeNet's figure
            self.__dict__["_bytes_per_pixel"] = value
        return value

    def context_layer(self, info: LayerInfo) -> LayerInfo | None:
        """The last local, aligned layer before the first global one, where the first global
        node averages it over the image (an adaptive average pool to one pixel or a mean)."""
        if not info.is_global or self._gm is None:
            return None
        i = self.index(info)
        first = next((k for k, row in enumerate(self.layers) if row.is_global and k <= i), None)
        if first is None or first == 0:
            return None
        pool, before = self.layers[first], self.layers[first - 1]
        if before.is_global or not before.aligned or pool.op not in _MEAN_OPS:
            return None
        node = self._node(pool.name)
        inputs = node.all_input_nodes if node is not None else []
        if len(inputs) != 1 or self._names.get(inputs[0], inputs[0].name) != before.name:
            return None
        return before

    def from_context(self, pooled: Any, info: LayerInfo, model: Any) -> Any:
        import numpy as np
        import torch

        context = self.context_layer(info)
        assert context is not None
        pool = self.layers[self.index(context) + 1]
        tail = _tail_module(model, self._gm, self._names, pool.name, info.name)
        shape = self._shapes(self.input_size, self.input_size)[pool.name]
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        value = torch.as_tensor(np.asarray(pooled, dtype=np.float32)).reshape(shape)
        with torch.inference_mode():
            out = tail(value.to(device=device, dtype=dtype))
        return _as_nchw(out, None).to("cpu", torch.float32).numpy()[0].astype(np.float64)

    def _node(self, name: str):
        if self._gm is None:
            return None
        for node, qual in self._names.items():
            if qual == name:
                return node
        return None

    def _block(self, node_name: str) -> str:
        table = self.__dict__.get("_blocks")
        if table is None:
            table = {n.name: self._names.get(n, n.name).split(".")[0] for n in self._gm.graph.nodes}
            self.__dict__["_blocks"] = table
        return table.get(node_name, node_name)

    def forward_steps(self, info: LayerInfo) -> int:
        if self._gm is None:
            return 1
        node = self._node(info.name)
        needed = {node}
        for n in reversed(list(self._gm.graph.nodes)):
            if n in needed:
                needed.update(n.all_input_nodes)
        changes, block = 0, None
        for n in self._gm.graph.nodes:
            if n not in needed or n.op == "placeholder":
                continue
            here = self._block(n.name)
            changes += block is not None and here != block
            block = here
        return changes + 1

    def _extractor(self, model: Any, info: LayerInfo) -> Any:
        from torchvision.models.feature_extraction import create_feature_extractor

        cache = model.__dict__.setdefault("_napari_activations_extractors", {})
        ext = cache.get(info.name)
        if ext is None:
            ext = create_feature_extractor(model, return_nodes={info.name: "out"})
            cache[info.name] = ext
        return ext

    def forward(self, model, x, info):
        if self._gm is None:
            out = yield from _hooked_forward(model, x, info.name)
        else:
            out = yield from _walk(self._extractor(model, info), x, self._block)
        return _as_nchw(out, self._dims.get(info.name))

    def pre_relu(self, info: LayerInfo) -> LayerInfo | None:
        if info.op not in _RELU_OPS or self._gm is None:
            return None
        node = self._node(info.name)
        if node is None or len(node.all_input_nodes) != 1:
            return None
        prev = self._names.get(node.all_input_nodes[0], node.all_input_nodes[0].name)
        found = self._lookup().get(prev.lower())
        if found is None or found.is_global or self._dims.get(prev) != self._dims.get(info.name):
            return None
        return found


MEMORY_OVERHEAD = 2.6
"""Real peak memory of a forward pass over the activations alive at once in its graph, for a
model whose peak was never measured (a user's): the largest ratio measured over torchvision's
networks but one (EfficientNet-B0, 278 bytes per pixel over its graph's 108; MobileNet v3
small's 5x on 16 bytes is covered by the floor of SqueezeNet's 160). Measured with
``benchmarks/bench_networks.py --bytes-all``; the named networks use their own measured peaks
(:data:`napari_activations.network.MEASURED_BYTES_PER_PIXEL`)."""

_MEAN_OPS = {"AdaptiveAvgPool2d", "adaptive_avg_pool2d", "mean"}
_FAILED = "\0failed"  # key of the size pass's error, where it failed


def _meta_shapes(
    gm: Any, names: dict, meta: Any, in_channels: int, hw: tuple[int, int]
) -> tuple[dict[str, tuple[int, ...]], int]:
    """Shapes of every node for an ``hw`` input, from one pass on PyTorch's meta device (no
    arithmetic, no memory), and the peak bytes of the tensors alive at once on the way (a
    traced model only; 0 otherwise). Nodes after one that fails (input too small) are absent.
    """
    import torch

    shapes: dict[str, tuple[int, ...]] = {}
    x = torch.empty((1, in_channels, *hw), device="meta")
    peak = 0
    if gm is not None:
        interp = torch.fx.Interpreter(gm)
        env: dict = {}
        interp.env = env
        last_use = {arg: node for node in gm.graph.nodes for arg in node.all_input_nodes}
        live = 0
        try:
            with torch.no_grad():
                for node in gm.graph.nodes:
                    if node.op == "placeholder":
                        env[node] = x
                        continue
                    if node.op == "output":
                        break
                    env[node] = value = interp.run_node(node)
                    if isinstance(value, torch.Tensor):
                        shapes[names.get(node, node.name)] = tuple(value.shape)
                        live += value.numel() * value.element_size()
                    peak = max(peak, live)
                    for arg in node.all_input_nodes:
                        gone = env.get(arg) if last_use.get(arg) is node else None
                        if isinstance(gone, torch.Tensor):
                            live -= gone.numel() * gone.element_size()
        except Exception as err:  # noqa: BLE001 - too small (or mismatched) from here on
            shapes[_FAILED] = (f"{type(err).__name__}: {str(err).strip().splitlines()[0]}",)
        return shapes, peak
    handles = []
    for path, module in meta.named_modules():
        if path and not list(module.children()):

            def hook(m, i, o, path=path):
                if isinstance(o, torch.Tensor) and path not in shapes:
                    shapes[path] = tuple(o.shape)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            meta(x)
    except Exception:  # noqa: BLE001
        pass
    finally:
        for h in handles:
            h.remove()
    return shapes, peak


def _walk(ext: Any, x: Any, block_of: Any) -> Generator[None, None, Any]:
    """Run a truncated graph module node by node, yielding when the top-level block changes
    and once at the end; values are freed after their last use. Its output's ``"out"``."""
    import torch

    interp = torch.fx.Interpreter(ext)
    env: dict = {}
    interp.env = env
    last_use = {arg: node for node in ext.graph.nodes for arg in node.all_input_nodes}
    block = out = None
    for node in ext.graph.nodes:
        if node.op == "placeholder":
            env[node] = x
            continue
        if node.op == "output":
            out = interp.fetch_args_kwargs_from_env(node)[0][0]["out"]
            break
        here = block_of(node.name)
        if block is not None and here != block:
            yield
        block = here
        env[node] = interp.run_node(node)
        for arg in node.all_input_nodes:
            if last_use.get(arg) is node:
                env.pop(arg, None)
    yield
    return out


def _hooked_forward(model: Any, x: Any, path: str) -> Generator[None, None, Any]:
    """``model(x)`` stopped at module ``path``'s output (for models fx cannot trace)."""

    def hook(m, i, o):
        raise _StopForward(o)

    handle = model.get_submodule(path).register_forward_hook(hook)
    try:
        model(x)
    except _StopForward as stop:
        out = stop.value
    else:
        raise UnknownLayerError(f"Module {path!r} was not called by the forward pass.")
    finally:
        handle.remove()
    yield
    return out


def _is_image(shape: tuple[int, ...] | None, row: LayerInfo, dims: dict) -> bool:
    if shape is None:
        return False
    if row.is_global:
        return len(shape) == 2 or (len(shape) == 4 and shape[2] == shape[3] == 1)
    return len(shape) == 4 and (dims.get(row.name) or (2, 3)) in ((2, 3), (1, 2))


def _as_nchw(out: Any, dims: tuple[int, int] | None) -> Any:
    """An activation tensor as ``(N, C, h, w)``: channels-last nodes moved, ``(N, C)`` global
    nodes as ``(N, C, 1, 1)``."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 2:
        return out[:, :, None, None]
    if out.ndim == 4 and dims == (1, 2):
        return out.permute(0, 3, 1, 2)
    return out


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device (no weights in memory), in eval mode."""
    import torch

    twin = copy.deepcopy(model) if not _all_meta(model) else model
    twin = twin.to("meta").eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    del torch
    return twin


def _all_meta(model: nn.Module) -> bool:
    return all(p.is_meta for p in model.parameters())


def _cpu_twin(model: nn.Module) -> nn.Module:
    """``model`` itself where its weights are real; a CPU copy with empty weights where it
    lives on the meta device (geometry needs a real forward pass)."""
    if not _all_meta(model) or not list(model.parameters()):
        return model
    return copy.deepcopy(model).to_empty(device="cpu").eval()


def _tail_module(model: Any, gm: Any, names: dict, start: str, end: str) -> Any:
    """A module computing node ``end`` from node ``start``'s value (the rest of a network
    after its global pool), built from the traced graph with ``start`` as the input."""
    import torch
    from torch import fx

    nodes = {names.get(n, n.name): n for n in gm.graph.nodes}
    start_node, end_node = nodes[start], nodes[end]
    graph = fx.Graph()
    env = {start_node: graph.placeholder("pooled")}
    order = list(gm.graph.nodes)
    for node in order[order.index(start_node) + 1 : order.index(end_node) + 1]:
        if node.op == "placeholder":
            raise UnknownLayerError(f"{end!r} does not follow from {start!r} alone.")
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[end_node])
    tail = fx.GraphModule(model, graph)
    tail.graph.eliminate_dead_code()
    tail.recompile()
    del torch
    return tail.eval()
