"""Computing activations: image -> preprocessing -> network stopped at a layer -> array.

The compute is a generator (:func:`iter_activations`) that yields :class:`Progress` after each
network block and returns the result; :func:`activations` drains it for scripts and tests, and
the napari widget runs the same generator in a worker thread, so there is one code path.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import backends
from .alignment import AlignedActivations
from .backends import torch_backend
from .layers import LayerInfo, minimum_input_size, output_size
from .tiling import (
    can_tile,
    choose_tile,
    estimate_forward_bytes,
    forward_bytes_per_pixel,
    forward_layer,
    global_pool,
    plan_axis,
    tile_count,
    tiled_forward,
)
from .tiling import memory_budget as budget_bytes

if TYPE_CHECKING:
    import torch

    from .network import Network

__all__ = [
    "Progress",
    "ImageError",
    "activations",
    "iter_activations",
    "classify",
    "is_rgb",
    "image_planes_shape",
    "channels_last",
    "network_input_size",
    "plane_tensor",
    "drain",
    "report_steps",
    "NETWORK_INPUT_SIZE",
]

T = TypeVar("T")

NETWORK_INPUT_SIZE = 227
"""Side of the images SqueezeNet v1.1 was trained on (and that :func:`classify` uses)."""


class ImageError(ValueError):
    """The image cannot be used as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Progress:
    """One step of a computation: ``done`` of ``total`` steps, and what is happening."""

    done: int
    total: int
    message: str


def drain(gen: Generator[Any, Any, T]) -> T:
    """Run a generator to its end, ignoring what it yields; its return value.

    The synchronous way to call any of the package's step-by-step generators (compute,
    export, attribution): scripts and tests drain them, the widgets run them in a worker.
    """
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def report_steps(
    steps: Generator[Any, None, T], progress: Callable[[int], Progress]
) -> Generator[Progress, None, T]:
    """Run ``steps``, yielding ``progress(n)`` after its ``n``-th step; its return value."""
    done = 0
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
        done += 1
        yield progress(done)


def is_rgb(shape: tuple[int, ...], rgb: bool | None = None) -> bool:
    """Whether an array of ``shape`` is RGB(A), by napari's own rule unless ``rgb`` says.

    napari's rule: more than two dimensions, the last of size 3 or 4, and the two before it
    larger than 30 pixels.
    """
    if rgb is not None:
        if rgb and (len(shape) < 3 or shape[-1] not in (3, 4)):
            raise ImageError(
                f"rgb=True needs a last axis of 3 (RGB) or 4 (RGBA) values; "
                f"this image has shape {tuple(shape)}."
            )
        return bool(rgb)
    return len(shape) > 2 and shape[-1] in (3, 4) and all(d > 30 for d in shape[-3:-1])


def image_planes_shape(
    shape: tuple[int, ...], rgb: bool | None = None
) -> tuple[tuple[int, ...], tuple[int, int], bool]:
    """Split an image shape into (leading axes, (H, W), is_rgb)."""
    shape = tuple(int(s) for s in shape)
    colour = is_rgb(shape, rgb)
    spatial = shape[:-1] if colour else shape
    if len(spatial) < 2:
        raise ImageError(f"An image needs at least two axes (H, W); this one has shape {shape}.")
    return spatial[:-2], (spatial[-2], spatial[-1]), colour


def channels_last(
    image: Any, rgb: bool | None, channel_axis: int | None
) -> tuple[Any, tuple[int, ...], tuple[int, int], bool]:
    """The image with its channels (if any) on the last axis, and its (leading axes,
    (H, W), has channels).

    ``channel_axis``: the axis that holds the network's input channels (as napari's
    ``channel_axis``, but kept in one array), moved last (a view, lazy for dask); else
    napari's RGB rule or ``rgb`` as :func:`is_rgb` says.
    """
    if channel_axis is None:
        lead, hw, colour = image_planes_shape(image.shape, rgb)
        return image, lead, hw, colour
    if rgb:
        raise ImageError("Give rgb=True or channel_axis, not both: channel_axis says it all.")
    ndim = len(image.shape)
    if not isinstance(channel_axis, (int, np.integer)) or not -ndim <= channel_axis < ndim:
        raise ImageError(
            f"channel_axis must be an axis of the image (-{ndim} to {ndim - 1}); "
            f"got {channel_axis!r} for shape {tuple(image.shape)}."
        )
    if ndim < 3:
        raise ImageError(
            f"With channel_axis the image needs (H, W) and a channel axis; this one has "
            f"shape {tuple(image.shape)}."
        )
    image = np.moveaxis(image, int(channel_axis), -1)
    lead, hw, _ = image_planes_shape(image.shape[:-1], False)
    return image, lead, hw, True


def _check_channels(net: Network, shape: tuple[int, ...], colour: bool, explicit: bool) -> None:
    """Refuse, before any compute, an image whose channels the network cannot take."""
    if not colour:
        return  # gray: the same plane for every input channel
    n, c = int(shape[-1]), net.in_channels
    if n == c or (c == 3 and n == 4 and not explicit):  # RGBA: alpha dropped
        return
    has = f"{n} along its channel axis" if explicit else ("3 (RGB)" if n == 3 else "4 (RGBA)")
    if c == 1:
        advice = "Pass one channel as a gray image, e.g. image[..., 0]."
    else:
        advice = (
            f"Pass an image whose channel axis holds {c} values and say which axis it is, "
            f"e.g. activations(net, np.stack(planes, axis=-1), layer, channel_axis=-1), or "
            f"a gray image (used for all {c} channels)."
        )
    raise ImageError(
        f"{net.title} takes {c} input channel{'s' if c != 1 else ''}; this image has {has}. "
        + advice
    )


