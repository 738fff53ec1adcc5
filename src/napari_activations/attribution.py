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
one number: MATLAB's ``reductionFcn``, for networks that are not classifiers too.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .alignment import align
from .compute import Progress, drain, network_input
from .layers import LayerInfo, find_layer, output_size
from .tiling import estimate_forward_bytes, memory_budget

if TYPE_CHECKING:
    import torch

    from .network import Network

__all__ = [
    "AttributionError",
    "Target",
    "resolve_target",
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
        ``reduce(output) -> scalar tensor``: the score, from the network's output ``(1, ...)``.
    """

    index: int | None
    label: str
    reduce: Callable[[Any], Any]


def resolve_target(net: Network, target: Any) -> Target:
    """Check a target (class index, category name or callable) and say what it is.

    Raises :class:`AttributionError` for an index out of range or an unknown category (with
    the closest category names).
    """
    categories = list(net.categories or [])
    if callable(target):
        name = getattr(target, "__name__", type(target).__name__)
        return Target(None, "<lambda>" if name == "<lambda>" else name, target)
    if isinstance(target, (bool, np.bool_)):
        raise AttributionError(
            "A target is a class index, a category name or a function of "
            f"the network's output, not {target!r}."
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
    """The last spatial layer before global pooling (MATLAB's default feature layer).

    For SqueezeNet v1.1 that is ``relu_conv10``.
    """
    spatial = [info for info in net.layers if not info.is_global]
    return spatial[-1]


def feature_layer(net: Network, layer: str | LayerInfo | None) -> LayerInfo:
    """The network layer Grad-CAM weights: ``layer``, or the default; global layers refused."""
    if layer is None:
        return default_feature_layer(net)
    info = find_layer(layer)
    if info.is_global:
        last = default_feature_layer(net)
        raise AttributionError(
            f"Layer {info.name!r} comes after global pooling: it has one pixel, so a map of it "
            f"shows nothing about where. Use a spatial layer such as {last.name!r} (the "
            "default) or 'fire9-concat'."
        )
    return info


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
    yield Progress(0, 1, f"Grad-CAM {goal.label}: forward and backward pass")
    native = _grad_cam_native(net, x, info, goal)
    yield Progress(1, 1, f"Grad-CAM {goal.label}: done")
    if not resize:
        return native
    with torch.inference_mode():
        return align(native[None], info, hw, scale)[0]


def _grad_cam_native(net: Network, x: torch.Tensor, info: LayerInfo, goal: Target) -> np.ndarray:
    """``(h, w)`` Grad-CAM at the layer's own resolution (float32, non-negative)."""
    import torch

    module = net.model.get_submodule(info.module)
    captured: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        # A leaf that requires grad: the backward pass stops here, and nothing before this
        # layer builds a graph. The network goes on with a copy, so an in-place ReLU after a
        # pre-ReLU layer cannot overwrite the activations the map is made of.
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    with torch.inference_mode(False), torch.enable_grad():
        handle = module.register_forward_hook(keep)
        try:
            output = net.model(x)
        finally:
            handle.remove()
        score = _scalar(goal.reduce(output), goal, need_tensor=True)
        if not score.requires_grad:
            raise AttributionError(
                f"The target function {goal.label!r} returned a value that does not depend "
                "on the network's output; reduce the output itself, e.g. "
                "lambda out: out[0, 281]."
            )
        (grad,) = torch.autograd.grad(score, captured[0])
    acts = captured[0].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # alpha_k: (1, C, 1, 1)
    cam = torch.relu((weights * acts).sum(dim=1))[0]
    return cam.to("cpu", torch.float32).numpy()


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
    target : int, str or callable
        Class index (0-based), category name (``"Egyptian cat"``), or
        ``f(output) -> scalar tensor`` on the network's output (for SqueezeNet the ``(1, 1000)``
        class scores before softmax).
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
    """The occluder's value in network-input units, ``(1, 3, 1, 1)``."""
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
    if bounds is None:
        t = v / 255.0
    else:
        low, high = bounds
        t = min(1.0, max(0.0, (v - low) / (high - low))) if high > low else 0.0
    mean = torch.tensor(net.mean, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(net.std, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
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
        if blocks is not None and _reuse_bytes(blocks, H, W) > budget:
            blocks = None  # the unoccluded activations of every block would not fit
        if blocks is not None:
            engine = _ReuseEngine(net, blocks, x)
        if blocks is None:
            per_image = estimate_forward_bytes(H, W)
            size = max(1, min(int(batch or 16), budget // max(1, per_image)))
        else:
            size = int(batch or 16)
    total = len(windows)
    yield Progress(0, total, f"occlusion {goal.label}: {total} window positions")
    drops = np.empty(total, dtype=np.float64)
    with torch.inference_mode():
        base_score = _score(net.model(x) if blocks is None else engine.output(), goal)
    for start in range(0, total, size):
        chunk = windows[start : start + size]
        with torch.inference_mode():
            if blocks is None:
                outputs = _occluded_outputs(net, x, baseline, chunk)
            else:
                outputs = engine.occluded_outputs(baseline, chunk)
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
    net: Network, x: torch.Tensor, baseline: torch.Tensor, windows: list[tuple[int, int, int, int]]
) -> list[Any]:
    """The network's output for each occluded copy of ``x``: one batched forward pass."""

    xs = x.expand(len(windows), -1, -1, -1).clone()
    for i, (y0, y1, c0, c1) in enumerate(windows):
        xs[i, :, y0:y1, c0:c1] = baseline[0]
    out = net.model(xs)
    return [out[i : i + 1] for i in range(len(windows))]


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
        self, baseline: torch.Tensor, windows: list[tuple[int, int, int, int]]
    ) -> list[Any]:
        occluders = [
            _Occluder(w, baseline.expand(1, -1, w[1] - w[0], w[3] - w[2])) for w in windows
        ]
        for level, block in enumerate(self.blocks):
            self._step(level, block, occluders)
        last = self.acts[-1]
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
