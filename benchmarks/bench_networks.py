"""Any network: native activations against each network's own truncated forward, and memory.

Issue 11 (speed): for ResNet-50, MobileNet v3 (large) and ConvNeXt-Tiny with random weights
(timing does not depend on them), a random uint8 RGB image of 1024², and three layers per
network (an early one, one at mid depth, the last local one), times in one process (wall clock,
medians of interleaved repeats in rotated order):

- ``ours (torch)``: ``na.activations(net, image, layer, backend="torch")``: everything a user
  pays for: the uint8 image in, scaling and normalisation, the forward pass stopped at the
  layer, a ``(C, h, w)`` float32 numpy array out;
- ``floor (torch)``: ``torchvision.models.feature_extraction.create_feature_extractor`` of the
  same model truncated at the same node, on an already normalised ``(1, 3, H, W)`` tensor under
  ``torch.inference_mode()``: nothing else;
- ``ours (auto)``: the same call with ``backend="auto"`` (ONNX Runtime on the CPU);
- ``ort``: a plain ONNX Runtime session of the same exported network (the file our export
  produced) on an already prepared normalised float32 array: the fast-runtime floor of
  issue 12.

Targets: ``ours (torch) / floor (torch)`` at most 1.15 (issue 11), ``ours (auto) / ort`` at
most 1.15 (issue 12).

Memory (issue 11): ResNet-50's last ``layer4`` node at 4096² RGB with ``resize=True`` plus 20
channel moves (``stack[c]`` for 20 channels, as napari's slider reads them), in a fresh process:
peak RSS (``ru_maxrss``) at most 3 GiB, against the same process's RSS after loading.

Run from the repository root::

    .venv/bin/python benchmarks/bench_networks.py [--repeats N] [--threads T] [--skip-memory]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

NETWORKS = {
    "resnet50": ["conv1", "layer2.3.relu_2", "layer4.2.relu_2"],
    "mobilenet_v3_large": ["features.1.add", "features.7.block.1", "features.16"],
    "convnext_tiny": ["features.0", "features.3.2.add", "features.7.2.add"],
}
SIZE = 1024
TARGET = 1.15


def _median_times(funcs: dict, repeats: int) -> dict:
    wall = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            funcs[k]()
            wall[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in wall.items()}


def speed(repeats: int, size: int = SIZE) -> str:
    import onnxruntime as ort
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    import napari_activations as na
    from napari_activations import backends
    from napari_activations.backends import onnx_backend

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    lines = [
        "| network | layer | floor (torch), ms | ours (torch), ms | ratio | ort, ms | "
        "ours (auto), ms | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, layers in NETWORKS.items():
        net = na.load_network(name, None, device="cpu")
        mean = np.reshape(net.mean, (1, 3, 1, 1)).astype(np.float32)
        std = np.reshape(net.std, (1, 3, 1, 1)).astype(np.float32)
        # C-contiguous NCHW: numpy keeps the transposed (channels-last) layout otherwise, and
        # torch would run the floor on its channels_last path, another layout than ours
        x = ((image.transpose(2, 0, 1)[None] / np.float32(255) - mean) / std).astype(np.float32)
        x = np.ascontiguousarray(x)
        xt = torch.from_numpy(x)
        for layer in layers:
            info = net.find_layer(layer)
            ext = create_feature_extractor(net.model, return_nodes={layer: "out"}).eval()
            runner = backends.prepare(net, info, "onnxruntime")
            assert runner.backend == "onnxruntime", f"{name} {layer}: {runner.backend}"
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(
                onnx_backend.cache_path(net, runner_layer(net, info)).read_bytes(),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )

            def floor():
                with torch.inference_mode():
                    return ext(xt)["out"].numpy()

            def plain_ort():
                return session.run(None, {"input": x})[0]

            funcs = {
                "floor": floor,
                "ours_torch": lambda: na.activations(net, image, layer, backend="torch"),
                "ort": plain_ort,
                "ours_auto": lambda: na.activations(net, image, layer, backend="auto"),
            }
            # same numbers before timing
            want = floor()
            scale = float(np.abs(want).max()) or 1.0
            for k in ("ours_torch", "ours_auto"):
                got = funcs[k]()
                got = got if got.ndim == 3 else got[0]
                diff = float(np.abs(got - _nchw(want)[0]).max()) / scale
                assert diff < 1e-4, f"{name} {layer} {k}: {diff}"
            # Two groups, each interleaved on its own: ONNX Runtime's threads spin for a while
            # after a run and slow whatever torch runs next, which is not torch's own speed.
            t = _median_times({k: funcs[k] for k in ("floor", "ours_torch")}, repeats)
            t.update(_median_times({k: funcs[k] for k in ("ort", "ours_auto")}, repeats))
            lines.append(
                f"| {net.title} | `{layer}` | {1e3 * t['floor']:.0f} | "
                f"{1e3 * t['ours_torch']:.0f} | {t['ours_torch'] / t['floor']:.2f} | "
                f"{1e3 * t['ort']:.0f} | {1e3 * t['ours_auto']:.0f} | "
                f"{t['ours_auto'] / t['ort']:.2f} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def runner_layer(net, info):
    """The layer our ONNX export of ``info`` really outputs (a ReLU runs from its input)."""
    pre = net.arch.pre_relu(info)
    return pre if pre is not None else info


def _nchw(a):
    return a if a.ndim == 4 else a[:, :, None, None]


_MEMORY_CHILD = r"""
import json, resource, sys, time
import numpy as np
import napari_activations as na
net = na.load_network("resnet50", None, device="cpu")
rng = np.random.default_rng(0)
image = rng.integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
stack = na.activations(net, image, "layer4.2.relu_2", resize=True)
first = np.asarray(stack[0]); t_first = time.perf_counter() - t
for c in range(1, 21):
    np.asarray(stack[c * 97 % stack.shape[0]])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "first_s": t_first,
                  "total_s": time.perf_counter() - t, "backend": stack.backend}))