def _check_size(net: Network, size: tuple[int, int], input_scale: float) -> None:
    """Refuse a size that the network does not take (:attr:`Network.input_sizes`)."""
    if net.input_sizes is None:
        return
    fits = []
    for n, (low, step) in zip(size, net.input_sizes, strict=True):
        if n < low:
            fits.append(None)
        else:
            fits.append(low if step == 0 else low + (n - low) // step * step)
    if tuple(fits) == tuple(size):
        return
    rule = " and ".join(
        f"{what} {low}" if step == 0 else f"{what} {low} + a multiple of {step}"
        for what, (low, step) in zip(("heights", "widths"), net.input_sizes, strict=True)
    )
    at = "" if input_scale == 1 else f" at input_scale={input_scale:g}"
    if None in fits:
        todo = "Use a larger image."
    else:
        todo = (
            f"Crop it to {fits[0]}x{fits[1]}, e.g. image[..., :{fits[0]}, :{fits[1]}]"
            f"{', or choose another input_scale' if input_scale != 1 else ''}."
        )
    raise ImageError(
        f"{net.title} takes {rule} pixels only (its description says); the network would "
        f"see {size[0]}x{size[1]}{at}. {todo}"
    )


def _as_image(image: Any) -> Any:
    """Arrays (numpy, dask, ...) as they are; anything else through ``np.asarray``."""
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        return image
    try:
        return np.asarray(image)
    except ValueError as exc:  # ragged nesting, e.g. the levels of a multiscale pyramid
        raise ImageError(
            "The image is a list of arrays of different shapes (the levels of a "
            "multiscale pyramid?); pass one array, e.g. image[0]."
        ) from exc


def _check_dtype(dtype: np.dtype) -> None:
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating):
        return
    if np.issubdtype(dtype, np.complexfloating):
        raise ImageError(
            "The image has complex values; pass a real image such as np.abs(image) or image.real."
        )
    raise ImageError(
        f"The image has values of type {dtype}; pass numbers (integers, floats or booleans)."
    )


def _intensity_bounds(
    image: Any, intensity_range: tuple[float, float] | None, colour: bool = False
) -> tuple[float, float] | None:
    """(low, high) that map to 0 and 1; ``None`` for uint8 scaled by 255.

    For colour images only R, G and B count: an opaque alpha at the top of the dtype's range
    must not stretch the colours.
    """
    if intensity_range is not None:
        try:
            low, high = (float(v) for v in intensity_range)
        except (TypeError, ValueError) as exc:
            raise ImageError("intensity_range must be two numbers (low, high).") from exc
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ImageError(
                f"intensity_range must be finite with high > low; got ({low}, {high})."
            )
        return low, high
    dtype = np.dtype(image.dtype)
    if dtype == np.uint8:
        return None
    if dtype == np.bool_:
        return 0.0, 1.0
    if colour:
        image = image[..., :3]
    if np.issubdtype(dtype, np.floating):
        finite = _where_finite(image)
        low, high = _reduce(finite, "nanmin"), _reduce(finite, "nanmax")
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ImageError(
                "The image has no finite values (all NaN or infinite): give the "
                "range to show as intensity_range=(low, high), or replace them, "
                "e.g. np.nan_to_num(image)."
            )
        return low, high
    return _reduce(image, "min"), _reduce(image, "max")


def _where_finite(image: Any) -> Any:
    if hasattr(image, "compute"):  # dask: stays lazy
        import dask.array as da

        return da.where(da.isfinite(image), image, np.nan)
    return np.where(np.isfinite(image), image, np.nan)


def _reduce(a: Any, how: str) -> float:
    if hasattr(a, "compute"):
        import dask.array as da

        return float(getattr(da, how)(a).compute())
    return float(getattr(np, how)(a))


_REUSED_INPUT_BYTES = 64 * 2**20
_thread_input = threading.local()


def _input_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 CPU tensor: this thread's previous one if the shape is the same.

    Fresh memory costs a page fault per 4 KiB on first touch, for a 2048x2048 image a third
    of conv1's own time; re-running the same image (another layer, another channel) is the
    common case. The network reads its input only in its first step (conv1 for torch, the
    whole pass for ONNX Runtime), which a runner runs before it first yields (or it is copied
    to the device or resized into a new tensor at once), so the buffer is free again by the
    time this thread asks for the next one. Inputs over 64 MiB are not kept.
    """
    import torch

    if 4 * math.prod(shape) > _REUSED_INPUT_BYTES:
        with torch.inference_mode(False):
            return torch.empty(shape, dtype=torch.float32)
    buffer = getattr(_thread_input, "buffer", None)
    if buffer is None or tuple(buffer.shape) != tuple(shape):
        _thread_input.buffer = None  # free the old one before allocating
        with torch.inference_mode(False):  # a normal tensor: writable in and out of it
            buffer = torch.empty(shape, dtype=torch.float32)
        _thread_input.buffer = buffer
    return buffer


def _held_buffer(held: list, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 CPU tensor of ``shape`` in ``held[0]``'s memory, grown when too small."""
    import torch

    n = math.prod(shape)
    if not held or held[0].numel() < n:
        held.clear()
        with torch.inference_mode(False):
            held.append(torch.empty(n, dtype=torch.float32))
    return held[0][:n].view(shape)


