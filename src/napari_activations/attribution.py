"""Class attribution maps on the image's own pixel grid: Grad-CAM and occlusion sensitivity.

Both answer "which parts of the image made the network give this score?" and both share the
activations' compute path: the same preprocessing
(:func:`~napari_activations.compute.network_input`), the network's own modules, and the same
exact placement of a layer's pixel ``i`` over input pixel ``O + S*i``
(:func:`~napari_activations.alignment.align`).

- :func:`grad_cam`: the Grad-CAM map (Selvaraju et al. 2017) of a target at a network layer,
  ``relu(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the target's gradient with
  respect to channel ``k`` of the layer's activations ``A``. The same numbers as
  pytorch-grad-cam's ``GradCAM`` and captum's ``LayerGradCam(relu_attributions=True)`` at the
  layer's resolution; placed exactly on the image grid instead of stretched.
- :func:`occlusion_sensitivity`: the drop of the target's score when a window of the image is
  covered, averaged over the windows that cover each pixel: the same numbers as captum's
  ``Occlusion`` with the same window, stride and fill. A window changes a network layer's
  activations only inside its receptive-field footprint, so each position recomputes, layer
  by layer, only that footprint and reuses the unoccluded activations everywhere else.

A *target* is a class index, a category name, or a callable that reduces the network's
output (the model's own output, ``(1, 1000)`` class scores before softmax for SqueezeNet) to
one number: MATLAB's ``reductionFcn``, for networks that are not classifiers too. A *region
target* (:func:`region_target`) is the mean of one channel of a spatial map (by default the
last spatial layer: SqueezeNet's class-score map ``relu_conv10``, whose global mean is the
output) inside a region drawn on the image's own grid.

:func:`rank_classes_in_region` ranks every class by its Grad-CAM inside a region, in one
forward pass.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .alignment import align, axis_map
from .compute import Progress, drain, network_input
from .layers import LayerInfo, output_size
from .tiling import estimate_forward_bytes, forward_bytes_per_pixel, memory_budget

if TYPE_CHECKING:
    import torch

    from .network import Network

__all__ = [
    "AttributionError",
    "Target",
    "resolve_target",
    "region_target",
    "region_weights",
    "rank_classes_in_region",
    "default_feature_layer",
    "feature_layer",
    "grad_cam",
    "iter_grad_cam",
    "occlusion_sensitivity",
    "iter_occlusion_sensitivity",
    "occlusion_defaults",
    "INPUT_GRID",
]

INPUT_GRID = LayerInfo("input", "input", 3, 1, 0.0, 1, False, "input")
"""The network input's own grid (S = 1, O = 0): occlusion maps live on it."""


