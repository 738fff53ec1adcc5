"""The ONNX Runtime backend: the truncated network exported once, cached on disk, run on the CPU.

For each network layer, the network up to that layer is exported to ONNX with the layer as
the graph's only output and dynamic height and width, so one export serves every image and
tile size. SqueezeNet's export takes the uint8 intensities as they are, in [0, 255]: the
/255 scaling and ImageNet's normalisation are folded into conv1's weights and bias (the same
arithmetic up to rounding, since conv1 has no padding), which leaves the input one plain
conversion to float32. A requested output is a graph output, so ONNX
Runtime's Conv+ReLU fusion can never hide a pre-ReLU layer; the ReLU layers themselves are
computed here as ``max(pre, 0)`` from their pre-ReLU layer's export, which makes
``relu(pre) == post`` exact.

Each export is checked against torch on two odd-sized inputs (agreement within 1e-5 of the
layer's maximum) before it is used or cached. The cache is a directory of ``.onnx`` files,
each with a ``.sha256`` of its bytes beside it, in :func:`cache_dir`; the file name is the
hash of the network, the weights' hash, the layer and the versions of torch, onnx and ONNX
Runtime, so any change makes a new entry. An entry whose bytes do not match its hash, or that
ONNX Runtime cannot load, is exported again, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..architecture import SQUEEZENET
from ..layers import LayerInfo, minimum_input_size

if TYPE_CHECKING:
    from ..network import Network

__all__ = ["CACHE_ENV", "ExportError", "OnnxRunner", "cache_dir", "cache_path"]

CACHE_ENV = "NAPARI_ACTIVATIONS_CACHE"
"""Environment variable: the directory for exported networks (default: the user cache dir)."""

OPSET = 17
TOLERANCE = 1e-5
"""Largest accepted difference from torch, as a fraction of the layer's largest magnitude."""

GROWTH = 4
"""A runner loads a fresh session for inputs more than this many times its largest so far."""

_FORMAT = 4  # bump when the exported graph changes for the same inputs


class ExportError(RuntimeError):
    """The network could not be exported, loaded or matched to torch at this layer."""


