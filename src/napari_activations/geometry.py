"""Where each activation pixel sits on the image: geometry derived from a network's graph.

Pure torch (no napari, no Qt). For any ``torch.nn.Module`` that ``torch.fx`` can trace,
:func:`derive_geometry` walks the graph, node by node, with the node names of
``torchvision.models.feature_extraction`` (``layer3.1.relu_1``), and gives every node that
carries an activation:

- ``stride`` (S) and ``offset`` (O), per axis: activation pixel ``i`` sits over input pixel
  ``O + S * i``, the centre of its receptive field;
- ``receptive_field`` (RF), per axis: the side, in input pixels, of the box that one activation
  pixel sees;
- its channels, whether it comes after a ReLU (values that cannot be negative), whether it is
  aligned and whether it is global,

with the conventions of the SqueezeNet table in :mod:`napari_activations.layers`.

How each activation pixel's support is tracked
-----------------------------------------------
Along each axis, activation pixel ``j`` depends on the input pixels ``first(j) .. last(j)``.
For a strided network these bounds grow by S per pixel. After a transposed convolution or an
upsampling the stride is a fraction (S = 1/2, ...) and the bounds repeat with a period of
several pixels, so they are kept per phase of that period, in exact integer arithmetic. S, O
and RF are then the hull over the phases: every pixel's support lies in the RF box centred on
``O + S * i``, and with an integer stride it *is* that box.

Checked by measurement
----------------------
:func:`measure_geometry` finds a node's geometry from gradients alone, and
:func:`check_geometry` compares the derived support of every node with the measured one: in a
copy of the model with pointwise activations as identity, max pools as average pools and
positive weights (so that no contribution cancels), the input pixels where
``d(activation pixel i) / d(input)`` is not zero are exactly the derived support of ``i``.
Gates computed from the whole image (squeeze-and-excitation) would make every pixel depend on
every input pixel; the measurement holds them constant, and the derived table flags such
nodes as ``global_context``.

Models that ``torch.fx`` cannot trace (data-dependent control flow) fall back to forward hooks
on their modules, whose geometry is measured; ``source`` says which was used.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

__all__ = [
    "AxisSupport",
    "NodeGeometry",
    "GeometryError",
    "derive_geometry",
    "measure_geometry",
    "check_geometry",
    "GeometryMismatch",
]


class GeometryError(ValueError):
    """The geometry could not be derived or measured; the message says why and what to do."""


# --- one axis: which input pixels each activation pixel sees ---------------------------------


@dataclass(frozen=True)
class AxisSupport:
    """Input pixels seen by each activation pixel along one axis, periodic in the pixel index.

    Activation pixel ``j`` depends on input pixels ``first(j) .. last(j)`` (inclusive), with
    ``first(j + period) == first(j) + step``: every ``period`` activation pixels the support
    moves by ``step`` input pixels. Integer strides have ``period == 1``.

    Attributes
    ----------
    step : int
        Input pixels per period.
    period : int
        Activation pixels per period.
    lo, hi : tuple of int
        ``first(r)`` and ``last(r)`` for ``r`` in ``0 .. period - 1``.
    """

    step: int
    period: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    def first(self, j: int) -> int:
        """First input pixel that activation pixel ``j`` depends on."""
        return self.lo[j % self.period] + self.step * (j // self.period)

    def last(self, j: int) -> int:
        """Last input pixel that activation pixel ``j`` depends on."""
        return self.hi[j % self.period] + self.step * (j // self.period)

    @property
    def stride(self) -> Fraction:
        """S: input pixels per activation pixel."""
        return Fraction(self.step, self.period)

    def _hull(self) -> tuple[Fraction, Fraction]:
        s = self.stride
        return (
            min(self.lo[r] - s * r for r in range(self.period)),
            max(self.hi[r] - s * r for r in range(self.period)),
        )

    @property
    def offset(self) -> Fraction:
        """O: the input pixel under activation pixel 0 (centre of the hull over phases)."""
        lo, hi = self._hull()
        return (lo + hi) / 2

    @property
    def receptive_field(self) -> Fraction:
        """RF: side of the box, centred on ``O + S * j``, that holds every pixel's support."""
        lo, hi = self._hull()
        return hi - lo + 1

    @classmethod
    def identity(cls) -> AxisSupport:
        """The input itself: pixel ``j`` sees input pixel ``j``."""
        return cls(1, 1, (0,), (0,))

    def gather(
        self, taps: Callable[[int], Sequence[int]], new_per: int, old_per: int
    ) -> AxisSupport:
        """Support after an operation whose output pixel ``j`` reads input pixels ``taps(j)``.

        ``taps(j + new_per)`` must be ``taps(j)`` shifted by ``old_per``: a convolution with
        stride s has ``(1, s)``, an upsampling by f has ``(f, 1)``.
        """
        k = self.period // math.gcd(self.period, old_per)  # periods of the old index to shift
        period = k * new_per
        step = k * old_per * self.step // self.period
        lo, hi = [], []
        for r in range(period):
            src = list(taps(r))
            if not src:
                raise GeometryError("an output pixel that depends on no input pixel")
            lo.append(min(self.first(i) for i in src))
            hi.append(max(self.last(i) for i in src))
        return AxisSupport(step, period, tuple(lo), tuple(hi))._reduced()

    def union(self, other: AxisSupport) -> AxisSupport | None:
        """Support of a merge (add, concat): per pixel the hull of both. None if S differ."""
        period = math.lcm(self.period, other.period)
        if self.step * (period // self.period) != other.step * (period // other.period):
            return None
        step = self.step * (period // self.period)
        lo = tuple(min(self.first(r), other.first(r)) for r in range(period))
        hi = tuple(max(self.last(r), other.last(r)) for r in range(period))
        return AxisSupport(step, period, lo, hi)._reduced()

    def _reduced(self) -> AxisSupport:
        # The smallest period that describes the same supports.
        for q in range(1, self.period + 1):
            if self.period % q or (self.step * q) % self.period:
                continue
            p = self.step * q // self.period
            if all(
                self.lo[r + q] == self.lo[r] + p and self.hi[r + q] == self.hi[r] + p
                for r in range(self.period - q)
            ):
                return AxisSupport(p, q, self.lo[:q], self.hi[:q])
        return self


def _conv_taps(k: int, s: int, p: int, d: int) -> tuple[Callable[[int], list[int]], int, int]:
    return (lambda j: [s * j - p + t * d for t in range(k)]), 1, s


def _transposed_taps(k: int, s: int, p: int, d: int) -> tuple[Callable[[int], list[int]], int, int]:
    # output j = s * i - p + t * d  for input i and kernel tap t
    return (lambda j: [(j + p - t * d) // s for t in range(k) if (j + p - t * d) % s == 0]), s, 1


def _upsample_taps(f: int, mode: str) -> tuple[Callable[[int], list[int]], int, int]:
    if mode == "nearest":
        return (lambda j: [j // f]), f, 1
    cubic = mode == "bicubic"

    def taps(j: int) -> list[int]:
        src = Fraction(2 * j + 1, 2 * f) - Fraction(1, 2)  # PyTorch, align_corners=False
        i0 = math.floor(src)
        if src == i0:  # the neighbours' weights are exactly zero
            return [i0]
        return list(range(i0 - 1, i0 + 3)) if cubic else [i0, i0 + 1]

    return taps, f, 1


# --- the public row --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeGeometry:
    """Geometry of one node (a network layer's activation) of a traced or hooked model.

    Attributes
    ----------
    name : str
        Node name as in ``torchvision.models.feature_extraction`` (e.g. ``"layer3.1.relu_1"``),
        or the module path where hooks were used.
    op : str
        What the node computes, e.g. ``"Conv2d"``, ``"max_pool2d"``, ``"add"``.
    channels : int or None
        Channels of the activation (features, for a global node).
    stride, offset, receptive_field : tuple of float, or None
        Per axis ``(rows, columns)``: S, O and RF in input pixels (see the module docstring).
        None for global nodes and for nodes without a single grid (``aligned`` False).
    after_relu : bool
        True if the values cannot be negative (after a ReLU, a pool of ReLU outputs, ...).
    aligned : bool
        False where branches with different S or O merge, or the grid depends on the input
        size (adaptive pooling to more than one pixel): such a node can only be shown
        stretched over the image. Global nodes are aligned (one pixel over the image).
    is_global : bool
        True for nodes whose single pixel sees the whole image (global pooling, flatten, ...).
    global_context : bool
        True if the node also depends on the whole image through a global branch
        (squeeze-and-excitation); its receptive field is that of its local path.
    source : str
        ``"traced"`` (derived from the torch.fx graph) or ``"measured"`` (gradients, where the
        graph could not be used).
    block : str
        Top-level module the node belongs to, for menus.
    note : str
        Why a node is not aligned, or ``""``.
    support : tuple of AxisSupport, or None
        The exact per-axis supports behind S, O and RF (rows, columns).
    dims : (int, int) or None
        Which dimensions of the activation tensor are its rows and columns (``(2, 3)`` for
        ``(N, C, H, W)``, ``(1, 2)`` for channels-last).
    """

    name: str
    op: str
    channels: int | None
    stride: tuple[float, float] | None
    offset: tuple[float, float] | None
    receptive_field: tuple[float, float] | None
    after_relu: bool
    aligned: bool
    is_global: bool
    global_context: bool = False
    source: str = "traced"
    block: str = ""
    note: str = ""
    support: tuple[AxisSupport, AxisSupport] | None = field(default=None, repr=False, compare=False)
    dims: tuple[int, int] | None = field(default=None, repr=False, compare=False)


def _row(name: str, op: str, channels: int | None, value: Any, source: str) -> NodeGeometry:
    block = name.split(".")[0]
    if isinstance(value, _Global):
        return NodeGeometry(
            name, op, channels, None, None, None, value.nonneg, True, True, False, source, block
        )
    if isinstance(value, _Unaligned):
        return NodeGeometry(
            name,
            op,
            channels,
            None,
            None,
            None,
            value.nonneg,
            False,
            False,
            value.context,
            source,
            block,
            value.note,
            None,
            value.dims,
        )
    axes = value.axes
    return NodeGeometry(
        name,
        op,
        channels,
        tuple(float(a.stride) for a in axes),
        tuple(float(a.offset) for a in axes),
        tuple(float(a.receptive_field) for a in axes),
        value.nonneg,
        value.aligned,
        False,
        value.context,
        source,
        block,
        value.note,
        axes,
        value.dims,
    )


# --- values flowing through the graph --------------------------------------------------------


@dataclass(frozen=True)
class _Local:
    """An activation with a grid: per-axis supports, and which tensor dims are (rows, cols)."""

    axes: tuple[AxisSupport, AxisSupport]
    dims: tuple[int, int]
    nonneg: bool = False
    context: bool = False
    aligned: bool = True
    note: str = ""


@dataclass(frozen=True)
class _Global:
    nonneg: bool = False


@dataclass(frozen=True)
class _Unaligned:
    dims: tuple[int, int] | None
    nonneg: bool = False
    context: bool = False
    note: str = ""


@dataclass(frozen=True)
class _Seq:
    items: tuple


_CONST = None  # a value that does not depend on the input (weights, sizes, constants)

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.Hardshrink,
    nn.Softshrink,
)
_NONNEG_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardsigmoid, nn.Sigmoid, nn.Softplus)
_SIGN_KEEPING_MODULES = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
)
_PER_PIXEL_MODULES = _ACTIVATIONS + (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.BatchNorm2d,
    nn.SyncBatchNorm,
    nn.LocalResponseNorm,
    nn.Softmax2d,
)

_RELU_FUNCS = {
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    F.relu6,
    F.hardsigmoid,
    torch.sigmoid,
    F.sigmoid,
    F.softplus,
}
_POINTWISE_FUNCS = _RELU_FUNCS | {
    F.hardtanh,
    F.hardtanh_,
    F.leaky_relu,
    F.leaky_relu_,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    torch.tanh,
    F.tanh,
    F.dropout,
    F.dropout2d,
    F.alpha_dropout,
    F.batch_norm,
    torch.clamp,
    torch.clip,
    operator.neg,
    torch.neg,
    torch.exp,
    torch.abs,
    torch.sqrt,
    operator.pow,
    torch.pow,
    torch.square,
    F.local_response_norm,
}
# functions that torch.fx keeps whole (torch.fx.wrap) and that act on each sample or pixel
_POINTWISE_NAMES = {"stochastic_depth", "drop_path", "drop_block2d"}
# methods that are activation functions (made identity by the measurement's linearised copy)
_ACTIVATION_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_min_",
    "hardtanh_",
}
_POINTWISE_METHODS = _ACTIVATION_METHODS | {
    "contiguous",
    "clone",
    "float",
    "double",
    "half",
    "to",
    "type_as",
    "detach",
    "exp",
    "abs",
    "neg",
    "pow",
    "sqrt",
    "square",
    "mul_",
    "add_",
    "sub_",
    "div_",
}
_NONNEG_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "abs", "exp", "sqrt", "square"}
_BINARY_FUNCS = {
    operator.add,
    operator.iadd,
    torch.add,
    operator.mul,
    operator.imul,
    torch.mul,
    operator.sub,
    operator.isub,
    torch.sub,
    operator.truediv,
    operator.itruediv,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_SIGN_KEEPING_BINARY = {
    operator.add,
    operator.iadd,
    torch.add,
    operator.mul,
    operator.imul,
    torch.mul,
    operator.truediv,
    operator.itruediv,
    torch.div,
    torch.maximum,
    torch.minimum,
    "add",
    "add_",
    "mul",
    "mul_",
    "div",
    "div_",
}


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (1, 1)
    return (int(v), int(v))


# --- the derivation --------------------------------------------------------------------------


def _trace(model: nn.Module) -> tuple[fx.GraphModule, dict[fx.Node, str]]:
    """Trace ``model`` (in eval mode) as ``torchvision.models.feature_extraction`` does."""
    from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

    tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
    with _eval_mode(model):
        graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph), dict(tracer.node_to_qualname)


def _shape_prop(gm: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> None:
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(*inputs)


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Deriver:
    """Walks one graph in execution order: each call node's value from its inputs' values.

    The walk knows only the graph: which value each node gets. What an operation does to the
    geometry is a rule, looked up by module type, function or method name in the tables below
    (``_MODULE_RULES``, ``_FUNCTION_RULES``, ``_METHOD_RULES``).
    """

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.values: dict[fx.Node, Any] = {}
        self.ops: dict[fx.Node, str] = {}

    def run(self, inputs: Sequence[Any]) -> Any:
        placeholders = iter(inputs)
        result = _CONST
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                value = next(placeholders, _CONST)
            elif node.op == "output":
                result = _value_of(self.values, node.args[0])
                continue
            elif node.op == "get_attr":
                value = _CONST
            else:
                try:
                    value = self._node(node)
                except GeometryError:
                    raise
                except Exception as err:  # noqa: BLE001 - a rule met a call it cannot read
                    raise GeometryError(
                        f"Cannot derive the geometry at node {node.name!r} "
                        f"({self.ops.get(node, node.target)}): {_root_cause(err)}. "
                        "measure_geometry(model, layer) measures it instead."
                    ) from err
            self.values[node] = value
        return result

    def _node(self, node: fx.Node) -> Any:
        if not _inputs_of(self.values, node):
            return _CONST
        target = node.target
        if node.op == "call_module":
            module = self.modules[target]
            self.ops[node] = type(module).__name__
            module_rule = next(
                (r for types, r in _MODULE_RULES if isinstance(module, types)), self._submodule
            )
            return module_rule(_Call(node, self.values, self.ops[node]), module)
        self.ops[node] = (
            target if isinstance(target, str) else getattr(target, "__name__", str(target))
        )
        call = _Call(node, self.values, self.ops[node])
        if node.op == "call_method":
            rule = _METHOD_RULES.get(target, _unknown_method)
        elif getattr(target, "__name__", None) in _POINTWISE_NAMES:
            rule = _pointwise_function
        else:
            rule = _FUNCTION_RULES.get(target, _unknown_function)
        return rule(call)

    def _submodule(self, call: _Call, m: nn.Module) -> Any:
        """A leaf that is not a torch.nn primitive (torchvision.ops blocks, ...): trace inside."""
        try:
            sub = fx.symbolic_trace(m)
        except Exception as err:  # noqa: BLE001 - any tracing failure means: cannot look inside
            return _unaligned(call.x, f"cannot trace into {type(m).__name__}: {err}")
        args = list(call.node.args)
        tensors = []
        for a in args:
            meta = a.meta.get("tensor_meta") if isinstance(a, fx.Node) else None
            tensors.append(
                torch.zeros(meta.shape, dtype=meta.dtype, device=_device(m))
                if meta is not None and hasattr(meta, "shape")
                else a
            )
        try:
            _shape_prop(sub, tensors)
        except Exception as err:  # noqa: BLE001
            return _unaligned(call.x, f"cannot run {type(m).__name__}: {err}")
        return _Deriver(sub).run([call.value(a) for a in args])


def _value_of(values: dict[fx.Node, Any], a: Any) -> Any:
    """The value of an argument: a node's, a sequence of them, or _CONST for anything else."""
    if isinstance(a, fx.Node):
        return values[a]
    if isinstance(a, (tuple, list)):
        return _Seq(tuple(_value_of(values, x) for x in a))
    return _CONST


def _inputs_of(values: dict[fx.Node, Any], node: fx.Node) -> list[Any]:
    """The values of every node among ``node``'s arguments, at any depth, but constants."""
    found: list[Any] = []

    def visit(a: Any) -> None:
        if isinstance(a, fx.Node):
            found.append(values[a])
        elif isinstance(a, (tuple, list)):
            for x in a:
                visit(x)
        elif isinstance(a, dict):
            for x in a.values():
                visit(x)

    visit(node.args)
    visit(node.kwargs)
    return [v for v in found if v is not _CONST]


class _Call:
    """One call node as a rule sees it: the values of its arguments, its parameters, shapes.

    Attributes
    ----------
    node : torch.fx.Node
        The call.
    op : str
        Its operation's name (module type, function or method name), for notes.
    x : Any
        The value of its first argument (or of its ``input=`` keyword).
    """

    def __init__(self, node: fx.Node, values: dict[fx.Node, Any], op: str):
        self.node = node
        self.values = values
        self.op = op
        self.x = self.value(node.args[0]) if node.args else self.value(node.kwargs.get("input"))

    def value(self, a: Any) -> Any:
        """The value of one argument (a node, or a sequence of nodes)."""
        return _value_of(self.values, a)

    def inputs(self) -> list[Any]:
        """The values of every node among the arguments, constants left out."""
        return _inputs_of(self.values, self.node)

    def param(self, pos: int, name: str, default: Any) -> Any:
        """A parameter as written in the call: positional ``pos``, or keyword ``name``."""
        if len(self.node.args) > pos:
            return self.node.args[pos]
        return self.node.kwargs.get(name, default)

    @property
    def ndim(self) -> int:
        """Dimensions of the first argument (4 if unknown)."""
        return _ndim(self.node.args[0])

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        """Shape of the first argument, from shape propagation."""
        return _shape(self.node.args[0])

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        """Shape of the call's result, from shape propagation."""
        return _shape(self.node)


# --- rules: what one operation does to a value -----------------------------------------------
# Each takes the value of the operation's input (``x``, or ``parts`` for merges) and the plain
# facts it needs (kernel, dims, shapes), and returns the value of its output.


def _window(x: Any, k, s, pad, d, nonneg: bool) -> Any:
    """Convolution or pooling: kernel ``k``, stride ``s``, padding ``pad``, dilation ``d``."""
    if not isinstance(x, _Local):
        return _pointwise_of(x, nonneg)
    try:
        axes = tuple(a.gather(*_conv_taps(k[i], s[i], pad[i], d[i])) for i, a in enumerate(x.axes))
    except GeometryError as err:
        return _unaligned(x, str(err))
    return replace(x, axes=axes, nonneg=nonneg)


def _spread(x: Any, taps, nonneg: bool) -> Any:
    """Transposed convolution, upsampling, pixel shuffle: ``taps`` per axis as ``gather`` takes."""
    if not isinstance(x, _Local):
        return _pointwise_of(x, nonneg)
    try:
        axes = tuple(a.gather(*t) for a, t in zip(x.axes, taps, strict=False))
    except GeometryError as err:
        return _unaligned(x, str(err))
    return replace(x, axes=axes, nonneg=nonneg)


def _upsample(
    x: Any, scale: Any, mode: str, align_corners: Any, src: tuple | None, out: tuple | None
) -> Any:
    """Upsampling by ``scale``, or (without one) from shape ``src`` to shape ``out``."""
    if not isinstance(x, _Local):
        return x
    if align_corners:
        return _unaligned(x, "upsampling with align_corners=True (grid depends on size)")
    if mode not in ("nearest", "bilinear", "bicubic"):
        return _unaligned(x, f"upsampling mode {mode!r}")
    factors = []
    if scale is not None:
        scale = scale if isinstance(scale, (tuple, list)) else (scale, scale)
        factors = [float(f) for f in scale]
    else:
        if src is None or out is None:
            return _unaligned(x, "upsampling to a size")
        factors = [out[d] / src[d] for d in x.dims]
    if any(f != int(f) or f < 1 for f in factors):
        return _unaligned(x, "upsampling by a factor that is not a whole number")
    nonneg = _nonneg(x) and mode != "bicubic"
    return _spread(x, [_upsample_taps(int(f), mode) for f in factors], nonneg)


def _pad(x: Any, pad: Sequence[int] | int, nd: int, nonneg: bool) -> Any:
    """Padding as ``F.pad`` lists it, on an ``nd``-dimensional tensor."""
    if not isinstance(x, _Local):
        return x
    pad = (pad,) * 4 if isinstance(pad, int) else tuple(pad)
    axes = list(x.axes)
    for a, dim in enumerate(x.dims):
        k = nd - 1 - dim  # F.pad lists (before, after) pairs from the last dim backwards
        before = pad[2 * k] if 2 * k < len(pad) else 0
        if before:
            axes[a] = axes[a].gather(lambda j, p=before: [j - p], 1, 1)
    return replace(x, axes=tuple(axes), nonneg=nonneg)


def _adaptive(x: Any, size: Any) -> Any:
    """Adaptive pooling to ``size``: global to 1x1, else a grid that depends on the input."""
    if not isinstance(x, (_Local, _Unaligned)):
        return x
    size = size if isinstance(size, (tuple, list)) else (size, size)
    if all(s == 1 for s in size):
        return _Global(_nonneg(x))
    return _Unaligned(
        x.dims, _nonneg(x), x.context, "adaptive pooling: its grid depends on the input size"
    )


def _merge(parts: Sequence[Any], nonneg: bool) -> Any:
    """Add, multiply, concatenate along channels: per pixel, the hull of every part's support."""
    parts = [p.value if isinstance(p, _Repeat) else p for p in parts if p is not _CONST]
    if not parts:
        return _CONST
    local = [p for p in parts if isinstance(p, _Local)]
    unaligned = [p for p in parts if isinstance(p, _Unaligned)]
    globals_ = [p for p in parts if isinstance(p, _Global)]
    nonneg = nonneg and all(_nonneg(p) for p in parts)
    if unaligned:
        u = unaligned[0]
        return _Unaligned(u.dims, nonneg, any(_context(p) for p in parts) or bool(globals_), u.note)
    if not local:
        return _Global(nonneg)
    context = bool(globals_) or any(p.context for p in local)
    first = local[0]
    axes = list(first.axes)
    aligned = all(p.aligned for p in local)
    note = next((p.note for p in local if p.note), "")
    for p in local[1:]:
        if p.dims != first.dims:
            return _Unaligned(first.dims, nonneg, context, "branches with different layouts")
        for a in range(2):
            if (p.axes[a].stride, p.axes[a].offset) != (axes[a].stride, axes[a].offset):
                aligned = False
                note = note or (
                    f"branches disagree: S={_fmt(axes[a].stride)}, "
                    f"O={_fmt(axes[a].offset)} vs S={_fmt(p.axes[a].stride)}, "
                    f"O={_fmt(p.axes[a].offset)}"
                )
            merged = axes[a].union(p.axes[a])
            if merged is None:
                return _Unaligned(first.dims, nonneg, context, note)
            axes[a] = merged
    return _Local(tuple(axes), first.dims, nonneg, context, aligned, note)


def _cat(parts: Sequence[Any], nd: int, dim: int) -> Any:
    """Concatenation of ``nd``-dimensional parts along ``dim``."""
    live = [p for p in parts if p is not _CONST]
    for p in live:
        if isinstance(p, (_Local, _Unaligned)) and p.dims is not None and dim % nd in p.dims:
            return _unaligned(p, "concatenation along a spatial axis")
    return _merge(live, nonneg=all(_nonneg(p) for p in live))


def _last_dim(x: Any, nd: int, nonneg: bool) -> Any:
    """An operation that mixes the last dim (Linear): global if that dim is spatial."""
    if isinstance(x, (_Local, _Unaligned)) and x.dims is not None and nd - 1 in x.dims:
        return _Global(nonneg)
    return _pointwise_of(x, nonneg)


def _norm_over(x: Any, nd: int, n_last: int) -> Any:
    """A norm over the last ``n_last`` dims (LayerNorm): context if any of them is spatial."""
    if (
        isinstance(x, (_Local, _Unaligned))
        and x.dims is not None
        and any(d >= nd - n_last for d in x.dims)
    ):
        return _with_context(x)
    return _pointwise_of(x, False)


def _reduce_like(x: Any, nd: int, dims: list, nonneg: bool) -> Any:
    """An operation that keeps shape but mixes ``dims`` (softmax): context if one is spatial."""
    if (
        isinstance(x, (_Local, _Unaligned))
        and x.dims is not None
        and any(d is None or d % nd in x.dims for d in dims)
    ):
        return _with_context(x, nonneg)
    return _pointwise_of(x, nonneg)


def _reduce(x: Any, nd: int, dim: Any, keep: bool, nonneg: bool) -> Any:
    """A reduction (mean, sum, amax) over ``dim`` (None: all), keeping dims if ``keep``."""
    if not isinstance(x, (_Local, _Unaligned)) or x.dims is None:
        return _pointwise_of(x, nonneg)
    dims = list(range(nd)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    dims = [d % nd for d in dims]
    hit = [d for d in x.dims if d in dims]
    if len(hit) == 2:
        return _Global(nonneg)
    if hit:
        return _unaligned(x, "a reduction over one spatial axis")
    if keep:
        return _pointwise_of(x, nonneg)
    return _shift_dims(
        replace(x, nonneg=nonneg) if isinstance(x, _Local) else x,
        lambda d: d - sum(1 for r in dims if r < d),
    )


def _flatten(x: Any, nd: int, start: int, end: int) -> Any:
    if not isinstance(x, (_Local, _Unaligned)) or x.dims is None:
        return x
    start, end = start % nd, end % nd
    if any(start <= d <= end for d in x.dims) and end > start:
        return _Global(_nonneg(x))
    shift = end - start
    return _shift_dims(x, lambda d: d - shift if d > end else d)


def _permute(x: Any, perm: Sequence[int]) -> Any:
    if not isinstance(x, (_Local, _Unaligned)) or x.dims is None:
        return x
    perm = [int(p) % len(perm) for p in perm]
    return _shift_dims(x, lambda d: perm.index(d))


def _transpose(x: Any, nd: int, a: int, b: int) -> Any:
    if not isinstance(x, (_Local, _Unaligned)) or x.dims is None:
        return x
    a, b = a % nd, b % nd
    return _shift_dims(x, lambda d: b if d == a else a if d == b else d)


def _reshape(x: Any, src: tuple | None, out: tuple | None) -> Any:
    """A view or reshape from shape ``src`` to shape ``out``: the spatial dims if both survive."""
    if not isinstance(x, (_Local, _Unaligned)) or x.dims is None:
        return x
    if src is None or out is None:
        return _unaligned(x, "a reshape of unknown shape")
    mapping = {}
    for d in x.dims:
        before = math.prod(src[:d])
        for o in range(len(out)):
            if math.prod(out[:o]) == before and out[o] == src[d]:
                mapping[d] = o
                break
    if len(mapping) == 2:
        return _shift_dims(x, mapping.__getitem__)
    return _Global(_nonneg(x))


def _split(x: Any, nd: int, dim: int) -> Any:
    """A split (chunk, split, unbind) along ``dim``: pieces along channels keep the geometry."""
    if isinstance(x, (_Local, _Unaligned)) and x.dims is not None and dim % nd in x.dims:
        return _unaligned(x, "a split along a spatial axis")
    return _Repeat(x)


def _getitem(x: Any, src: tuple | None, index: Any) -> Any:
    """``x[index]``: a piece of a sequence or split, or basic indexing of a tensor of ``src``."""
    if isinstance(x, _Seq):
        return x.items[index] if isinstance(index, int) else _Seq(x.items[index])
    if isinstance(x, _Repeat):
        return x.value
    if not isinstance(x, (_Local, _Unaligned)) or x.dims is None:
        return x
    index = index if isinstance(index, tuple) else (index,)
    if src is None or any(isinstance(i, fx.Node) for i in index):
        return _unaligned(x, "indexing with tensors")
    # expand Ellipsis; map every index entry to the source dim it consumes
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    out_dim, src_dim, new_dims, axes = 0, 0, {}, list(getattr(x, "axes", ()))
    for i in index:
        if i is Ellipsis:
            skip = len(src) - n_real
            for _ in range(skip):
                new_dims[src_dim] = out_dim
                src_dim += 1
                out_dim += 1
        elif i is None:
            out_dim += 1
        elif isinstance(i, int):
            if src_dim in x.dims:
                return _unaligned(x, "indexing one row or column")
            src_dim += 1
        elif isinstance(i, slice):
            if src_dim in x.dims and i != slice(None) and isinstance(x, _Local):
                start, _, step = i.indices(src[src_dim])
                a = x.dims.index(src_dim)
                axes[a] = axes[a].gather(lambda j, s=start, t=step: [s + t * j], 1, step)
            new_dims[src_dim] = out_dim
            src_dim += 1
            out_dim += 1
        else:
            return _unaligned(x, "indexing with an unsupported index")
    while src_dim < len(src):
        new_dims[src_dim] = out_dim
        src_dim += 1
        out_dim += 1
    y = _shift_dims(x, new_dims.__getitem__)
    return replace(y, axes=tuple(axes)) if isinstance(y, _Local) else y


# --- dispatch: which rule each module, function and method follows ---------------------------


def _pointwise_module(c: _Call, m: nn.Module) -> Any:
    sign_kept = isinstance(m, _SIGN_KEEPING_MODULES) and _nonneg(c.x)
    return _pointwise_of(c.x, isinstance(m, _NONNEG_MODULES) or sign_kept)


def _window_module(c: _Call, m: nn.Module) -> Any:
    if isinstance(m, nn.Conv2d):
        k, s, d = m.kernel_size, m.stride, m.dilation
        pad = _conv_padding(m.padding, k, d)
    else:
        k, s = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
        pad = _pair(getattr(m, "padding", 0))
        d = _pair(getattr(m, "dilation", 1))
    return _window(c.x, k, s, pad, d, not isinstance(m, nn.Conv2d) and _nonneg(c.x))


def _transposed_module(c: _Call, m: nn.ConvTranspose2d) -> Any:
    if m.padding == "same" or isinstance(m.padding, str):
        return _unaligned(c.x, "transposed convolution with string padding")
    taps = [
        _transposed_taps(m.kernel_size[i], m.stride[i], m.padding[i], m.dilation[i])
        for i in range(2)
    ]
    return _spread(c.x, taps, False)


def _pad_module(c: _Call, m: nn.Module) -> Any:
    nonneg = _nonneg(c.x) and not isinstance(m, nn.ConstantPad2d)
    return _pad(c.x, m.padding, c.ndim, nonneg)


# In order, the first whose types match; a module that none matches is traced into.
_MODULE_RULES: tuple[tuple[type | tuple[type, ...], Callable[[_Call, Any], Any]], ...] = (
    (_PER_PIXEL_MODULES, _pointwise_module),
    ((nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d), _window_module),
    (nn.ConvTranspose2d, _transposed_module),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), lambda c, m: _adaptive(c.x, m.output_size)),
    (nn.Flatten, lambda c, m: _flatten(c.x, c.ndim, m.start_dim, m.end_dim)),
    (
        nn.Upsample,
        lambda c, m: _upsample(
            c.x, m.scale_factor, m.mode, m.align_corners, c.in_shape, c.out_shape
        ),
    ),
    (
        nn.PixelShuffle,
        lambda c, m: _spread(c.x, [_upsample_taps(m.upscale_factor, "nearest")] * 2, _nonneg(c.x)),
    ),
    ((nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d), _pad_module),
    (nn.Linear, lambda c, m: _last_dim(c.x, c.ndim, nonneg=False)),
    (nn.LayerNorm, lambda c, m: _norm_over(c.x, c.ndim, len(m.normalized_shape))),
    ((nn.GroupNorm, nn.InstanceNorm2d), lambda c, m: _with_context(c.x)),
    (nn.Softmax, lambda c, m: _reduce_like(c.x, c.ndim, [m.dim], nonneg=True)),
)


def _pointwise_function(c: _Call) -> Any:
    f = c.node.target
    return _pointwise_of(c.x, f in _RELU_FUNCS or (f not in _POINTWISE_FUNCS and _nonneg(c.x)))


def _pointwise_method(c: _Call) -> Any:
    name = c.node.target
    sign_kept = name in ("contiguous", "clone", "float", "double", "to", "detach")
    return _pointwise_of(c.x, name in _NONNEG_METHODS or (sign_kept and _nonneg(c.x)))


def _binary_call(c: _Call) -> Any:
    nonneg = c.node.target in _SIGN_KEEPING_BINARY and _positive_constants(c.node)
    return _merge(c.inputs(), nonneg)


def _cat_call(c: _Call) -> Any:
    tensors = c.value(c.param(0, "tensors", ()))
    parts = tensors.items if isinstance(tensors, _Seq) else []
    return _cat(parts, _ndim(c.node), c.param(1, "dim", 0))


def _conv2d_call(c: _Call) -> Any:
    w = _shape(c.param(1, "weight", None))
    if w is None:
        return _unaligned(c.x, "conv2d with a weight of unknown shape")
    k = (w[2], w[3])
    s = _pair(c.param(3, "stride", 1))
    d = _pair(c.param(5, "dilation", 1))
    pad = _conv_padding(c.param(4, "padding", 0), k, d)
    return _window(c.x, k, s, pad, d, False)


def _pool2d_call(c: _Call) -> Any:
    k = _pair(c.param(1, "kernel_size", 1))
    s = c.param(2, "stride", None)
    s = _pair(s) if s not in (None, [], ()) else k
    pad = _pair(c.param(3, "padding", 0))
    d = _pair(c.param(4, "dilation", 1)) if "max" in c.node.target.__name__ else (1, 1)
    return _window(c.x, k, s, pad, d, _nonneg(c.x))


def _interpolate_call(c: _Call) -> Any:
    scale = c.param(2, "scale_factor", None)
    mode = c.param(3, "mode", "nearest")
    align_corners = c.param(4, "align_corners", None)
    return _upsample(c.x, scale, mode, align_corners, c.in_shape, c.out_shape)


def _flatten_call(c: _Call) -> Any:
    return _flatten(c.x, c.ndim, c.param(1, "start_dim", 0), c.param(2, "end_dim", -1))


def _reduce_call(c: _Call) -> Any:
    keep = c.node.kwargs.get("keepdim", c.node.args[2] if len(c.node.args) > 2 else False)
    return _reduce(c.x, c.ndim, c.param(1, "dim", None), keep, nonneg=_nonneg(c.x))


def _softmax_call(c: _Call) -> Any:
    return _reduce_like(c.x, c.ndim, [c.param(1, "dim", None)], nonneg=True)


def _split_call(c: _Call) -> Any:
    return _split(c.x, c.ndim, c.param(2, "dim", 0))


def _transpose_call(c: _Call) -> Any:
    return _transpose(c.x, c.ndim, c.node.args[1], c.node.args[2])


def _reshape_call(c: _Call) -> Any:
    return _reshape(c.x, c.in_shape, c.out_shape)


def _permute_method(c: _Call) -> Any:
    args = c.node.args
    dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
    return _permute(c.x, dims)


def _unknown_function(c: _Call) -> Any:
    return _unaligned(c.x, f"unknown operation {c.op}")


def _unknown_method(c: _Call) -> Any:
    return _unaligned(c.x, f"unknown method .{c.node.target}()")


def _rule_table(*groups: tuple[Iterable[Any], Callable[[_Call], Any]]) -> dict[Any, Callable]:
    """A lookup table from (targets, rule) groups; a target in several keeps its first rule."""
    table: dict[Any, Callable] = {}
    for targets, rule in groups:
        for target in targets:
            table.setdefault(target, rule)
    return table


# call_function nodes, by function (and, for those torch.fx keeps whole, by _POINTWISE_NAMES)
_FUNCTION_RULES = _rule_table(
    (_POINTWISE_FUNCS, _pointwise_function),
    (_BINARY_FUNCS, _binary_call),
    ((torch.cat, torch.concat, torch.concatenate), _cat_call),
    ((F.conv2d,), _conv2d_call),
    ((F.max_pool2d, torch.max_pool2d, F.avg_pool2d, torch._C._nn.avg_pool2d), _pool2d_call),
    (
        (F.adaptive_avg_pool2d, F.adaptive_max_pool2d),
        lambda c: _adaptive(c.x, c.param(1, "output_size", None)),
    ),
    ((torch.flatten,), _flatten_call),
    ((F.interpolate,), _interpolate_call),
    (
        (F.pixel_shuffle,),
        lambda c: _spread(
            c.x, [_upsample_taps(c.param(1, "upscale_factor", 1), "nearest")] * 2, _nonneg(c.x)
        ),
    ),
    ((F.pad,), lambda c: _pad(c.x, c.param(1, "pad", ()), c.ndim, _nonneg(c.x))),
    ((F.linear,), lambda c: _last_dim(c.x, c.ndim, nonneg=False)),
    (
        (F.layer_norm,),
        lambda c: _norm_over(c.x, c.ndim, len(c.param(1, "normalized_shape", ()))),
    ),
    ((F.group_norm, F.instance_norm), lambda c: _with_context(c.x)),
    ((torch.permute,), lambda c: _permute(c.x, c.param(1, "dims", ()))),
    ((torch.transpose,), _transpose_call),
    ((torch.reshape, torch.unsqueeze, torch.squeeze), _reshape_call),
    ((torch.mean, torch.sum, torch.amax, torch.amin), _reduce_call),
    ((F.softmax, torch.softmax), _softmax_call),
    ((torch.chunk, torch.split, torch.tensor_split, torch.unbind), _split_call),
    ((operator.getitem,), lambda c: _getitem(c.x, c.in_shape, c.node.args[1])),
    (
        (getattr, len, operator.floordiv, torch._assert, math.sqrt),
        lambda c: _CONST if not isinstance(c.x, _Seq) else c.x,
    ),
)

# call_method nodes, by method name
_METHOD_RULES = _rule_table(
    (("size", "dim", "numel", "__len__"), lambda c: _CONST),
    (_BINARY_METHODS, _binary_call),
    (_POINTWISE_METHODS, _pointwise_method),
    (("permute",), _permute_method),
    (("transpose",), _transpose_call),
    (("view", "reshape", "unsqueeze", "squeeze"), _reshape_call),
    (("flatten",), _flatten_call),
    (("mean", "sum", "amax", "amin"), _reduce_call),
    (("softmax",), _softmax_call),
    (("chunk", "split", "unbind"), _split_call),
    (("expand_as", "expand"), lambda c: c.x),
)


@dataclass(frozen=True)
class _Repeat:
    """The pieces of a split along channels: every piece has the geometry of the whole."""

    value: Any


def _positive_constants(node: fx.Node) -> bool:
    """True if every operand that is not a node is a number >= 0 (keeps the sign)."""
    for a in list(node.args) + list(node.kwargs.values()):
        if isinstance(a, fx.Node):
            if a.op == "get_attr":
                return False
        elif not (isinstance(a, (int, float)) and a >= 0):
            return False
    return True


def _fmt(v: Fraction) -> str:
    return str(v) if v.denominator != 1 else str(v.numerator)


def _nonneg(x: Any) -> bool:
    return bool(getattr(x, "nonneg", False))


def _context(x: Any) -> bool:
    return bool(getattr(x, "context", False))


def _pointwise_of(x: Any, nonneg: bool) -> Any:
    if isinstance(x, (_Local, _Unaligned)):
        return replace(x, nonneg=nonneg)
    if isinstance(x, _Global):
        return _Global(nonneg)
    return x


def _with_context(x: Any, nonneg: bool = False) -> Any:
    if isinstance(x, (_Local, _Unaligned)):
        return replace(x, context=True, nonneg=nonneg)
    return _pointwise_of(x, nonneg)


def _unaligned(x: Any, note: str) -> Any:
    if isinstance(x, _Global) or x is _CONST:
        return x
    dims = getattr(x, "dims", None)
    return _Unaligned(dims, False, _context(x), note)


def _shift_dims(x: Any, f: Callable[[int], int]) -> Any:
    return replace(x, dims=tuple(f(d) for d in x.dims))


def _ndim(node: Any) -> int:
    shape = _shape(node)
    return len(shape) if shape is not None else 4


def _conv_padding(padding: Any, k: Sequence[int], d: Sequence[int]) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    if padding == "same":  # PyTorch puts the odd pixel of padding at the end
        return tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))
    return _pair(padding)