class AttributionError(ValueError):
    """An attribution request that cannot be computed; the message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """What an attribution map explains.

    Attributes
    ----------
    index : int or None
        Class index (0-based), or None for a callable target.
    label : str
        For people and layer names: the category name, or the callable's name.
    reduce : callable
        ``reduce(output) -> scalar tensor``: the score, from the network's output ``(1, ...)``
        (or from ``layer``'s activations).
    layer : LayerInfo or None
        The network layer ``reduce`` reads (region targets); None: the network's output.
    """

    index: int | None
    label: str
    reduce: Callable[[Any], Any]
    layer: LayerInfo | None = None
    """The network layer whose activations ``reduce`` reads; None: the network's output."""

    def bind(self, image_hw: tuple[int, int], scale: tuple[float, float]) -> Target:
        """This target for one image of ``image_hw`` pixels resized by ``scale``."""
        return self


def resolve_target(net: Network, target: Any) -> Target:
    """Check a target (class index, category name or callable) and say what it is.

    Raises :class:`AttributionError` for an index out of range or an unknown category (with
    the closest category names).
    """
    categories = list(net.categories or [])
    if isinstance(target, Target):
        return target
    if callable(target):
        name = getattr(target, "__name__", type(target).__name__)
        return Target(None, "<lambda>" if name == "<lambda>" else name, target)
    if isinstance(target, (bool, np.bool_)):
        raise AttributionError(
            "A target is a class index, a category name or a function of "
            f"the network's output, not {target!r}."
        )
    if isinstance(target, (int, np.integer, str)) and not categories:
        raise AttributionError(
            f"{net.title} has no categories, so class {target!r} means nothing to it: it is "
            "not a classifier, or its categories were not given. Load it with "
            "load_network(model, categories=[...]), or explain a function of its output "
            "(e.g. lambda out: out[0, 3].mean()) or a region_target."
        )
    if isinstance(target, (int, np.integer)):
        i = int(target)
        n = len(categories)
        if not 0 <= i < n:
            raise AttributionError(
                f"Class index {i} is out of range: this network has {n} "
                f"classes, numbered 0 to {n - 1}."
            )
        return Target(i, categories[i], _class_score(i))
    if isinstance(target, str):
        key = target.strip().lower()
        lowered = [c.lower() for c in categories]
        if key in lowered:
            i = lowered.index(key)
            return Target(i, categories[i], _class_score(i))
        close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
        hint = (
            f" Closest: {', '.join(repr(categories[lowered.index(c)]) for c in close)}."
            if close
            else " See net.categories for the names."
        )
        raise AttributionError(f"No category named {target!r}.{hint}")
    raise AttributionError(
        "A target is a class index, a category name or a function of the "
        f"network's output, not {type(target).__name__}."
    )


def _class_score(i: int) -> Callable[[Any], Any]:
    def class_score(output: Any) -> Any:
        return output.reshape(output.shape[0], -1)[:, i]

    return class_score


def _scalar(value: Any, target: Target, *, need_tensor: bool) -> Any:
    """The target's score as a one-element tensor (or a float), or a plain refusal."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AttributionError(
                f"The target function {target.label!r} returned shape {tuple(value.shape)}; "
                "it must reduce the network's output to one number, e.g. "
                "lambda out: out[0, 281] or lambda out: out[0, 3, 10:20, 10:20].mean()."
            )
        return value.reshape(())
    if need_tensor:
        raise AttributionError(
            f"The target function {target.label!r} returned {type(value).__name__}; "
            "Grad-CAM needs a torch tensor computed from the network's output "
            "(differentiable), e.g. lambda out: out[0, 281]."
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AttributionError(
            f"The target function {target.label!r} returned {type(value).__name__}; it must "
            "reduce the network's output to one number."
        ) from None


def default_feature_layer(net: Network) -> LayerInfo:
    """The last aligned spatial layer before global pooling (MATLAB's default feature layer).

    For SqueezeNet v1.1 that is ``relu_conv10``, for ResNets ``layer4.1.relu_1`` (the last
    block's output); for a network without global pooling (a U-Net), its last aligned
    spatial layer.
    """
    rows = net.layers
    first_global = next((i for i, info in enumerate(rows) if info.is_global), len(rows))
    spatial = [info for info in rows[:first_global] if info.aligned]
    if not spatial:
        spatial = [info for info in rows if info.aligned and not info.is_global]
    if not spatial:
        raise AttributionError(
            f"{net.title} has no aligned spatial layer, so there is no map to place on the "
            "image: Grad-CAM and occlusion need one."
        )
    return spatial[-1]


def feature_layer(net: Network, layer: str | LayerInfo | None) -> LayerInfo:
    """The network layer Grad-CAM weights: ``layer`` (a name or row of ``net``'s layers), or
    the default; global layers refused."""
    if layer is None:
        return default_feature_layer(net)
    info = net.find_layer(layer)
    if info.is_global:
        last = default_feature_layer(net)
        raise AttributionError(
            f"Layer {info.name!r} comes after global pooling: it has one pixel, so a map of it "
            f"shows nothing about where. Use a spatial layer such as {last.name!r} (the "
            "default)."
        )
    return info


# ---------------------------------------------------------------------------------------------
# Regions


def _region_array(region: Any, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A region as a boolean mask: a mask as is, or ``(N, 2)`` polygon vertices rasterised."""
    arr = np.asarray(region)
    if _is_polygon(arr) and image_hw is not None:
        from skimage.draw import polygon2mask

        return polygon2mask(tuple(image_hw), arr.astype(float))
    if arr.ndim != 2:
        raise AttributionError(
            f"A region is a boolean (H, W) mask on the image's pixel grid, or (N, 2) polygon "
            f"vertices (row, column) in its pixels; got shape {arr.shape}."
        )
    return arr if arr.dtype == bool else arr != 0


def _is_polygon(arr: np.ndarray) -> bool:
    return arr.ndim == 2 and arr.shape[1] == 2 and arr.shape[0] >= 3 and arr.dtype != bool


def region_weights(
    region: Any,
    info: LayerInfo,
    native_hw: tuple[int, int],
    scale: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Weights on a layer's own grid that give a map's mean inside an image region.

    For a ``(h, w)`` map ``a`` of network layer ``info``, ``(a * weights).sum()`` equals the
    mean of ``align(a, info, region.shape, scale)`` over the region: the map placed exactly on
    the image grid (pixel ``i`` over ``O + S*i``, bilinear) and averaged there. The weights
    are the placement's transpose applied to the region, so nothing is stretched.

    Parameters
    ----------
    region : (H, W) bool array
        On the image's pixel grid.
    info : LayerInfo
        The map's network layer (its stride and offset place it).
    native_hw : (int, int)
        ``(h, w)`` of the map.
    scale : (float, float)
        Network pixels per image pixel (``input_scale``).

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` float64, non-negative, summing to 1.
    """
    mask = _region_array(region)
    count = int(mask.sum())
    if count == 0:
        raise AttributionError(
            "The region is empty: it covers no pixel of the image. Draw it over the image."
        )

    def matrix(n_out: int, n_act: int, s: float) -> np.ndarray:
        m = axis_map(n_out, n_act, info, s)
        out = np.zeros((n_out, n_act))
        rows = np.arange(n_out)
        np.add.at(out, (rows, m.lo), 1.0 - m.w.astype(np.float64))
        np.add.at(out, (rows, m.hi), m.w.astype(np.float64))
        return out

    H, W = mask.shape
    R = matrix(H, native_hw[0], scale[0])
    C = matrix(W, native_hw[1], scale[1])
    return (R.T @ mask.astype(np.float64) @ C) / count


@dataclass(frozen=True)
class _RegionTarget(Target):
    """A region target before it knows the image's grid; :meth:`bind` makes it usable."""

    mask: Any = None

    def bind(self, image_hw: tuple[int, int], scale: tuple[float, float]) -> Target:
        mask = _region_array(self.mask, image_hw)
        if tuple(mask.shape) != tuple(image_hw):
            raise AttributionError(
                f"The region's mask is {mask.shape[0]}x{mask.shape[1]} pixels but the image "
                f"is {image_hw[0]}x{image_hw[1]}: draw the region on this image's grid."
            )
        if not mask.any():
            raise AttributionError(
                f"The region of {self.label!r} covers no pixel of the {image_hw[0]}x"
                f"{image_hw[1]} image: draw it over the image (polygon vertices are "
                "(row, column) image pixels)."
            )
        info, channel = self.layer, self.index
        cache: dict[tuple, Any] = {}

        def region_mean(acts: Any) -> Any:
            import torch

            key = (tuple(acts.shape[-2:]), acts.dtype, acts.device)
            if key not in cache:
                w = region_weights(mask, info, key[0], scale)
                cache[key] = torch.as_tensor(w, dtype=acts.dtype, device=acts.device)
            return (acts[:, channel] * cache[key]).sum(dim=(-2, -1))

        return Target(channel, self.label, region_mean, info)


def _unbound(output: Any) -> Any:
    raise AttributionError(
        "A region target is used through grad_cam or occlusion_sensitivity, which fit it to "
        "the image's grid."
    )


def region_target(
    net: Network,
    region: Any,
    channel: Any,
    *,
    layer: str | LayerInfo | None = None,
    name: str = "region",
) -> Target:
    """A target that is one channel's mean inside an image region (MATLAB's ``reductionFcn``).

    For networks that are not classifiers, and for "why this class *here*?": the score is
    the mean of channel ``channel`` of network layer ``layer``, placed exactly on the image
    grid, over the region's pixels (see :func:`region_weights`). The default layer is the
    last spatial one; for SqueezeNet that is ``relu_conv10``, the class-score map whose
    global mean is the class score, so ``channel`` may be a class index or name.

    Parameters
    ----------
    net : Network
    region : (H, W) bool array, or (N, 2) array of polygon vertices
        On the image's pixel grid (napari's data coordinates of the image layer: row,
        column). Polygon vertices are rasterised with :func:`skimage.draw.polygon2mask`
        when the target is used. ``show_attribution`` takes a napari Shapes or Labels layer
        instead, in world coordinates.
    channel : int or str
        The channel (for the class-score map, a class index or category name).
    layer : str or LayerInfo, optional
        Network layer whose map is averaged; default the last spatial layer. Layers after
        global pooling are refused (they have no "inside").
    name : str
        The region's name, for layer names: ``"<class> in <name>"``.

    Returns
    -------
    Target
        Pass it as ``target`` to :func:`grad_cam` or :func:`occlusion_sensitivity`.
    """
    info = feature_layer(net, layer)
    if callable(channel) or isinstance(channel, Target):
        raise AttributionError(
            "A region target's channel is a class index, a category name or a channel number, "
            "not a function."
        )
    if info.channels == len(net.categories or []):  # a class-score map: classes by name
        goal = resolve_target(net, channel)
        index, label = goal.index, goal.label
    else:
        index, label = _channel_index(channel, info), f"channel {channel}"
    arr = np.asarray(region)
    if not _is_polygon(arr):
        arr = _region_array(arr)
        if not arr.any():
            raise AttributionError(
                f"The region {name!r} is empty: it covers no pixel of the image. Draw it "
                "over the image."
            )
    return _RegionTarget(index, f"{label} in {name}", _unbound, info, arr)


def _channel_index(channel: Any, info: LayerInfo) -> int:
    if isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (int, np.integer)):
        raise AttributionError(
            f"Layer {info.name!r} has no category names: give the channel as a whole number "
            f"from 0 to {info.channels - 1}, not {channel!r}."
        )
    if not 0 <= int(channel) < info.channels:
        raise AttributionError(
            f"Channel {int(channel)} is out of range: layer {info.name!r} has "
            f"{info.channels} channels, numbered 0 to {info.channels - 1}."
        )
    return int(channel)


def _is_squeezenet(net: Network) -> bool:
    """True where the network's output is the global mean of its last spatial layer."""
    from torchvision.models import SqueezeNet

    return net.arch.name == "squeezenet1_1" and isinstance(net.model, SqueezeNet)


def rank_classes_in_region(
    net: Network,
    image: Any,
    region: Any,
    k: int | None = 5,
    *,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | str | None = None,
) -> list[tuple[int, str, float]]:
    """The classes whose Grad-CAM is strongest inside a region, strongest first.

    Each class's score is the mean, over the region's pixels, of its Grad-CAM map at the
    default layer placed on the image grid: what :func:`grad_cam` gives, for every class.
    SqueezeNet's output is the global mean of its class-score map ``relu_conv10``, so the
    gradient of class ``c`` there is ``1/(h*w)`` on channel ``c`` and zero elsewhere, and
    Grad-CAM of class ``c`` is ``relu_conv10[c] / (h*w)``: one forward pass ranks all classes.

    Parameters
    ----------
    net : Network
    image : array-like
        One image, as for :func:`grad_cam`.
    region : (H, W) bool array, or (N, 2) polygon vertices (row, column)
        On the image's pixel grid.
    k : int or None
        How many classes (None: all).
    input_scale, intensity_range, rgb, memory_budget
        As for :func:`grad_cam`.

    Returns
    -------
    list of (int, str, float)
        ``(class index, category name, mean Grad-CAM inside the region)``, in the units of
        :func:`grad_cam`.
    """
    import torch

    if not _is_squeezenet(net):
        raise AttributionError(
            "Ranking classes in a region needs a network whose output is the global mean of "
            "its class-score map (SqueezeNet); for others, compare grad_cam maps per class."
        )
    info = default_feature_layer(net)
    x, hw, scale, _ = network_input(
        net,
        image,
        info,
        input_scale=input_scale,
        intensity_range=intensity_range,
        rgb=rgb,
        memory_budget=memory_budget,
    )
    mask = _region_array(region, hw)
    if mask.shape != tuple(hw):
        raise AttributionError(
            f"The region is {mask.shape[0]}x{mask.shape[1]} pixels but the image is "
            f"{hw[0]}x{hw[1]}: draw the region on this image's grid."
        )
    captured: list[torch.Tensor] = []
    module = net.model.get_submodule(info.module)
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.clone()))
    try:
        with torch.inference_mode():
            net.model(x)
    finally:
        handle.remove()
    maps = captured[0][0].to("cpu", torch.float64).numpy()  # (C, h, w)
    h, w = maps.shape[-2:]
    weights = region_weights(mask, info, (h, w), scale)
    scores = np.maximum(maps, 0).reshape(len(maps), -1) @ weights.ravel() / (h * w)
    order = np.argsort(-scores, kind="stable")[: None if k is None else max(1, int(k))]
    return [(int(i), net.categories[i], float(scores[i])) for i in order]


# ---------------------------------------------------------------------------------------------
# Grad-CAM


def iter_grad_cam(
    net: Network,
    image: Any,
    target: Any,
    *,
    layer: str | LayerInfo | None = None,
    resize: bool = True,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | str | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """The compute of :func:`grad_cam` as a generator of :class:`Progress` (one step)."""
    import torch

    info = feature_layer(net, layer)
    goal = resolve_target(net, target)
    # the whole network runs (to its output), so the image must be large enough for all of it
    x, hw, scale, _ = network_input(
        net,
        image,
        default_feature_layer(net),
        input_scale=input_scale,
        intensity_range=intensity_range,
        rgb=rgb,
        memory_budget=memory_budget,
    )
    goal = goal.bind(hw, scale)
    if goal.layer is not None and _order(net, goal.layer) < _order(net, info):
        raise AttributionError(
            f"The target reads layer {goal.layer.name!r}, which comes before Grad-CAM's layer "
            f"{info.name!r}: its score cannot depend on that layer. Choose a Grad-CAM layer "
            f"at or before {goal.layer.name!r}."
        )
    yield Progress(0, 1, f"Grad-CAM {goal.label}: forward and backward pass")
    native = _grad_cam_native(net, x, info, goal)
    yield Progress(1, 1, f"Grad-CAM {goal.label}: done")
    if not resize:
        return native
    with torch.inference_mode():
        return align(native[None], info, hw, scale)[0]


def _order(net: Network, info: LayerInfo) -> int:
    return [i.name for i in net.layers].index(info.name)


def _grad_cam_native(net: Network, x: torch.Tensor, info: LayerInfo, goal: Target) -> np.ndarray:
    """``(h, w)`` Grad-CAM at the layer's own resolution (float32, non-negative)."""
    import torch

    captured: list[torch.Tensor] = []
    tapped: list[torch.Tensor] = []

    def keep(value: torch.Tensor) -> torch.Tensor:
        # A leaf that requires grad: the backward pass stops here, and nothing before this
        # layer builds a graph. The network goes on with a copy, so an in-place ReLU after a
        # pre-ReLU layer cannot overwrite the activations the map is made of.
        leaf = value.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    def tap(value: torch.Tensor) -> torch.Tensor:
        tapped.append(_as_maps(net, goal.layer, value)[0])
        return value.clone()  # what the target reads is not changed in place later

    with torch.inference_mode(False), torch.enable_grad():
        output = _tapped_forward(net, x, info, keep, goal.layer, tap)
        score = _scalar(goal.reduce(tapped[0] if tapped else output), goal, need_tensor=True)
        if not score.requires_grad:
            raise AttributionError(
                f"The target function {goal.label!r} returned a value that does not depend "
                "on the network's output; reduce the output itself, e.g. "
                "lambda out: out[0, 281]."
            )
        (grad,) = torch.autograd.grad(score, captured[0])
    acts, grad = _as_maps(net, info, captured[0].detach(), grad)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # alpha_k: (1, C, 1, 1)
    cam = torch.relu((weights * acts).sum(dim=1))[0]
    return cam.to("cpu", torch.float32).numpy()


def _hooked(net: Network, info: LayerInfo) -> bool:
    """True where network layers are modules of ``net.model`` (SqueezeNet's table, or a
    model torch.fx could not trace): they are tapped with forward hooks, else in the graph."""
    return info.arch is None or not getattr(info.arch, "traced", True)


def _as_maps(net: Network, info: LayerInfo, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Layer values as ``(N, C, h, w)`` maps: channels-last layers (ConvNeXt's) moved."""
    first = tensors[0]
    if first.ndim == 4 and first.shape[1] != info.channels and first.shape[3] == info.channels:
        return [t.permute(0, 3, 1, 2) for t in tensors]
    return list(tensors)


def _tapped_forward(
    net: Network,
    x: torch.Tensor,
    info: LayerInfo,
    at_layer: Callable[[Any], Any],
    goal_layer: LayerInfo | None = None,
    at_goal: Callable[[Any], Any] | None = None,
) -> Any:
    """``net.model(x)``, with network layer ``info``'s value replaced by ``at_layer(value)``
    and ``goal_layer``'s by ``at_goal(value)`` (both in that order where they are the same
    layer). Returns the network's output, or None where only ``goal_layer`` is needed."""
    if _hooked(net, info):
        modules = [(info, at_layer)] + ([(goal_layer, at_goal)] if goal_layer else [])
        handles = [
            net.model.get_submodule(row.module).register_forward_hook(
                lambda _m, _i, out, fn=fn: fn(out)
            )
            for row, fn in modules
        ]
        try:
            return _first(net.model(x))
        finally:
            for handle in handles:
                handle.remove()
    return _GraphTap(net, info, goal_layer).run(x, at_layer, at_goal)


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


class _GraphTap:
    """A traced network run node by node, with one or two nodes' values replaced on the way.

    Built with :func:`torchvision.models.feature_extraction.create_feature_extractor` on the
    network's own model (node names as in ``net.layers``), returning the tapped nodes and the
    network's output node; cached on the model per pair of nodes.
    """

    def __init__(self, net: Network, info: LayerInfo, goal_layer: LayerInfo | None = None):
        from torchvision.models.feature_extraction import create_feature_extractor

        model = net.model
        cache = model.__dict__.setdefault("_napari_activations_taps", {})
        key = (info.name, goal_layer.name if goal_layer is not None else None)
        if key not in cache:
            nodes = {info.name: "layer", _output_node(model): "output"}
            if goal_layer is not None:
                nodes[goal_layer.name] = "goal"
            cache[key] = create_feature_extractor(model, return_nodes=nodes)
        self.module = cache[key]
        outputs = next(n for n in self.module.graph.nodes if n.op == "output").args[0]
        self.layer_node = outputs["layer"]
        self.goal_node = outputs.get("goal")

    def run(self, x: Any, at_layer: Callable, at_goal: Callable | None) -> Any:
        import torch

        layer_node, goal_node = self.layer_node, self.goal_node

        class Tap(torch.fx.Interpreter):
            def run_node(self, node: Any) -> Any:
                value = super().run_node(node)
                if node is layer_node:
                    value = at_layer(value)
                if node is goal_node and at_goal is not None:
                    value = at_goal(value)
                return value

        return _first(Tap(self.module).run(x)["output"])


def _output_node(model: Any) -> str:
    """The name of the node that gives ``model``'s output (as feature extraction names it)."""
    cache = model.__dict__.setdefault("_napari_activations_output_node", [])
    if not cache:
        from torchvision.models.feature_extraction import get_graph_node_names

        cache.append(get_graph_node_names(model)[1][-1])
    return cache[0]


def grad_cam(
    net: Network,
    image: Any,
    target: Any,
    *,
    layer: str | LayerInfo | None = None,
    resize: bool = True,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | str | None = None,
) -> np.ndarray:
    """Grad-CAM map of ``target`` at a network layer.

    Parameters
    ----------
    net : Network
        From :func:`~napari_activations.load_squeezenet`.
    image : array-like
        One image, ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``; any real dtype (scaled as for
        :func:`~napari_activations.activations`).
    target : int, str, callable or Target
        Class index (0-based), category name (``"Egyptian cat"``),
        ``f(output) -> scalar tensor`` on the network's output (for SqueezeNet the ``(1, 1000)``
        class scores before softmax), or a :func:`region_target`.
    layer : str or LayerInfo, optional
        Network layer whose activations are weighted; default the last spatial layer before
        global pooling (``relu_conv10``). Layers after global pooling are refused.
    resize : bool
        True: ``(H, W)`` on the image grid, layer pixel ``i`` placed over image pixel
        ``O + S*i`` (bilinear, edges held). False: ``(h, w)`` at the layer's resolution.
    input_scale, intensity_range, rgb, memory_budget
        As for :func:`~napari_activations.activations`.

    Returns
    -------
    numpy.ndarray
        float32, non-negative, in the units of score per activation (not normalised).

    Raises
    ------
    AttributionError
        Bad target or a layer after global pooling. :class:`~napari_activations.ImageError`
        for an unusable image.
    """
    return drain(
        iter_grad_cam(
            net,
            image,
            target,
            layer=layer,
            resize=resize,
            input_scale=input_scale,
            intensity_range=intensity_range,
            rgb=rgb,
            memory_budget=memory_budget,
        )
    )


# ---------------------------------------------------------------------------------------------
# Occlusion sensitivity


def occlusion_defaults(height: int, width: int) -> tuple[int, int]:
    """Default ``(window, stride)`` in network-input pixels for an image of that size.

    A window of a fifth of the shorter side and a stride of half the window, after MATLAB's
    automatic choice (``MaskSize`` and ``Stride`` ``"auto"``).
    """
    side = min(int(height), int(width))
    window = max(1, int(round(0.2 * side)))
    return window, max(1, window // 2)


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or a < 1 or b < 1:
        raise AttributionError(
            f"{name} must be a positive number of pixels or a pair of "
            f"them (rows, columns); got {value!r}."
        )
    return a, b


def _positions(n: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis, as captum's Occlusion: 0, s, 2s, ... until covered."""
    count = math.ceil((n - window) / stride) + 1
    return [k * stride for k in range(count)]


@dataclass(frozen=True)
class _Block:
    """One step of the network's sequential walk, with its local geometry."""

    info: LayerInfo
    module: Any
    kernel: int
    stride: int
    padding: int

    def dirty(self, r0: int, r1: int, n_out: int) -> tuple[int, int]:
        """Output rows ``[a0, a1)`` whose window reads any of input rows ``[r0, r1)``."""
        k, s, p = self.kernel, self.stride, self.padding
        a0 = max(0, (r0 - k + p) // s + 1)
        a1 = min(n_out, -(-(r1 + p) // s))
        return a0, max(a0, a1)

    def source(self, a0: int, a1: int, n_in: int) -> tuple[int, int]:
        """Input rows ``[lo, hi)`` that compute output rows ``[a0, a1)`` exactly.

        ``lo`` is a multiple of the stride, and far enough above ``a0``'s window that the
        module's own padding of the crop touches only outputs that are dropped (unless the
        crop starts at the image's edge, where the padding is the image's own).
        """
        k, s, p = self.kernel, self.stride, self.padding
        lo = max(0, (a0 - -(-p // s)) * s)
        hi = min(n_in, (a1 - 1) * s - p + k)
        return lo, hi


_SEQUENTIAL = re.compile(r"[A-Za-z_]\w*\.\d+")


def _blocks(net: Network) -> list[_Block] | None:
    """The network's spatial layers as a sequence of blocks, or None where it is not one.

    A block is a layer whose module is a direct child of a ``Sequential`` (``features.3``,
    ``classifier.1``); each block's kernel, stride and padding follow from the layer table's
    geometry before and after it. The walk must end at the last spatial layer, whose global
    mean is the network's output (SqueezeNet: ``relu_conv10`` and ``pool10``).
    """
    if not _is_squeezenet(net):  # e.g. a network that outputs the class-score map itself
        return None
    blocks: list[_Block] = []
    S, O, RF = 1, 0.0, 1
    spatial = [info for info in net.layers if not info.is_global]
    for info in spatial:
        if not _SEQUENTIAL.fullmatch(info.module):
            continue
        s, rem = divmod(info.stride, S)
        k = (info.receptive_field - RF) / S + 1
        p = (k - 1) / 2 - (info.offset - O) / S
        if rem or not float(k).is_integer() or not float(p).is_integer() or p < 0:
            return None
        blocks.append(_Block(info, net.model.get_submodule(info.module), int(k), s, int(p)))
        S, O, RF = info.stride, info.offset, info.receptive_field
    if not blocks or blocks[-1].info is not spatial[-1]:
        return None
    if [info.name for info in net.layers if info.is_global][:1] != ["pool10"]:
        return None
    return blocks


def _reuse_bytes(blocks: list[_Block], height: int, width: int) -> int:
    """Memory of the unoccluded activations that the reuse keeps: every block's output."""
    total = 3 * height * width
    for block in blocks:
        h, w = output_size(block.info, height, width)
        total += block.info.channels * h * w * (2 if getattr(block.module, "inplace", False) else 1)
    return 4 * total


@dataclass
class _Occluder:
    """One window position: its dirty box at the current level and the new values there."""

    box: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1
    values: Any  # (1, C, r1 - r0, c1 - c0) tensor


def _fill_tensor(
    net: Network, x: torch.Tensor, fill: Any, bounds: tuple[float, float] | None
) -> torch.Tensor:
    """The occluder's value in network-input units, ``(1, C, 1, 1)`` for ``C`` input channels."""
    import torch

    if isinstance(fill, str):
        if fill.lower() != "mean":
            raise AttributionError(
                f"fill must be 'mean' (the image's mean colour) or a "
                f"number in the image's intensities; got {fill!r}."
            )
        return x.mean(dim=(2, 3), keepdim=True)
    try:
        v = float(fill)
    except (TypeError, ValueError):
        raise AttributionError(
            f"fill must be 'mean' or a number in the image's intensities; got {fill!r}."
        ) from None
    if not math.isfinite(v):
        raise AttributionError(f"fill must be a finite number; got {fill!r}.")
    if getattr(net, "preprocess", None) is not None:
        raise AttributionError(
            f"{net.title} preprocesses each whole image itself, so an intensity has no fixed "
            "value in its input: use fill='mean' (the image's mean after preprocessing)."
        )
    if bounds is None:
        t = v / 255.0
    else:
        low, high = bounds
        t = min(1.0, max(0.0, (v - low) / (high - low))) if high > low else 0.0
    mean = torch.tensor(net.mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std = torch.tensor(net.std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (t - mean) / std


def iter_occlusion_sensitivity(
    net: Network,
    image: Any,
    target: Any,
    *,
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: Any = "mean",
    batch: int | None = None,
    reuse: bool = True,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | str | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """The compute of :func:`occlusion_sensitivity` as a generator of :class:`Progress`.

    One step per batch of window positions; closing the generator cancels the run.
    """
    import torch

    goal = resolve_target(net, target)
    x, hw, scale, bounds = network_input(
        net,
        image,
        default_feature_layer(net),
        input_scale=input_scale,
        intensity_range=intensity_range,
        rgb=rgb,
        memory_budget=memory_budget,
    )
    goal = goal.bind(hw, scale)
    H, W = x.shape[-2:]
    auto_window, auto_stride = occlusion_defaults(H, W)
    wy, wx = _pair(window if window is not None else auto_window, "window")
    sy, sx = _pair(
        stride if stride is not None else (min(auto_stride, wy), min(auto_stride, wx)), "stride"
    )
    if wy > H or wx > W:
        raise AttributionError(
            f"The window ({wy}x{wx} pixels) is larger than the image as the network sees it "
            f"({H}x{W}). Use a window of at most {H}x{W}"
            f"{' (or a larger input_scale)' if input_scale < 1 else ''}."
        )
    if sy > wy or sx > wx:
        raise AttributionError(
            f"The stride ({sy}x{sx}) is larger than the window ({wy}x{wx}): "
            "pixels between windows would never be covered. Use a stride "
            "of at most the window."
        )
    if batch is not None and (not isinstance(batch, (int, np.integer)) or batch < 1):
        raise AttributionError(f"batch must be a positive whole number; got {batch!r}.")
    with torch.inference_mode():
        baseline = _fill_tensor(net, x, fill, bounds)
        windows = [
            (y, min(H, y + wy), c, min(W, c + wx))
            for y in _positions(H, wy, sy)
            for c in _positions(W, wx, sx)
        ]
        budget = memory_budget_bytes(memory_budget)
        blocks = _blocks(net) if reuse else None
        if blocks is not None and goal.layer not in (None, blocks[-1].info):
            blocks = None  # the reuse keeps only the last spatial layer whole
        if blocks is not None and _reuse_bytes(blocks, H, W) > budget:
            blocks = None  # the unoccluded activations of every block would not fit
        if blocks is not None:
            engine = _ReuseEngine(net, blocks, x)
        if blocks is None:
            per_image = estimate_forward_bytes(
                H, W, forward_bytes_per_pixel(default_feature_layer(net))
            )
            size = max(1, min(int(batch or 16), budget // max(1, per_image)))
        else:
            size = int(batch or 16)
    total = len(windows)
    yield Progress(0, total, f"occlusion {goal.label}: {total} window positions")
    drops = np.empty(total, dtype=np.float64)
    with torch.inference_mode():
        if blocks is None:
            base = _occluded_outputs(net, x, baseline, [], goal.layer)[0]
        else:
            base = engine.output() if goal.layer is None else engine.acts[-1]
        base_score = _score(base, goal)
    for start in range(0, total, size):
        chunk = windows[start : start + size]
        with torch.inference_mode():
            if blocks is None:
                outputs = _occluded_outputs(net, x, baseline, chunk, goal.layer)
            else:
                outputs = engine.occluded_outputs(baseline, chunk, maps=goal.layer is not None)
            for i, out in enumerate(outputs):
                drops[start + i] = base_score - _score(out, goal)
        done = start + len(chunk)
        yield Progress(done, total, f"occlusion {goal.label}: {done}/{total} positions")
    total_map = np.zeros((H, W), dtype=np.float64)
    count = np.zeros((H, W), dtype=np.float64)
    for (y0, y1, c0, c1), d in zip(windows, drops, strict=False):
        total_map[y0:y1, c0:c1] += d
        count[y0:y1, c0:c1] += 1
    native = (total_map / np.maximum(count, 1)).astype(np.float32)
    if tuple(hw) == (H, W):
        return native
    return align(native, INPUT_GRID, hw, scale)


def memory_budget_bytes(budget: int | str | None) -> int:
    try:
        return memory_budget(budget)
    except ValueError as exc:
        raise AttributionError(str(exc)) from exc


def _score(output: Any, goal: Target) -> float:
    return float(_scalar(goal.reduce(output), goal, need_tensor=False))


def _occluded_outputs(
    net: Network,
    x: torch.Tensor,
    baseline: torch.Tensor,
    windows: list[tuple[int, int, int, int]],
    tap: LayerInfo | None = None,
) -> list[Any]:
    """The network's output (or layer ``tap``'s activations) for each occluded copy of ``x``.

    One batched forward pass; no windows: ``x`` itself.
    """
    xs = x.expand(max(1, len(windows)), -1, -1, -1).clone()
    for i, (y0, y1, c0, c1) in enumerate(windows):
        xs[i, :, y0:y1, c0:c1] = baseline[0]
    out = _first(net.model(xs)) if tap is None else drain(net.arch.forward(net.model, xs, tap))
    return [out[i : i + 1] for i in range(len(xs))]


class _ReuseEngine:
    """Occluded outputs that recompute only each window's receptive-field footprint.

    The unoccluded activations of every block are computed once. For each window, block by
    block, only the output pixels whose window reads a changed input pixel are recomputed
    (from a crop of the previous block's activations with the changed values pasted in); the
    last spatial layer's changed box then updates its global mean, which is the network's
    output. Windows whose crops have the same shape run as one batch.
    """

    def __init__(self, net: Network, blocks: list[_Block], x: torch.Tensor):
        self.blocks = blocks
        acts = [x]
        for block in blocks:
            inp = acts[-1]
            if getattr(block.module, "inplace", False):
                inp = inp.clone()
            acts.append(block.module(inp))
        self.acts = acts
        last = acts[-1]
        self.n = last.shape[-2] * last.shape[-1]
        self.base_sum = last.double().sum(dim=(2, 3))  # (1, C)

    def output(self) -> torch.Tensor:
        """The unoccluded network output ``(1, C)``."""
        return (self.base_sum / self.n).float()

    def occluded_outputs(
        self,
        baseline: torch.Tensor,
        windows: list[tuple[int, int, int, int]],
        maps: bool = False,
    ) -> list[Any]:
        """The network's output ``(1, C)`` for each window; with ``maps``, the last spatial
        layer's activations ``(1, C, h, w)`` instead (for region targets)."""
        occluders = [
            _Occluder(w, baseline.expand(1, -1, w[1] - w[0], w[3] - w[2])) for w in windows
        ]
        for level, block in enumerate(self.blocks):
            self._step(level, block, occluders)
        last = self.acts[-1]
        if maps:
            whole = []
            for occ in occluders:
                r0, r1, c0, c1 = occ.box
                copy = last.clone()
                copy[:, :, r0:r1, c0:c1] = occ.values
                whole.append(copy)
            return whole
        outputs = []
        for occ in occluders:
            r0, r1, c0, c1 = occ.box
            old = last[:, :, r0:r1, c0:c1].double().sum(dim=(2, 3))
            new = occ.values.double().sum(dim=(2, 3))
            outputs.append(((self.base_sum - old + new) / self.n).float())
        return outputs

    def _step(self, level: int, block: _Block, occluders: list[_Occluder]) -> None:
        import torch

        inp, out = self.acts[level], self.acts[level + 1]
        (h_in, w_in), (h_out, w_out) = inp.shape[-2:], out.shape[-2:]
        plans = []
        groups: dict[tuple[int, int], list[int]] = {}
        for i, occ in enumerate(occluders):
            r0, r1, c0, c1 = occ.box
            a0, a1 = block.dirty(r0, r1, h_out)
            b0, b1 = block.dirty(c0, c1, w_out)
            lo, hi = block.source(a0, a1, h_in)
            clo, chi = block.source(b0, b1, w_in)
            plans.append((a0, a1, b0, b1, lo, hi, clo, chi))
            groups.setdefault((hi - lo, chi - clo), []).append(i)
        for members in groups.values():
            crops = []
            for i in members:
                a0, a1, b0, b1, lo, hi, clo, chi = plans[i]
                crop = inp[:, :, lo:hi, clo:chi].clone()
                r0, r1, c0, c1 = occluders[i].box
                # the changed values that fall inside the crop
                y0, y1, x0, x1 = max(r0, lo), min(r1, hi), max(c0, clo), min(c1, chi)
                if y0 < y1 and x0 < x1:
                    crop[:, :, y0 - lo : y1 - lo, x0 - clo : x1 - clo] = occluders[i].values[
                        :, :, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0
                    ]
                crops.append(crop)
            result = block.module(torch.cat(crops) if len(crops) > 1 else crops[0])
            for j, i in enumerate(members):
                a0, a1, b0, b1, lo, hi, clo, chi = plans[i]
                j0, k0 = a0 - lo // block.stride, b0 - clo // block.stride
                occluders[i] = _Occluder(
                    (a0, a1, b0, b1), result[j : j + 1, :, j0 : j0 + a1 - a0, k0 : k0 + b1 - b0]
                )


def occlusion_sensitivity(
    net: Network,
    image: Any,
    target: Any,
    *,
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    fill: Any = "mean",
    batch: int | None = None,
    reuse: bool = True,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | str | None = None,
) -> np.ndarray:
    """Occlusion sensitivity: how much the target's score drops when a window is covered.

    Windows of ``window`` pixels start at ``0, stride, 2*stride, ...`` along each axis until
    the image is covered (the last ones cut off at the edge), as captum's ``Occlusion``; each
    pixel gets the mean score drop of the windows that cover it.

    Parameters
    ----------
    net, image, target
        As for :func:`grad_cam`. ``target`` callables get the network's output and may
        return a tensor or a float.
    window : int or (int, int), optional
        Occluder size in network-input pixels (rows, columns); default a fifth of the
        shorter side.
    stride : int or (int, int), optional
        Step between window positions; default half the window. At most the window.
    fill : "mean" or float
        Value of the covered pixels: ``"mean"``, the image's mean colour (MATLAB's
        default), or an intensity in the image's own units (e.g. 0 for black in uint8).
    batch : int, optional
        Window positions computed together (default 16, fewer where the memory budget
        needs it).
    reuse : bool
        True: each position recomputes only its receptive-field footprint of every layer
        (exact). False: a full forward pass per position, as captum does.
    input_scale, intensity_range, rgb, memory_budget
        As for :func:`~napari_activations.activations`; with ``input_scale`` the map is
        computed on the network's grid and placed on the image's.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 on the image grid: positive where covering the pixel lowered the
        score (score units, e.g. class score before softmax).
    """
    return drain(
        iter_occlusion_sensitivity(
            net,
            image,
            target,
            window=window,
            stride=stride,
            fill=fill,
            batch=batch,
            reuse=reuse,
            input_scale=input_scale,
            intensity_range=intensity_range,
            rgb=rgb,
            memory_budget=memory_budget,
        )
    )
