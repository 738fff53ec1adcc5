"""The resized stack and its first channel vs the peers doing the same job (issue 12).

For a random uint8 RGB image (1024x1024 by default) and the layers conv1 and fire9-concat,
times (wall clock, medians of interleaved repeats, one process, the backend ``auto`` picks):

- ``whole``: ``np.asarray(na.activations(net, image, layer, resize=True))``, the whole
  ``(C, H, W)`` float32 stack on the image grid;
- ``first``: ``na.activations(net, image, layer, resize=True)[0]``, what the plugin shows
  first (the forward pass, then one channel);
- ``(b)``: captum's ``LayerActivation`` + ``F.interpolate`` (bilinear) of the whole stack;
- ``(c)``: torchvision's ``create_feature_extractor`` + ``F.interpolate`` of the whole stack.

Targets: ``whole / (c)`` at most 0.5; ``min((b), (c)) / first`` at least 5. ``--threads``
sets torch's (and so ONNX Runtime's) thread count for everything alike: on a 2-core machine
shared with other work, 1 thread is the steadiest. The 1-minute load average is printed before
and after. Run from the repository root::

    .venv/bin/python benchmarks/bench_resize.py [--threads T] [--repeats N] [--size N]

``--kernels`` times only the resize of a random native ``(C, h, w)`` stack of each layer:
ours (``alignment.align_periodic``) against the peers' plain ``F.interpolate``, and the floor
of writing a fresh ``(C, H, W)`` float32 array once (``torch.empty`` then ``fill_``: the same
allocator as both, so the same first-touch page faults).

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

LAYERS = ["conv1", "fire9-concat"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--layers", nargs="*", default=LAYERS)
    parser.add_argument("--kernels", action="store_true", help="time the resize kernels only")
    args = parser.parse_args()
    if args.kernels:
        kernels(args)
        return

    import torch
    import torch.nn.functional as F
    from captum.attr import LayerActivation
    from torchvision.models.feature_extraction import create_feature_extractor

    import napari_activations as na
    from napari_activations.compute import plane_tensor

    torch.set_num_threads(args.threads)
    net = na.load_squeezenet(None, device="cpu")
    model = net.model
    n = args.size
    image = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    load_before = os.getloadavg()[0]
    rows = []
    for layer in args.layers:
        info = na.find_layer(layer)
        node = info.module
        extractor = create_feature_extractor(model, return_nodes=[node])
        module = model.get_submodule(node)

        def prep():
            return plane_tensor(image, True, None, net, (n, n))

        def whole():
            return np.asarray(na.activations(net, image, layer, resize=True))

        def first():
            return na.activations(net, image, layer, resize=True)[0]

        def captum():
            act = LayerActivation(model, module).attribute(prep())
            with torch.inference_mode():
                return F.interpolate(act, size=(n, n), mode="bilinear")[0].numpy()

        def feature_extractor():
            with torch.inference_mode():
                act = extractor(prep())[node]
                return F.interpolate(act, size=(n, n), mode="bilinear")[0].numpy()

        stack = na.activations(net, image, layer, resize=True)  # warm-up, and the export
        funcs = {"whole": whole, "first": first, "b": captum, "c": feature_extractor}
        times = {k: [] for k in funcs}
        for _ in range(args.repeats):
            for k, f in funcs.items():  # interleaved: drifts in machine load hit all alike
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = min(med["b"], med["c"])
        rows.append((layer, stack.backend, med, med["whole"] / med["c"], best / med["first"]))
        print(f"  {layer}: " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()), flush=True)

    print()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {n}x{n} RGB uint8, "
        f"{args.repeats} interleaved repeats; 1-min load {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print()
    print(
        "| layer | backend | ours: whole stack (s) | ours: first channel (s) | (b) captum + "
        "interpolate (s) | (c) feature_extractor + interpolate (s) | whole / (c) | "
        "best peer / first |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for layer, backend, med, ratio, speedup in rows:
        print(
            f"| {layer} | {backend} | {med['whole']:.3f} | {med['first']:.3f} | "
            f"{med['b']:.3f} | {med['c']:.3f} | {ratio:.2f}{'' if ratio <= 0.5 else ' (over 0.5)'}"
            f" | {speedup:.1f}x{'' if speedup >= 5 else ' (under 5)'} |"
        )


def kernels(args: argparse.Namespace) -> None:
    """The resize alone: ours vs the peers' ``F.interpolate`` vs writing the output once."""
    import torch
    import torch.nn.functional as F

    import napari_activations as na
    from napari_activations import alignment
    from napari_activations.layers import output_size

    torch.set_num_threads(args.threads)
    n = args.size
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    print(
        "| layer | S, O | native stack | ours (s) | F.interpolate (s) | write once (s) "
        "| ours / F.interpolate |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for layer in args.layers:
        info = na.find_layer(layer)
        h, w = output_size(info, n, n)
        channels = na.activations(na.load_squeezenet(None), np.zeros((67, 67, 3)), layer).shape[0]
        native = rng.normal(size=(channels, h, w)).astype(np.float32)
        funcs = {
            "ours": lambda: alignment.align_periodic(native, info, (n, n)),
            "peer": lambda: F.interpolate(
                torch.from_numpy(native)[None], size=(n, n), mode="bilinear"
            )[0].numpy(),
            "floor": lambda: torch.empty((channels, n, n)).fill_(0),
        }
        times = {k: [] for k in funcs}
        for _ in range(args.repeats):
            for k, f in funcs.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"| {layer} | {info.stride}, {info.offset:g} | ({channels}, {h}, {w}) to {n}x{n} | "
            f"{med['ours']:.3f} | {med['peer']:.3f} | {med['floor']:.3f} | "
            f"{med['ours'] / med['peer']:.2f} |",
            flush=True,
        )
    print(
        f"\n{args.threads} thread(s), {args.repeats} interleaved repeats; 1-min load "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )


if __name__ == "__main__":
    main()