def _channels(shape: tuple[int, ...] | None, value: Any) -> int | None:
    if shape is None or len(shape) < 2:
        return None
    if isinstance(value, (_Local, _Unaligned)) and value.dims is not None:
        rest = [shape[d] for d in range(1, len(shape)) if d not in value.dims]
        return math.prod(rest) if rest else 1
    return math.prod(shape[1:])


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return m.in_channels
    return 3


def derive_geometry(
    model: nn.Module,
    *,
    input_size: tuple[int, int] = (224, 224),
    in_channels: int | None = None,
    fallback: bool = True,
) -> tuple[NodeGeometry, ...]:
    """Geometry of every node of ``model`` that carries an activation, in execution order.

    Parameters
    ----------
    model : torch.nn.Module
        Any 2D convolutional network taking one ``(N, C, H, W)`` tensor. It is not modified.
    input_size : (int, int)
        ``(H, W)`` of the dummy input used to learn shapes (channels, layouts). The geometry
        itself does not depend on it.
    in_channels : int, optional
        Input channels; by default those of the first convolution.
    fallback : bool
        If ``torch.fx`` cannot trace the model, measure the geometry of every leaf module's
        output with forward hooks (:func:`measure_geometry`) instead of raising.

    Returns
    -------
    tuple of NodeGeometry
        Named as ``torchvision.models.feature_extraction.get_graph_node_names`` names them
        (eval mode), or by module path where hooks were used (``source == "measured"``).

    Raises
    ------
    GeometryError
        The model cannot be run on the dummy input, or cannot be traced and ``fallback`` is
        False.
    """
    c = in_channels or _first_conv_channels(model)
    dummy = torch.zeros(1, c, *input_size, dtype=_dtype(model), device=_device(model))
    try:
        gm, names = _trace(model)
    except Exception as err:  # noqa: BLE001 - fx raises many kinds of errors
        if not fallback:
            raise GeometryError(
                f"torch.fx cannot trace this model ({_root_cause(err)}). "
                "Use fallback=True to measure its geometry with forward hooks instead."
            ) from err
        return _hooked_geometry(model, input_size, c)
    with _eval_mode(model):
        try:
            _shape_prop(gm, [dummy])
        except Exception as err:  # noqa: BLE001
            raise GeometryError(
                f"The model cannot run on a {c}-channel {input_size[0]}x{input_size[1]} input "
                f"({_root_cause(err)}). If it takes other channels or sizes, pass "
                "in_channels= and input_size= that it accepts; otherwise its forward fails: "
                "fix the model."
            ) from err
        deriver = _Deriver(gm)
        start = _Local((AxisSupport.identity(), AxisSupport.identity()), (2, 3))
        deriver.run([start])
    rows = []
    for node in gm.graph.nodes:
        value = deriver.values.get(node, _CONST)
        if node.op in ("placeholder", "output", "get_attr") or not isinstance(
            value, (_Local, _Global, _Unaligned)
        ):
            continue
        shape = _shape(node)
        if shape is None:
            continue
        rows.append(
            _row(
                names.get(node, node.name),
                deriver.ops.get(node, node.op),
                _channels(shape, value),
                value,
                "traced",
            )
        )
    return tuple(rows)