def plane_tensor(
    plane: Any,
    colour: bool,
    bounds: tuple[float, float] | None,
    net: Network,
    size: tuple[int, int],
    normalise: bool = True,
    torch_threads: bool = False,
    held: list | None = None,
) -> torch.Tensor:
    """One (H, W[, C]) plane -> normalised (1, 3, h, w) float32 tensor on the net's device.

    ``normalise=False`` stops at intensities in [0, 255] (a uint8 image as it is), for a
    runner whose network does the scaling and normalisation itself (folded into its first
    convolution: the conversion to float32 is all that is left here).
    ``torch_threads=True`` (the torch backend) converts uint8 images with torch's thread pool,
    which runs the network's first convolution right after. ``held``: a list in which the
    caller keeps one input buffer across calls (the tiles of one plane, which are over the
    size :func:`_input_buffer` keeps: a fresh 80 MiB tile costs 20,000 page faults).

    The result is a contiguous NCHW tensor (the convolutions' fast memory layout), never a
    view of the input, which is not written to. Without resizing on the CPU it is this
    thread's reused input buffer (:func:`_input_buffer`): run the network on it before the
    next call.

    A network with its own :attr:`~napari_activations.Network.preprocess` (bioimage.io
    models) gets the plane's raw values through it instead, with its statistics: pass it
    whole planes, not tiles.

    For uint8 the conversion, the /255 scaling and the normalisation are one multiply and one
    add (a plain cast where the runner folds them into its first convolution). Before ONNX
    Runtime they run in numpy on this thread: torch's pool would still spin
    on both cores when ONNX Runtime's own threads start (a 1024x1024 first layer of MobileNet
    v3 ran 1.3 to 2.3x slower), and two bands of rows on plain threads were slower too (1.27
    against 0.79 of the bare session for that layer, 1.33 against 1.12 for ConvNeXt-Tiny's
    ``features.0``, in one interleaved run).
    Before torch's own convolution, on its awake pool, torch's transposing copy made the
    whole call 1.1 to 1.3x faster than numpy's strided multiply (MobileNet v3
    ``features.1.add`` and ConvNeXt-Tiny ``features.0`` at 1024x1024, two threads).
    """
    import torch.nn.functional as F

    p = np.asarray(plane)
    c = net.in_channels
    if colour:
        p = p[..., :3] if c == 3 else p
        src = p.transpose(2, 0, 1)  # (channels, H, W), a view
    else:
        src = p[np.newaxis]  # (1, H, W): broadcast to the network's channels
    if src.shape[0] not in (1, c):
        raise ImageError(
            f"{net.title} takes {c} input channel{'s' if c != 1 else ''}; this image has "
            f"{src.shape[0]}. Pass a single-channel (gray) image{' or RGB' if c == 3 else ''}"
            f"{f', or {c} channels along the last axis with rgb=True' if c in (3, 4) else ''}."
        )
    if net.preprocess is not None:
        return _preprocessed(src, net, size)
    shape = (1, c) + src.shape[-2:]
    x = _input_buffer(shape) if held is None else _held_buffer(held, shape)
    out = x.numpy()[0]
    mean = np.array(net.mean, dtype=np.float64).reshape(c, 1, 1)
    std = np.array(net.std, dtype=np.float64).reshape(c, 1, 1)
    if bounds is None and not normalise:  # uint8 as it is: the runner scales it
        np.copyto(out, src, casting="unsafe")
    elif bounds is None and torch_threads and min(src.strides) >= 0:  # as below, on torch's pool
        import torch

        with warnings.catch_warnings():  # napari's data may be read-only: it is only read
            warnings.simplefilter("ignore", UserWarning)
            x[0].copy_(torch.from_numpy(src))
        x[0].mul_(torch.from_numpy((1.0 / (255.0 * std)).astype(np.float32)))
        x[0].add_(torch.from_numpy((-mean / std).astype(np.float32)))
    elif bounds is None:  # uint8 by 255: x = v / (255 std) - mean / std
        np.multiply(src, (1.0 / (255.0 * std)).astype(np.float32), out=out)
        out += (-mean / std).astype(np.float32)
    else:
        low, high = bounds
        inv = 1.0 / (high - low) if high > low else 0.0
        # at float32 precision at least (float16 would round v - low), grey broadcast to 3
        np.subtract(
            src, low, out=out, dtype=np.promote_types(src.dtype, np.float32), casting="unsafe"
        )
        out *= inv
        np.nan_to_num(out, copy=False, nan=0.0)  # NaN counts as low
        np.clip(out, 0.0, 1.0, out=out)
        if normalise:
            out -= mean.astype(np.float32)
            out /= std.astype(np.float32)
        else:  # the runner's scale, that of uint8 images
            out *= np.float32(255.0)
    x = x.to(net.device)
    if tuple(x.shape[-2:]) != tuple(size):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return x


def _preprocessed(src: np.ndarray, net: Network, size: tuple[int, int]) -> torch.Tensor:
    """``(1, C, h, w)``: raw ``(1 or C, H, W)`` values through ``net.preprocess``, resized."""
    import torch
    import torch.nn.functional as F

    raw = np.empty((net.in_channels,) + src.shape[-2:], dtype=np.float32)
    raw[...] = src  # gray broadcast to the network's channels
    finite = np.isfinite(raw)
    if not finite.all():  # NaN and infinities count as the plane's lowest value
        raw[~finite] = raw[finite].min() if finite.any() else 0.0
    out = np.asarray(net.preprocess(raw), dtype=np.float32)
    if out.shape != raw.shape:
        raise ImageError(
            f"{net.title}'s preprocessing turned a {raw.shape} plane into {out.shape}; "
            "napari-activations needs it to keep the shape."
        )
    x = torch.from_numpy(np.ascontiguousarray(out))[np.newaxis].to(net.device)
    if tuple(x.shape[-2:]) != tuple(size):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return x