def cache_dir() -> Path:
    """Where exported networks are kept: ``$NAPARI_ACTIVATIONS_CACHE``, else the user's cache
    directory (``~/.cache/napari-activations/onnx`` on Linux)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser() / "onnx"
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-activations", appauthor=False)) / "onnx"


def _folds_normalisation(net: Network) -> bool:
    """Whether the export takes intensities in [0, 255] (SqueezeNet: folded into conv1)."""
    return net.arch is SQUEEZENET


def weights_digest(net: Network) -> str:
    """sha256 of the network's parameters and buffers (names, shapes and bytes), once per net."""
    digest = net.__dict__.get("_weights_digest")
    if digest is None:
        h = hashlib.sha256()
        for name, tensor in net.model.state_dict().items():
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.numpy().tobytes())
        digest = h.hexdigest()
        net.__dict__["_weights_digest"] = digest
    return digest


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def cache_path(net: Network, info: LayerInfo) -> Path:
    """The cache file of ``net`` exported up to ``info``."""
    key = json.dumps(
        {
            "network": net.arch.name,
            "weights": weights_digest(net),
            "layer": info.name,
            "row": repr(info),  # the layer's geometry and layout, as this version derives it
            "opset": OPSET,
            "format": _FORMAT,
            **_versions(),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in net.arch.name)
    return cache_dir() / f"{safe}-{info.name}-{digest}.onnx"


class _Truncated:
    """A torch module running the network up to one layer (what gets exported)."""

    @staticmethod
    def make(net: Network, info: LayerInfo) -> Any:
        import copy

        if not _folds_normalisation(net):
            return net.arch.truncated(copy.deepcopy(net.model).to("cpu"), info)

        import torch

        from ..compute import drain
        from .torch_backend import forward

        model = copy.deepcopy(net.model).to("cpu")
        conv1 = model.features[0]
        assert conv1.padding == (0, 0), "folding the normalisation needs an unpadded conv1"
        with torch.no_grad():
            mean = torch.tensor(net.mean, dtype=torch.float64).view(1, 3, 1, 1)
            std = torch.tensor(net.std, dtype=torch.float64).view(1, 3, 1, 1)
            w = conv1.weight.double()
            # conv(w, (v / 255 - mean) / std) + b
            #   == conv(w / (255 std), v) + b - sum(w * mean / std)
            conv1.bias.copy_((conv1.bias.double() - (w * mean / std).sum((1, 2, 3))).float())
            conv1.weight.copy_((w / (255.0 * std)).float())

        class Truncated(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return drain(forward(self.model, x, info))

        return Truncated().eval()


def _export(net: Network, info: LayerInfo) -> bytes:
    """The ONNX bytes of ``net`` up to ``info``, with dynamic height and width."""
    import torch

    side = max(minimum_input_size(info), 64)
    x = torch.zeros((1, net.in_channels) + _runs_on(net, info, side, side + 8), dtype=torch.float32)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            torch.onnx.export(
                _Truncated.make(net, info),
                (x,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["activations"],
                dynamic_axes={
                    "input": {2: "height", 3: "width"},
                    "activations": {2: "out_height", 3: "out_width"},
                },
            )
    except Exception as exc:  # any exporter failure means: this network stays on torch
        raise ExportError(
            f"export of layer {info.name!r} to ONNX failed: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        ) from exc
    return buffer.getvalue()


def _taken(net: Network, h: int, w: int) -> tuple[int, int]:
    """The smallest size from (h, w) that the network takes (``net.input_sizes``)."""
    if net.input_sizes is None:
        return h, w
    fit = []
    for n, (low, step) in zip((h, w), net.input_sizes, strict=True):
        fit.append(low if n <= low or step == 0 else low + -(-(n - low) // step) * step)
    return fit[0], fit[1]


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, shortened (exporter messages run to pages)."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _session(model: bytes) -> Any:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ExportError(
            f"ONNX Runtime cannot load the exported network: {type(exc).__name__}: {exc}"
        ) from exc


def _runs_on(net: Network, info: LayerInfo, h: int, w: int) -> tuple[int, int]:
    """:func:`_taken`'s size, or, where the network still does not run on it (a U-Net's skip
    connections need sides divisible by its depth's stride, declared or not), the next
    multiples of that stride that differ from each other."""
    h, w = _taken(net, h, w)
    if net.arch.output_size(info, h, w)[0] > 0:
        return h, w
    unit = max((row.tile_unit for row in net.layers if row.stride), default=1)
    h = -(-h // unit) * unit
    return h, max(-(-w // unit) * unit, h + unit)


def _check_against_torch(session: Any, net: Network, info: LayerInfo) -> None:
    """Raise :class:`ExportError` unless the session matches torch on two odd-sized inputs."""
    import torch

    from ..compute import drain

    rng = np.random.default_rng(0)
    base = max(minimum_input_size(info), 40)
    c = net.in_channels
    mean = np.reshape(net.mean, (1, c, 1, 1))
    std = np.reshape(net.std, (1, c, 1, 1))
    for h, w in (
        _runs_on(net, info, base + 7, base + 18),
        _runs_on(net, info, base + 32, base + 3),
    ):
        x = rng.random((1, c, h, w), dtype=np.float32)  # intensities in [0, 1]
        normalised = ((x - mean) / std).astype(np.float32)
        try:
            with torch.inference_mode():
                x_torch = torch.from_numpy(normalised).to(net.device)
                want = drain(net.arch.forward(net.model, x_torch, info))
                want = want.to("cpu", torch.float32).numpy()
        except RuntimeError as exc:  # e.g. a U-Net whose skips need sizes divisible by 2^k
            raise ExportError(
                f"the network does not run on a {h}x{w} input to check the export: "
                f"{_first_line(exc)}"
            ) from exc
        feed = (x * np.float32(255)) if _folds_normalisation(net) else normalised
        try:
            got = session.run(None, {"input": feed})[0]
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime failed on a {h}x{w} input: {type(exc).__name__}: {exc}"
            ) from exc
        if got.shape != want.shape:
            raise ExportError(
                f"the exported network gives shape {got.shape} for a {h}x{w} "
                f"input, torch {want.shape}"
            )
        scale = float(np.abs(want).max()) or 1.0
        diff = float(np.abs(got - want).max()) / scale
        if not diff <= TOLERANCE:
            raise ExportError(
                f"the exported network differs from torch by {diff:.1e} of the "
                f"layer's maximum (more than {TOLERANCE:g})"
            )


def _read_cached(path: Path) -> bytes | None:
    """The cached export's bytes if they match their recorded hash; None otherwise."""
    try:
        data = path.read_bytes()
        recorded = path.with_suffix(".sha256").read_text().strip()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != recorded:
        return None
    return data


def _write_cached(path: Path, data: bytes) -> None:
    """Write ``data`` and its hash atomically (a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, content in (
            (path, data),
            (path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode()),
        ):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
    except OSError as exc:  # a read-only or full cache costs an export next time, no more
        warnings.warn(
            f"Could not cache the exported network in {path.parent} ({exc}); it "
            f"will be exported again next time. Set {CACHE_ENV} to a writable "
            "directory.",
            RuntimeWarning,
            stacklevel=4,
        )


_EXPORT_LOCK = threading.Lock()


def load_or_export(net: Network, info: LayerInfo) -> tuple[Any, str]:
    """An ONNX Runtime session for ``net`` up to ``info``, and where it came from.

    From the disk cache when an entry is there, intact and loadable; else exported, checked
    against torch and cached. Raises :class:`ExportError` where that fails.
    """
    path = cache_path(net, info)
    data = _read_cached(path)
    if data is not None:
        try:
            return _session(data), "cache"
        except ExportError:
            pass  # damaged in a way the hash could not see: export again
    with _EXPORT_LOCK:  # torch's exporter is not thread-safe
        data = _export(net, info)
    _check_against_torch(_session(data), net, info)
    _write_cached(path, data)
    # a fresh session for the user's inputs: one first run on the check's small inputs made
    # larger ones slower (OnnxRunner._session_for)
    return _session(data), "export"


def _run_options(release_memory: bool) -> Any:
    """Run options: ``release_memory`` (the tiles of a big image) shrinks ONNX Runtime's
    memory arena after the run. Without it the arena keeps the peak of every tile shape it has
    seen: ResNet-50's layer4 at 4096x4096 held 3.2 GiB in 1 GiB tiles, 2.4 GiB with it, against
    2.2 GiB with torch (``benchmarks/bench_networks.py``). Untiled runs keep the arena, which
    makes repeated runs of one size faster (conv1 at 2048x2048: 280 ms against 450 ms)."""
    if not release_memory:
        return None
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OnnxRunner:
    """Runs ``net`` up to ``info`` in an ONNX Runtime session (one step per forward pass)."""

    backend = "onnxruntime"
    steps = 1

    def __init__(
        self,
        session: Any,
        info: LayerInfo,
        relu: bool,
        source: str,
        normalised_input: bool = False,
        path: Path | None = None,
    ):
        self.session = session
        self.path = path  # the cached export, to load a fresh session from
        self.sessions_loaded = 1
        self._largest = 0  # the most input pixels this session has run on
        self.info = info
        self.relu = relu
        self.source = source  # "cache" or "export"
        # SqueezeNet's export scales and normalises in conv1 (input in [0, 255]); other
        # networks take normalised input
        self.normalised_input = normalised_input

    @classmethod
    def create(cls, net: Network, info: LayerInfo) -> OnnxRunner:
        if getattr(net.device, "type", "cpu") != "cpu":
            raise ExportError(f"ONNX Runtime runs on the CPU; this network is on {net.device}")
        pre = net.arch.pre_relu(info)
        exported = pre if pre is not None else info
        session, source = load_or_export(net, exported)
        return cls(
            session,
            info,
            pre is not None,
            source,
            not _folds_normalisation(net),
            cache_path(net, exported),
        )

    def _session_for(self, pixels: int) -> Any:
        """The session to run ``pixels`` input pixels on: a fresh one where they are more
        than :data:`GROWTH` times the most this session has run on.

        A session first run on small inputs (the export check's, a small image) ran later
        large ones 1.3 to 1.75x slower than a fresh session did (SqueezeNet fire5-concat and
        fire9-concat at 2048x2048 after one 64x64 run, one thread, five interleaved runs); a
        fresh session costs about 25 ms for SqueezeNet, once per such growth.
        """
        if self._largest and pixels > GROWTH * self._largest and self.path is not None:
            data = _read_cached(self.path)
            if data is not None:
                try:
                    self.session = _session(data)
                    self.sessions_loaded += 1
                except ExportError:
                    pass  # keep the session that works
        self._largest = max(self._largest, pixels)
        return self.session

    def run(self, x: Any, release_memory: bool = False) -> Generator[None, None, np.ndarray]:
        array = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
        session = self._session_for(int(array.shape[-2]) * int(array.shape[-1]))
        out = session.run(None, {"input": array}, _run_options(release_memory))[0]
        if self.relu:
            np.maximum(out, 0, out=out)
        yield
        return out