def _root_cause(err: BaseException) -> str:
    """The innermost error's first line: torch.fx wraps the real one in its own."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _dtype(model: nn.Module) -> torch.dtype:
    p = next(iter(model.parameters()), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


# --- measurement -----------------------------------------------------------------------------


def _identity(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def _hold_gate(a: Any, *others: Any) -> Any:
    """``a`` held constant (at 1) if it is one pixel (a gate computed from the whole image)
    and is broadcast onto an activation with more pixels.

    A constant 1 rather than the gate's value: with identity activations, every gate would
    multiply the activation by a copy of its own magnitude, and float64 overflows after a
    few blocks.
    """
    if not isinstance(a, torch.Tensor) or a.dim() < 3 or a.shape[-1] * a.shape[-2] != 1:
        return a
    if any(
        isinstance(o, torch.Tensor) and o.dim() >= 3 and o.shape[-1] * o.shape[-2] > 1
        for o in others
    ):
        return torch.ones_like(a)
    return a


_MAX_TO_AVG = {
    F.max_pool2d: F.avg_pool2d,
    torch.max_pool2d: F.avg_pool2d,
    F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
}
_KEEP_FUNCS = {
    F.batch_norm,
    F.dropout,
    F.dropout2d,
    F.alpha_dropout,
    F.local_response_norm,
    operator.neg,
    torch.neg,
    torch.abs,
    torch.exp,
    torch.sqrt,
    operator.pow,
    torch.pow,
    torch.square,
}


def _linearise_graph(gm: fx.GraphModule) -> None:
    """Rewrite a graph in place: no pointwise activations, average pools, gates held fixed."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _MAX_TO_AVG:
            kwargs = dict(node.kwargs)
            kwargs.pop("return_indices", None)
            if node.target in (F.max_pool2d, torch.max_pool2d):
                names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"]
                bound = dict(zip(names, node.args, strict=False)) | kwargs
                if _pair(bound.pop("dilation", 1)) != (1, 1):
                    raise GeometryError("cannot measure a dilated max pool")
                node.args = (bound.pop("input"),)
                kwargs = bound
            node.target = _MAX_TO_AVG[node.target]
            node.kwargs = kwargs
        elif (node.op == "call_function" and node.target in _POINTWISE_FUNCS - _KEEP_FUNCS) or (
            node.op == "call_method" and node.target in _ACTIVATION_METHODS
        ):
            node.op, node.target = "call_function", _identity
        elif (node.op == "call_function" and node.target in _BINARY_FUNCS) or (
            node.op == "call_method" and node.target in _BINARY_METHODS
        ):
            tensors = [a for a in node.args if isinstance(a, fx.Node)]
            if len(tensors) < 2:
                continue
            held = {}
            with graph.inserting_before(node):
                for a in tensors:
                    held[a] = graph.call_function(
                        _hold_gate, (a, *[b for b in tensors if b is not a])
                    )
            node.args = tuple(held.get(a, a) if isinstance(a, fx.Node) else a for a in node.args)
    graph.lint()
    gm.recompile()