def _channels_hint(shape: tuple[int, ...], colour: bool) -> str:
    """Advice for a stack whose last axis is short: probably channels, not image width."""
    if colour or len(shape) < 3 or shape[-1] > 4:
        return ""
    return (
        f" Its last axis has only {shape[-1]} values: if those are channels, pass one of "
        "them (image[..., 0]) or put them first (np.moveaxis(image, -1, 0))."
    )


def network_input_size(hw: tuple[int, int], input_scale: float) -> tuple[int, int]:
    """``(h, w)`` the network sees of an ``(H, W)`` image resized by ``input_scale``."""
    return (max(1, int(round(hw[0] * input_scale))), max(1, int(round(hw[1] * input_scale))))


@dataclass
class _Request:
    """A checked activations request: what to compute, for which planes, in which tiles."""

    net: Network
    image: Any
    info: LayerInfo
    lead: tuple[int, ...]
    hw: tuple[int, int]
    colour: bool
    size: tuple[int, int]
    bounds: tuple[float, float] | None
    tile: int | None
    backend: str = "torch"
    precision: str = "float32"
    forward_passes: int = 0

    @property
    def run_info(self) -> LayerInfo:
        """The network layer the forward pass stops at (tiled global layers: their context)."""
        return forward_layer(self.info, tiled=self.tile is not None)

    def runner(self, info: LayerInfo | None = None) -> backends.Runner:
        """The prepared network up to ``info`` (default :attr:`run_info`) on this backend."""
        return backends.prepare(self.net, info or self.run_info, self.backend, self.precision)

    @property
    def backend_used(self) -> str:
        """The backend that really runs (torch where the asked-for one fell back)."""
        return self.runner().backend

    @property
    def native_shape(self) -> tuple[int, ...]:
        return self.lead + (self.info.channels,) + output_size(self.info, *self.size)

    @property
    def scale(self) -> tuple[float, float]:
        return (self.size[0] / self.hw[0], self.size[1] / self.hw[1])

    def plane_steps(self) -> int:
        """Progress steps of one plane: the runner's steps (network blocks) times tiles."""
        return self.runner().steps * tile_count(self.info, self.size, self.tile)

    def forward_plane(self, idx: tuple[int, ...]) -> Generator[None, None, np.ndarray]:
        """``(C, h, w)`` activations of plane ``idx``; yields after each block of each tile."""

        self.forward_passes += 1
        plane = self.image[idx] if idx else self.image
        runner = self.runner()
        normalise, torch_threads = runner.normalised_input, runner.backend == "torch"
        # resize once (or preprocess with the whole plane's statistics), then cut tiles out
        if self.size != self.hw or self.net.preprocess is not None:
            resized: list = []

            def region(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
                if not resized:
                    resized.append(
                        plane_tensor(
                            plane,
                            self.colour,
                            self.bounds,
                            self.net,
                            self.size,
                            normalise=normalise,
                            torch_threads=torch_threads,
                        )
                    )
                return resized[0][..., y0:y1, x0:x1]
        else:
            held: list | None = [] if self.tile is not None else None

            def region(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
                return plane_tensor(
                    plane[y0:y1, x0:x1],
                    self.colour,
                    self.bounds,
                    self.net,
                    (y1 - y0, x1 - x0),
                    normalise=normalise,
                    torch_threads=torch_threads,
                    held=held,
                )

        def run(x: torch.Tensor, info: LayerInfo) -> Generator[None, None, np.ndarray]:
            return self.runner(info).run(x, release_memory=self.tile is not None)

        return (
            yield from _inference_steps(
                tiled_forward(run, region, self.size, self.info, self.tile, self.net.model)
            )
        )

    def compute_plane(self, idx: tuple[int, ...]) -> np.ndarray:
        return drain(self.forward_plane(idx))


def _inference_steps(gen: Generator[None, None, Any]) -> Generator[None, None, Any]:
    """Run each step of ``gen`` in torch's inference mode, and yield outside it.

    The mode is thread-local: held across a yield, it would stay on in the caller's code
    between steps (no autograd there), and for good if the generator were dropped unfinished.
    """
    import torch

    while True:
        with torch.inference_mode():
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
        yield


def _make_request(
    net: Network,
    image: Any,
    layer: str | LayerInfo,
    input_scale: float,
    intensity_range: tuple[float, float] | None,
    rgb: bool | None,
    tile: int | None,
    memory_budget: int | str | None,
    backend: str | None = "auto",
    precision: str | None = "float32",
    channel_axis: int | None = None,
) -> _Request:
    info = net.find_layer(layer)
    backend = backends.resolve_backend(backend, net.device)
    precision = backends.check_precision(precision, net.device, backend)
    if not (
        isinstance(input_scale, (int, float)) and math.isfinite(input_scale) and input_scale > 0
    ):
        raise ImageError(f"input_scale must be a positive number; got {input_scale!r}.")
    image = _as_image(image)
    _check_dtype(np.dtype(image.dtype))
    image, lead, hw, colour = channels_last(image, rgb, channel_axis)
    if min(hw) == 0 or any(n == 0 for n in lead):
        raise ImageError(f"The image is empty (shape {tuple(image.shape)}).")
    _check_channels(net, image.shape, colour, channel_axis is not None)
    size = network_input_size(hw, input_scale)
    _check_size(net, size, input_scale)
    h, w = output_size(info, *size)
    if h == 0:
        need = minimum_input_size(info)
        at = "" if input_scale == 1 else f" at input_scale={input_scale:g}"
        if min(size) >= need:  # large enough: the network refuses this size for another reason
            raise ImageError(
                f"Layer {info.name!r} cannot be computed on this image: "
                f"{net.arch.size_problem(info, *size)}{at}. Crop the image, or choose an "
                "input_scale, to a size the network takes."
            )
        raise ImageError(
            f"The image is too small for layer {info.name!r}: it needs at least {need}x{need} "
            f"pixels, and the network sees {size[0]}x{size[1]}{at}. Use a larger image"
            f"{', a larger input_scale' if input_scale < 1 else ''} or an earlier layer."
            f"{_channels_hint(image.shape, colour)}"
        )
    if net.input_sizes is not None:
        # tiles would need sizes the network takes; one pass per plane (not yet tiled)
        tile = None
    elif tile is None:
        try:
            tile = choose_tile(info, *size, memory_budget)
        except (MemoryError, ValueError) as exc:  # ValueError: a budget that cannot be read
            raise ImageError(str(exc)) from exc
    else:
        if not isinstance(tile, (int, np.integer)) or tile < 1:
            raise ImageError(f"tile must be a positive number of pixels; got {tile!r}.")
        # a layer without a single grid (or a global one without a context layer) is one
        # forward pass: its tiles would not fit together
        tile = int(tile) if can_tile(info) else None
    bounds = _intensity_bounds(image, intensity_range, colour and channel_axis is None)
    return _Request(net, image, info, lead, hw, colour, size, bounds, tile, backend, precision)


STACK_CACHE_BYTES = 256 * 2**20
"""Native planes a lazy stack keeps, in bytes (at least :class:`LazyNative`'s
``cache_planes`` planes): napari's 3D view reads every plane of a stack on each channel move,
and a (60, 256, 256) stack's fire5-concat planes (60 x 256 x 31 x 31 float32, 59 MiB) all fit,
so a move computes no forward pass."""


class LazyNative:
    """``(..., C, h, w)`` activations of a stack, each plane computed when first read.

    Used under :class:`AlignedActivations` for stacks: the first plane shows without
    computing the rest. The most recently read planes are kept: as many as fit in
    ``cache_bytes`` (default :data:`STACK_CACHE_BYTES`), and at least ``cache_planes``.
    ``forward_passes`` counts the forward passes run so far.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, request: _Request, cache_planes: int = 4, cache_bytes: int | None = None):
        self._req = request
        self._cache: dict[tuple[int, ...], np.ndarray] = {}
        self.shape = request.native_shape
        self.ndim = len(self.shape)
        plane_bytes = max(1, math.prod(self.shape[-3:]) * self.dtype.itemsize)
        n_planes = math.prod(self.shape[:-3])
        fit = int(STACK_CACHE_BYTES if cache_bytes is None else cache_bytes) // plane_bytes
        self._cache_planes = min(max(1, int(cache_planes), fit), max(1, n_planes))

    @property
    def forward_passes(self) -> int:
        return self._req.forward_passes

    def plane(self, idx: tuple[int, ...]) -> np.ndarray:
        """The ``(C, h, w)`` activations of plane ``idx``, computed if not cached."""
        if idx in self._cache:
            self._cache[idx] = self._cache.pop(idx)  # most recently used last
            return self._cache[idx]
        value = self._req.compute_plane(idx)
        self._cache[idx] = value
        while len(self._cache) > self._cache_planes:
            self._cache.pop(next(iter(self._cache)))
        return value

    def iter_plane(self, idx: tuple[int, ...]) -> Generator[None, None, np.ndarray]:
        """Plane ``idx`` computed step by step (one yield per network block), not cached.

        For reading a plane once (e.g. its range) without pushing shown planes out of the
        cache; a cached plane is returned at once.
        """
        if idx in self._cache:
            return self._cache[idx]
        return (yield from self._req.forward_plane(idx))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=np.float32)
        for idx in np.ndindex(*self.shape[:-3]):
            out[idx] = self.plane(idx)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        n_lead = self.ndim - 3
        if any(k is None or k is Ellipsis for k in key[:n_lead]) or not all(
            isinstance(k, (int, np.integer, slice)) for k in key[:n_lead]
        ):
            return np.asarray(self)[key]
        lead_key = key[:n_lead] + (slice(None),) * max(0, n_lead - len(key))
        ranges = [np.arange(n)[k] for n, k in zip(self.shape[:n_lead], lead_key, strict=False)]
        kept = tuple(
            np.size(r) for r, k in zip(ranges, lead_key, strict=False) if isinstance(k, slice)
        )
        rest = key[n_lead:]
        # Basic indices select within each plane before the planes are stacked: a 3D view's
        # one channel of every plane copies that channel only, not every plane's C channels.
        per_plane = all(isinstance(k, (int, np.integer, slice)) for k in rest)
        planes = [
            self.plane(tuple(int(i) for i in idx))[rest if per_plane else ()]
            for idx in itertools.product(*(np.atleast_1d(r) for r in ranges))
        ]
        if per_plane:
            inner = np.broadcast_to(np.empty((), np.bool_), self.shape[-3:])[rest].shape
            if not planes:
                return np.empty(kept + inner, dtype=np.float32)
            return np.stack(planes).reshape(kept + inner)
        stacked = (
            np.stack(planes).reshape(kept + self.shape[-3:])
            if planes  # none: empty
            else np.empty(kept + self.shape[-3:], dtype=np.float32)
        )
        # The rest of the key indexes (C, h, w), after the lead axes that slices kept.
        return stacked[(slice(None),) * len(kept) + rest]


def _tile_task(
    net: Network,
    region: np.ndarray,
    colour: bool,
    bounds: tuple[float, float] | None,
    layer: str,
    crop: tuple[slice, slice],
    backend: str = "torch",
    precision: str = "float32",
) -> np.ndarray:
    """One dask chunk: activations of one input region, cropped to the exact part.

    The runner is prepared by the process that runs the chunk (each distributed worker has
    its own network, and so its own session; exports come from the shared disk cache).
    """
    import torch

    runner = backends.prepare(net, net.find_layer(layer), backend, precision)
    with torch.inference_mode():
        x = plane_tensor(
            region,
            colour,
            bounds,
            net,
            tuple(region.shape[:2]),
            normalise=runner.normalised_input,
            torch_threads=runner.backend == "torch",
        )
        out = drain(runner.run(x, release_memory=True))[0]
        return np.ascontiguousarray(out[:, crop[0], crop[1]])


def _plane_task(
    net: Network,
    plane: np.ndarray,
    colour: bool,
    bounds: tuple[float, float] | None,
    layer: str,
    size: tuple[int, int],
    tile: int | None,
    backend: str = "torch",
    precision: str = "float32",
) -> np.ndarray:
    """One dask chunk: a whole plane (used with ``input_scale`` other than 1)."""
    req = _Request(
        net,
        plane,
        net.find_layer(layer),
        (),
        tuple(plane.shape[:2]),
        colour,
        tuple(size),
        bounds,
        tile,
        backend,
        precision,
    )
    return req.compute_plane(())


def _dask_activations(req: _Request) -> Any:
    """Native activations of a dask image as a dask array, one chunk per plane and tile."""
    import dask
    import dask.array as da

    info = req.info
    geo = forward_layer(info)
    C = geo.channels
    planes = []
    for idx in np.ndindex(*req.lead) if req.lead else [()]:
        plane = req.image[idx] if idx else req.image
        if (
            req.size != req.hw
            or not can_tile(info)
            or req.net.preprocess is not None  # its statistics are the whole plane's
        ):  # one chunk per plane
            d = dask.delayed(_plane_task, pure=True)(
                req.net,
                plane,
                req.colour,
                req.bounds,
                info.name,
                req.size,
                req.tile,
                req.backend,
                req.precision,
            )
            planes.append(da.from_delayed(d, shape=req.native_shape[-3:], dtype=np.float32))
            continue
        tile = req.tile if req.tile is not None else max(req.size)
        rows, cols = plan_axis(req.size[0], geo, tile), plan_axis(req.size[1], geo, tile)
        grid = []
        for r in rows:
            line = []
            for c in cols:
                region = plane[r.start : r.stop, c.start : c.stop]
                d = dask.delayed(_tile_task, pure=True)(
                    req.net,
                    region,
                    req.colour,
                    req.bounds,
                    geo.name,
                    (r.kept, c.kept),
                    req.backend,
                    req.precision,
                )
                line.append(
                    da.from_delayed(
                        d,
                        shape=(C, r.out_stop - r.out_start, c.out_stop - c.out_start),
                        dtype=np.float32,
                    )
                )
            grid.append(line)
        native = da.block(grid)
        planes.append(global_pool(native, info, req.net.model) if info.is_global else native)
    out = planes[0] if not req.lead else da.stack(planes).reshape(req.native_shape)
    return out


def iter_activations(
    net: Network,
    image: Any,
    layer: str | LayerInfo,
    *,
    resize: bool = False,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    tile: int | None = None,
    memory_budget: int | str | None = None,
    backend: str = "auto",
    precision: str = "float32",
    channel_axis: int | None = None,
) -> Generator[Progress, None, np.ndarray | AlignedActivations]:
    """The compute of :func:`activations` as a generator of :class:`Progress`.

    Closing the generator (``gen.close()``) between steps cancels the computation; nothing is
    kept. The return value (``StopIteration.value``) is what :func:`activations` returns.
    The first run of a layer on a fast backend starts with a step of its own, ``"preparing
    the fast path"`` (``total`` 0: its length is unknown), while the network is exported or
    loaded from the disk cache.
    """
    req = _make_request(
        net,
        image,
        layer,
        input_scale,
        intensity_range,
        rgb,
        tile,
        memory_budget,
        backend,
        precision,
        channel_axis,
    )
    info, lead = req.info, req.lead
    if _is_dask(req.image) and not resize:
        yield Progress(1, 1, f"{info.name}: dask graph built")
        return _dask_activations(req)
    yield from _prepare(req)
    if resize and (lead or _is_dask(req.image)):
        # keep what fits in a quarter of the free memory (up to STACK_CACHE_BYTES); refuse
        # only what cannot hold the four planes a stack needs at least
        free = _available_memory()
        lazy = LazyNative(
            req,
            cache_bytes=STACK_CACHE_BYTES if free is None else min(STACK_CACHE_BYTES, free // 4),
        )
        _check_memory(req, min(lazy._cache_planes, 4), memory_budget)
        if lead:  # compute the first plane now, the rest when they are looked at
            first = (0,) * len(lead)
            steps = req.plane_steps()
            yield Progress(0, steps, f"{info.name}: first plane")
            lazy._cache[first] = yield from report_steps(
                req.forward_plane(first),
                lambda n: Progress(n, steps, f"{info.name} first plane: step {n}/{steps}"),
            )
        return AlignedActivations(lazy, info, req.hw, req.scale, req.backend_used)
    n_planes = int(np.prod(lead)) if lead else 1
    _check_memory(req, n_planes, memory_budget)
    steps = req.plane_steps()
    total = n_planes * steps
    # One plane is returned as the network produced it (no copy); a stack is filled in.
    out = np.empty(req.native_shape, dtype=np.float32) if lead else None
    yield Progress(0, total, f"{info.name}: starting")
    for k, idx in enumerate(np.ndindex(*lead) if lead else [()]):
        plane = f" plane {idx}" if lead else ""
        value = yield from report_steps(
            req.forward_plane(idx),
            lambda n, k=k, plane=plane: Progress(
                k * steps + n, total, f"{info.name}{plane}: step {n}/{steps}"
            ),
        )
        if lead:
            out[idx] = value
        else:
            out = value
    if resize:
        return AlignedActivations(out, info, req.hw, req.scale, req.backend_used)
    return out


def _prepare(req: _Request) -> Generator[Progress, None, None]:
    """Prepare the request's runner, as a progress step of its own when that is real work."""
    if backends.needs_preparing(req.net, req.run_info, req.backend, req.precision):
        title = backends.BACKEND_TITLES[req.backend]
        yield Progress(
            0,
            0,
            f"{req.info.name}: preparing the fast path ({title}; the first "
            "time, an export of a few seconds)",
        )
        req.runner()


def _available_memory() -> int | None:
    """Bytes of memory the machine can still give this process; None where psutil is absent."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def _check_memory(req: _Request, planes: int, budget: int | str | None) -> None:
    """Refuse a run whose result cannot fit in the machine's free memory, before allocating.

    ``planes`` is how many ``(C, h, w)`` float32 planes the run holds at once; the forward
    pass adds its own working memory (bounded by the tiling budget). numpy's lazily committed
    allocations would otherwise only fail when written to, with an out-of-memory kill.
    """
    available = _available_memory()
    if available is None:
        return
    C, h, w = req.native_shape[-3:]
    result = planes * C * h * w * 4
    need = result + min(
        estimate_forward_bytes(*req.size, forward_bytes_per_pixel(req.info)), budget_bytes(budget)
    )
    if need <= available:
        return
    scale = math.floor(100 * math.sqrt(available / 2 / need) * req.scale[0]) / 100
    advice = f"a smaller input_scale (e.g. {scale:g})" if scale > 0 else "a smaller input_scale"
    planes_text = f"{planes} planes" if planes > 1 else "one plane"
    raise ImageError(
        f"Layer {req.info.name!r} of this image would need about {need / 2**30:.1f} GiB "
        f"({planes_text} of {C}x{h}x{w} float32 activations), more than the "
        f"{available / 2**30:.1f} GiB of memory free. Use {advice}, a smaller region of the "
        "image, or a dask array (its activations stay lazy, computed chunk by chunk)."
    )


def _is_dask(a: Any) -> bool:
    return type(a).__module__.startswith("dask")


def activations(
    net: Network,
    image: Any,
    layer: str | LayerInfo,
    *,
    resize: bool = False,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    tile: int | None = None,
    memory_budget: int | str | None = None,
    backend: str = "auto",
    precision: str = "float32",
    channel_axis: int | None = None,
) -> np.ndarray | AlignedActivations:
    """Activations of one network layer for an image or a stack of images.

    Parameters
    ----------
    net : Network
        From :func:`load_squeezenet`.
    image : array-like
        ``(H, W)`` grayscale, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (alpha dropped), with any
        leading axes ``(..., H, W[, 3])`` computed plane by plane. Any real dtype; numpy or
        dask (planes are read one at a time). A gray plane feeds every input channel of the
        network; for a network with ``n`` input channels, pass the ``n`` planes stacked along
        one axis and name it with ``channel_axis``.
    layer : str or LayerInfo
        MATLAB / Caffe name (``"fire6-squeeze1x1"``) or torchvision path
        (``"features.9.squeeze"``).
    resize : bool
        False: native resolution ``(..., C, h, w)``. True: on the image's own pixel grid,
        ``(..., C, H, W)``, activation pixel ``i`` placed over input pixel ``O + S*i``
        (bilinear, edges held); returned as a lazy :class:`AlignedActivations` whose slices
        are computed on access (``np.asarray`` gives the full array).
    input_scale : float
        Run the network on the image resized by this factor, then map the activations back to
        the original grid (with ``resize=True``).
    intensity_range : (low, high), optional
        Intensities mapped to 0 and 1 (clipped), e.g. a napari layer's contrast limits.
        Default: uint8 by 0..255, booleans as 0/1, other dtypes by the image's own finite
        min and max. NaN counts as ``low``. Not used by a network with its own
        preprocessing (``net.preprocess``: bioimage.io models), which gets the raw values.
    rgb : bool, optional
        Whether the last axis is colour; default napari's rule (last axis 3 or 4, the two
        before it longer than 30).
    channel_axis : int, optional
        The axis of ``image`` that holds the network's input channels, ``net.in_channels``
        values (e.g. ``(5, H, W)`` with ``channel_axis=0`` for a 5-channel network); the
        other axes are as without it. Intensities are scaled over all channels together.
    tile : int, optional
        Compute in tiles of about this many network-input pixels a side (exact: the result
        equals the untiled one). Default: tiled only when one forward pass would exceed the
        memory budget.
    memory_budget : int or str, optional
        Working-memory budget of one forward pass, in bytes or as ``"2GiB"`` (2*2**30 bytes;
        ``"2G"`` or ``"2GB"``: 2*10**9, dask's units); default
        ``$NAPARI_ACTIVATIONS_MEMORY_BUDGET``, else 1 GiB (see :mod:`napari_activations.tiling`).
    backend : "auto", "torch" or "onnxruntime"
        What runs the network. ``"auto"``: ``$NAPARI_ACTIVATIONS_BACKEND`` where set, else ONNX
        Runtime on the CPU where it is installed (the fastest), else torch. Every backend
        gives the same activations within 1e-5 of the layer's maximum; a layer that ONNX
        Runtime cannot run falls back to torch, with a warning (see
        :mod:`napari_activations.backends`). Resized results record the backend that ran in
        ``.backend``.
    precision : "float32", "float16" or "bfloat16"
        Arithmetic of the forward pass. Half precision runs on GPUs only (torch backend, on a
        channels_last copy of the network); the result is float32 either way.

    Returns
    -------
    numpy.ndarray or AlignedActivations
        float32, ``(..., C, h, w)`` or ``(..., C, H, W)``: the channel axis stands just before
        the spatial axes.

    Raises
    ------
    ImageError
        Unusable image (empty, complex, too small for the layer, ...); the message says what
        to do. :class:`UnknownLayerError` for a layer name that does not exist.
    """
    return drain(
        iter_activations(
            net,
            image,
            layer,
            resize=resize,
            input_scale=input_scale,
            intensity_range=intensity_range,
            rgb=rgb,
            tile=tile,
            memory_budget=memory_budget,
            backend=backend,
            precision=precision,
            channel_axis=channel_axis,
        )
    )


def classify(
    net: Network,
    image: Any,
    top: int = 5,
    *,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
) -> list[tuple[str, float]]:
    """The ``top`` ImageNet classes of an image, as ``[(category, probability), ...]``.

    The whole image is resized to 227x227 (SqueezeNet's training size), after the same
    intensity scaling as :func:`activations` (``rgb`` and ``channel_axis`` as there). Stacks
    are refused: classify one plane.
    """
    import torch

    image = _as_image(image)
    _check_dtype(np.dtype(image.dtype))
    image, lead, hw, colour = channels_last(image, rgb, channel_axis)
    if lead:
        raise ImageError(
            f"classify takes one image, (H, W) or (H, W, 3); this is a stack of "
            f"shape {tuple(image.shape)}. Pass one plane, e.g. image[0]."
        )
    if min(hw) == 0:
        raise ImageError(f"The image is empty (shape {tuple(image.shape)}).")
    _check_channels(net, image.shape, colour, channel_axis is not None)
    bounds = _intensity_bounds(image, intensity_range, colour and channel_axis is None)
    if not net.categories:
        raise ImageError(
            f"{net.title} has no categories: it is not a classifier, or its categories were "
            "not given (load_network(..., categories=[...]))."
        )
    size = (net.arch.input_size, net.arch.input_size)
    with torch.inference_mode():
        x = plane_tensor(image, colour, bounds, net, size, torch_threads=True)
        if net.arch.name == "squeezenet1_1":
            prob = drain(torch_backend.forward(net.model, x, net.find_layer("prob")))
            prob = prob[0, :, 0, 0].cpu()
        else:
            logits = net.model(x)
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            prob = torch.softmax(logits.reshape(-1).float(), dim=0).cpu()
        if prob.numel() != len(net.categories):
            raise ImageError(
                f"{net.title} gives {prob.numel()} scores but has {len(net.categories)} "
                "categories; give one category per output."
            )
        k = max(1, min(int(top), prob.numel()))
        values, indices = torch.topk(prob, k)
    return [
        (net.categories[i], float(v))
        for v, i in zip(values.tolist(), indices.tolist(), strict=False)
    ]


def network_input(
    net: Network,
    image: Any,
    layer: str | LayerInfo,
    *,
    input_scale: float = 1.0,
    intensity_range: tuple[float, float] | None = None,
    rgb: bool | None = None,
    memory_budget: int | str | None = None,
    channel_axis: int | None = None,
) -> tuple[torch.Tensor, tuple[int, int], tuple[float, float], tuple[float, float] | None]:
    """The normalised network input of one image, as :func:`activations` makes it.

    For computations that need the whole input at once (attribution maps): the image is
    checked as for ``layer``, scaled and normalised exactly as :func:`activations` does, and
    resized by ``input_scale``.

    Returns
    -------
    x : torch.Tensor
        ``(1, 3, h, w)`` float32 on the network's device, a tensor of its own.
    image_hw : (int, int)
        ``(H, W)`` of the image.
    scale : (float, float)
        Network pixels per image pixel, as realised.
    bounds : (float, float) or None
        The intensities mapped to 0 and 1 (None: uint8 by 255).

    Raises
    ------
    ImageError
        Unusable image, a stack, or an image whose forward pass exceeds the memory budget.
    """
    req = _make_request(
        net,
        image,
        layer,
        input_scale,
        intensity_range,
        rgb,
        None,
        memory_budget,
        channel_axis=channel_axis,
    )
    if req.lead:
        raise ImageError(
            f"Attribution maps take one image, (H, W) or (H, W, 3); this is a "
            f"stack of shape {tuple(req.image.shape)}. Pass one plane, e.g. "
            "image[0]."
        )
    if req.tile is not None:
        most = math.sqrt(
            budget_bytes(memory_budget)
            / estimate_forward_bytes(1, 1, forward_bytes_per_pixel(req.info))
        )
        advice = min(1.0, math.floor(100 * most / max(req.hw)) / 100)
        raise ImageError(
            f"The network would see {req.size[0]}x{req.size[1]} pixels, more than one forward "
            f"pass may hold in the memory budget ({budget_bytes(memory_budget) / 2**30:.1f} "
            f"GiB). Use input_scale={advice:g} or less, a region of the image, or a larger "
            "memory_budget."
        )
    x = plane_tensor(req.image, req.colour, req.bounds, req.net, req.size)
    return x.clone(), req.hw, req.scale, req.bounds