"""


_BYTES_CHILD = r"""
import json, resource, sys
import numpy as np
import napari_activations as na
name, layer, backend, side = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
net = na.load_network(name, None, device="cpu")
if layer == "-":  # the last local layer
    layer = [r.name for r in net.layers if r.aligned and not r.is_global][-1]
image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
na.activations(net, image[:128, :128], layer, backend=backend)  # prepare, load libraries
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = na.activations(net, image, layer, backend=backend, memory_budget="64GiB")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"per_pixel": (peak - base) / side**2, "layer": layer,
                  "estimate": getattr(net.arch, "bytes_per_pixel", 160)}))
"""


def bytes_per_pixel(side: int = 1024, names: list[str] | None = None) -> str:
    """Measured peak working memory of one untiled forward pass, per input pixel, against the
    estimate tiling plans with (each run in a fresh process: ``ru_maxrss`` rise over the
    preparation, image and result included). This process loads no network: Linux keeps a
    parent's ``ru_maxrss`` in its children, which would hide their own peaks."""
    lines = [
        "| network | layer | backend | measured, bytes/px | estimate, bytes/px |",
        "|---|---|---|---:|---:|",
    ]
    chosen = {n: NETWORKS[n][-1] for n in NETWORKS} if names is None else {}
    for name in names or []:
        chosen[name] = "-"  # the child finds the last local layer
    for name, last in chosen.items():
        for backend in ("torch", "onnxruntime"):
            out = subprocess.run(
                [sys.executable, "-c", _BYTES_CHILD, name, last, backend, str(side)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            lines.append(
                f"| {name} | `{r['layer']}` | {backend} | {r['per_pixel']:.0f} | {r['estimate']} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def memory() -> str:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, check=True
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 2**30
    return (
        f"ResNet-50 `layer4.2.relu_2`, 4096x4096 RGB uint8, resize=True, first channel then 20 "
        f"channel moves ({r['backend']}): peak RSS {r['peak'] / gib:.2f} GiB (after loading "
        f"{r['base'] / gib:.2f} GiB; target at most 3 GiB), first channel in "
        f"{r['first_s']:.1f} s, all in {r['total_s']:.1f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--size", type=int, default=1024, help="image side (default 1024)")
    parser.add_argument(
        "--bytes-all",
        action="store_true",
        help="only measure bytes per pixel, for every network of list_networks()",
    )
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bytes_all:
        import napari_activations as na

        print(bytes_per_pixel(args.size, na.list_networks()))
        return
    print(f"torch threads: {torch.get_num_threads()}, image {args.size}x{args.size} RGB uint8")
    print(speed(args.repeats, args.size))
    if not args.skip_memory:
        print(bytes_per_pixel())
        print(memory())


if __name__ == "__main__":
    main()