class _eval_mode:
    """Every module in eval mode for the duration; each one's own mode restored after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        return False


def _measurement_copy(model: nn.Module, traced: fx.GraphModule | None) -> nn.Module:
    """A float64 copy: activations as identity, max pools as average, positive weights."""
    root = copy.deepcopy(traced if traced is not None else model).to(torch.float64).eval()
    generator = torch.Generator().manual_seed(0)

    def swap(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, _ACTIVATIONS):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                if _pair(child.dilation) != (1, 1):
                    raise GeometryError("cannot measure a dilated max pool")
                setattr(
                    parent,
                    name,
                    nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode),
                )
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, name, nn.AdaptiveAvgPool2d(child.output_size))
            elif (
                not isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
                and not type(child).__module__.startswith("torch.nn")
                and not isinstance(child, fx.GraphModule)
                and traced is not None
            ):
                try:
                    sub = fx.symbolic_trace(child)
                except Exception:  # noqa: BLE001 - keep the module as it is
                    swap(child)
                    continue
                swap(sub)
                _linearise_graph(sub)
                setattr(parent, name, sub)
            else:
                swap(child)

    swap(root)
    if isinstance(root, fx.GraphModule):
        _linearise_graph(root)
    with torch.no_grad():
        for module in root.modules():
            for p in list(module.parameters(recurse=False)):
                fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
                p.copy_((torch.rand(p.shape, generator=generator, dtype=p.dtype) + 0.5) / fan_in)
                p.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return root


def _outputs_of(gm: fx.GraphModule, nodes: Sequence[fx.Node]) -> fx.GraphModule:
    """A copy of ``gm`` that returns the given nodes (a tuple), nothing after them."""
    graph = copy.deepcopy(gm.graph)
    lookup = {n.name: n for n in graph.nodes}
    out = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(out):
        graph.output(tuple(lookup[n.name] for n in nodes))
    graph.erase_node(out)
    sub = fx.GraphModule(gm, graph)
    sub.graph.eliminate_dead_code()
    sub.recompile()
    return sub


def _support(grad: torch.Tensor, axis: int) -> tuple[int, int] | None:
    """First and last input index along ``axis`` (2 rows, 3 cols) where ``grad`` is not 0."""
    if not torch.isfinite(grad).all():
        raise GeometryError(
            "the gradient overflowed while measuring; this model's "
            "activations grow too fast to measure its geometry"
        )
    other = 3 if axis == 2 else 2
    line = grad.abs().sum(dim=(0, 1, other))
    nz = torch.nonzero(line)[:, 0]
    if nz.numel() == 0:
        return None
    return int(nz[0]), int(nz[-1])


@dataclass(frozen=True)
class GeometryMismatch:
    """A node whose measured support differs from the derived one."""

    name: str
    axis: str
    pixel: int
    derived: tuple[int, int]
    measured: tuple[int, int] | None


def _thin_width(c: int, length: int, axis: int, gm: fx.GraphModule) -> int:
    """Smallest width (across the measured axis) at which every output of ``gm`` has a pixel."""
    for w in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        size = (length, w) if axis == 2 else (w, length)
        x = torch.zeros(1, c, *size, dtype=torch.float64)
        try:
            # a GraphModule prints the failing line of its code to stderr before raising
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                outs = gm(x)
        except Exception:  # noqa: BLE001 - too small for some layer: try wider
            continue
        if all(o.numel() > 0 for o in outs):
            return w
    raise GeometryError("no input width lets every node produce a pixel")


_LENGTHS = sorted({32 * math.ceil(1.25**i) for i in range(40)})


def check_geometry(
    model: nn.Module,
    nodes: Iterable[str] | None = None,
    *,
    in_channels: int | None = None,
    margin: int = 32,
    max_length: int = 4096,
) -> list[GeometryMismatch]:
    """Compare the derived support of traced nodes with the support of their gradients.

    For every node (all aligned local nodes by default) and every phase of its period, one
    interior activation pixel ``i`` is picked, and the input pixels where
    ``d(activation i) / d(input)`` is not zero (in the copy described in the module docstring)
    are compared, per axis, with ``first(i) .. last(i)`` derived from the graph. Rows and
    columns are measured on thin inputs (long along the measured axis, narrow across it),
    which gives the same support and costs a fraction of a square image.

    Returns
    -------
    list of GeometryMismatch
        Empty when every node agrees.
    """
    table = {
        row.name: row for row in derive_geometry(model, in_channels=in_channels, fallback=False)
    }
    wanted = list(table) if nodes is None else list(nodes)
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise GeometryError(f"no node named {unknown[0]!r}; see derive_geometry(model)")
    wanted = [n for n in wanted if table[n].support is not None]
    if not wanted:
        return []
    c = in_channels or _first_conv_channels(model)
    gm, names = _trace(model)
    by_name = {name: node for node, name in names.items()}
    # only what the wanted nodes need (not a classifier's big matrices) is copied to float64
    measuring = _measurement_copy(model, _outputs_of(gm, [by_name[n] for n in wanted]))
    node_of = {n.name: n for n in measuring.graph.nodes}
    mismatches: list[GeometryMismatch] = []
    for axis in (2, 3):
        a = axis - 2
        # group nodes by the input length they need, so shallow nodes run on short inputs
        need: dict[int, list[str]] = {}
        for name in wanted:
            sup = table[name].support[a]
            span = sup.last(sup.period) - sup.first(0) + 1
            # lengths from a ladder of multiples of 32: each distinct length costs a forward
            length = next(n for n in _LENGTHS if n >= span + 2 * margin or n == _LENGTHS[-1])
            if length > max_length:
                raise GeometryError(
                    f"{name}: its receptive field needs an input longer than "
                    f"max_length={max_length}"
                )
            need.setdefault(length, []).append(name)
        for length, group in sorted(need.items()):
            sub = _outputs_of(measuring, [node_of[by_name[n].name] for n in group])
            width = _thin_width(c, length, axis, sub)
            size = (length, width) if axis == 2 else (width, length)
            x = (
                torch.rand(
                    1, c, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
                )
                + 0.5
            )
            x.requires_grad_(True)
            outs = sub(x)
            for name, out in zip(group, outs, strict=False):
                sup = table[name].support[a]
                dims = table[name].dims or (2, 3)
                mismatches += _check_node(name, out, dims, sup, axis, x, length, margin // 2)
    return mismatches


def _check_node(
    name: str,
    out: torch.Tensor,
    dims: tuple[int, int],
    sup: AxisSupport,
    axis: int,
    x: torch.Tensor,
    length: int,
    margin: int,
) -> list[GeometryMismatch]:
    a = axis - 2
    n = out.shape[dims[a]]
    # pixels whose derived support is inside the input with a margin, one per phase
    lo_ok = [j for j in range(n) if sup.first(j) >= margin and sup.last(j) < length - margin]
    if len(lo_ok) < sup.period:
        return [
            GeometryMismatch(
                name, "rows" if a == 0 else "cols", -1, (sup.first(0), sup.last(0)), None
            )
        ]
    mid = lo_ok[len(lo_ok) // 2]
    start = min(mid, lo_ok[-1] - sup.period + 1)
    found = []
    for j in range(start, start + sup.period):
        index = [0] * out.dim()
        index[dims[a]] = j
        index[dims[1 - a]] = out.shape[dims[1 - a]] // 2
        sel = out
        for d in sorted(dims, reverse=True):
            sel = sel.select(d, index[d])
        (g,) = torch.autograd.grad(sel.sum(), x, retain_graph=True)
        got = _support(g, axis)
        want = (sup.first(j), sup.last(j))
        if got != want:
            found.append(GeometryMismatch(name, "rows" if a == 0 else "cols", j, want, got))
    return found


def measure_geometry(
    model: Any,
    node: Any,
    *,
    in_channels: int | None = None,
    start_size: int = 64,
    max_size: int = 2048,
    pixels: int = 8,
) -> NodeGeometry:
    """Measure one node's S, O and RF from gradients alone, without using the graph's rules.

    In a float64 copy of the model with pointwise activations as identity, max pools as
    average pools and positive weights, the support of ``d(activation pixel i) / d(input)``
    is found for ``pixels + 1`` neighbouring pixels along the diagonal, on a square input
    that doubles until the supports lie inside it. S is the support's shift per pixel
    (exact for fractional strides whose period divides ``pixels``); O and RF are the hull of
    the supports around ``O + S * i``.

    Parameters
    ----------
    model : torch.nn.Module or Network
        Not modified. A :class:`~napari_activations.Network` (from
        :func:`~napari_activations.load_network`) is measured through its model, with its
        input channels.
    node : str or LayerInfo
        A node name from :func:`derive_geometry` (for a traceable model) or a module path;
        for a Network, one of its layers (SqueezeNet's by its MATLAB name too).

    Returns
    -------
    NodeGeometry
        With ``source == "measured"``.

    Raises
    ------
    GeometryError
        With what went wrong: unknown node, no activation pixel, support never inside
        ``max_size``.
    """
    if not isinstance(model, nn.Module) and hasattr(model, "arch"):  # a Network
        model, node, in_channels = _network_node(model, node, in_channels)
    c = in_channels or _first_conv_channels(model)
    try:
        gm, names = _trace(model)
    except Exception:  # noqa: BLE001 - untraceable: forward hooks on the module path
        gm = None
    if gm is not None:
        by_name = {name: n for n, name in names.items()}
        if node not in by_name:
            raise GeometryError(
                f"{type(model).__name__} has no node {node!r}; "
                "see derive_geometry(model) for the names"
            )
        run = _measurement_copy(model, _outputs_of(gm, [by_name[node]]))

        def forward(x: torch.Tensor) -> torch.Tensor:
            return run(x)[0]
    else:
        modules = dict(model.named_modules())
        if node not in modules or node == "":
            raise GeometryError(f"{type(model).__name__} has no module {node!r}")
        measuring = _measurement_copy(model, None)
        module = dict(measuring.named_modules())[node]

        def forward(x: torch.Tensor) -> torch.Tensor:
            return _hooked_output(measuring, module, x)

    return _measure(node, forward, c, start_size, max_size, pixels)


def _network_node(net: Any, layer: Any, in_channels: int | None) -> tuple[nn.Module, str, int]:
    """A Network's model, the node name of its ``layer`` and its input channels."""
    info = net.find_layer(layer)
    name = info.name
    if info.geometry_source == "table":  # SqueezeNet's MATLAB names: the torchvision path
        name = info.module
        if info.name.endswith("-concat"):
            name = f"{info.module}.cat"
    return net.model, name, in_channels or net.in_channels


def _hooked_output(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []

    def hook(m, i, o):
        if not seen:
            seen.append(o)

    handle = module.register_forward_hook(hook)
    try:
        with _functional_max_as_avg():
            model(x)
    finally:
        handle.remove()
    if not seen or not isinstance(seen[0], torch.Tensor):
        raise GeometryError("the module was not called, or did not return a tensor")
    return seen[0]


class _functional_max_as_avg:
    """While measuring an untraced model, F.max_pool2d averages (its gradient is then dense)."""

    def __enter__(self):
        self._saved = F.max_pool2d

        def avg(
            input,
            kernel_size,
            stride=None,
            padding=0,
            dilation=1,
            ceil_mode=False,
            return_indices=False,
        ):
            return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode)

        F.max_pool2d = avg
        return self

    def __exit__(self, *exc):
        F.max_pool2d = self._saved
        return False


def _measure(
    name: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    c: int,
    start_size: int,
    max_size: int,
    pixels: int,
) -> NodeGeometry:
    size = start_size
    generator = torch.Generator().manual_seed(1)
    while True:
        x = torch.rand(1, c, size, size, dtype=torch.float64, generator=generator) + 0.5
        x.requires_grad_(True)
        try:
            out = forward(x)
        except GeometryError:
            raise
        except Exception as err:  # noqa: BLE001 - too small an input for this network
            if size >= max_size:
                raise GeometryError(
                    f"{name}: the model does not run on inputs up to {max_size}x{max_size} ({err})"
                ) from err
            size *= 2
            continue
        channels = out.shape[1] if out.dim() >= 2 else None
        if out.dim() < 4 or out.shape[-1] * out.shape[-2] == 1:
            g = torch.autograd.grad(out.sum(), x)[0]
            whole = (_support(g, 2), _support(g, 3)) == ((0, size - 1), (0, size - 1))
            if not whole:
                raise GeometryError(
                    f"{name}: a single-pixel output that does not see the whole input"
                )
            return NodeGeometry(
                name,
                "measured",
                int(math.prod(out.shape[1:])),
                None,
                None,
                None,
                bool((out >= 0).all()),
                True,
                True,
                False,
                "measured",
                name.split(".")[0],
            )
        h, w = out.shape[-2], out.shape[-1]
        i0 = (min(h, w) - pixels - 1) // 2
        if i0 < 0:
            if size >= max_size:
                raise GeometryError(
                    f"{name}: fewer than {pixels + 1} activation pixels at {max_size}x{max_size}"
                )
            size *= 2
            continue
        supports = []
        inside = True
        for t in range(pixels + 1):
            g = torch.autograd.grad(out[0, :, i0 + t, i0 + t].sum(), x, retain_graph=True)[0]
            r, cl = _support(g, 2), _support(g, 3)
            if r is None or cl is None:
                raise GeometryError(f"{name}: an activation pixel that depends on no input")
            if min(r[0], cl[0]) == 0 or max(r[1], cl[1]) == size - 1:
                inside = False
                break
            supports.append((r, cl))
        if inside:
            break
        if size >= max_size:
            raise GeometryError(
                f"{name}: the receptive field does not fit in {max_size}x{max_size}; it may "
                "depend on the whole image (a global branch). Pass a larger max_size."
            )
        size *= 2
    axes = []
    for a in range(2):
        lo = [s[a][0] for s in supports]
        hi = [s[a][1] for s in supports]
        # the shortest period (dividing the pixels measured) over which the supports repeat
        axis = None
        for period in (q for q in range(1, pixels + 1) if pixels % q == 0):
            step = lo[period] - lo[0]
            if all(
                lo[t + period] == lo[t] + step and hi[t + period] == hi[t] + step
                for t in range(pixels + 1 - period)
            ):
                ts = [(r - i0) % period for r in range(period)]  # pixel i0 + t has phase r
                axis = AxisSupport(
                    step,
                    period,
                    tuple(lo[t] - step * ((i0 + t) // period) for t in ts),
                    tuple(hi[t] - step * ((i0 + t) // period) for t in ts),
                )
                break
        if axis is None:
            raise GeometryError(
                f"{name}: the supports of {pixels + 1} neighbouring pixels do "
                "not repeat; pass a larger pixels="
            )
        axes.append(axis._reduced())
    value = _Local(tuple(axes), (2, 3), bool((out >= 0).all()))
    return _row(name, "measured", channels, value, "measured")


def _hooked_geometry(
    model: nn.Module, input_size: tuple[int, int], c: int
) -> tuple[NodeGeometry, ...]:
    """Forward hooks on every leaf module, in call order; geometry measured for each."""
    order: list[str] = []
    shapes: dict[str, tuple] = {}
    handles = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def hook(m, i, o, name=name):
                if name not in shapes and isinstance(o, torch.Tensor):
                    order.append(name)
                    shapes[name] = tuple(o.shape)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), _eval_mode(model):
            model(torch.zeros(1, c, *input_size, dtype=_dtype(model), device=_device(model)))
    except Exception as err:  # noqa: BLE001
        raise GeometryError(
            f"The model cannot run on a {c}-channel {input_size[0]}x"
            f"{input_size[1]} input ({_root_cause(err)}). If it takes other channels or "
            "sizes, pass in_channels= and input_size= that it accepts; otherwise its forward "
            "fails: fix the model."
        ) from err
    finally:
        for h in handles:
            h.remove()
    rows = []
    for name in order:
        try:
            rows.append(measure_geometry(model, name, in_channels=c))
        except GeometryError as err:
            raise GeometryError(
                f"torch.fx cannot trace {type(model).__name__} (data-dependent control flow "
                f"in its forward), and the geometry of its module {name!r} cannot be "
                f"measured either ({str(err).split(' Pass a larger')[0]}). Make the forward "
                "traceable (no Python `if` or loop on tensor values), or move that module out "
                "of the model."
            ) from err
    return tuple(rows)
