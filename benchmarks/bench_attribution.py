"""Attribution maps against their references, measured in the same run, on a 1024x1024 image.

- Grad-CAM: ``na.grad_cam(net, image, target)`` (uint8 image in, map on the image grid out)
  against one forward and backward pass through the network to its output: torchvision's
  model on an already normalised ``(1, 3, H, W)`` tensor that requires grad, the class score's
  ``backward()``. Target: at most 1.3x.
- Occlusion sensitivity: ``na.occlusion_sensitivity`` (default settings: a window of a fifth
  of the side, stride half the window, mean-colour fill) against captum's ``Occlusion`` with
  the same windows, strides and baseline on the same normalised tensor, batched
  (``perturbations_per_eval``, the same batch as ours). The maps are compared too (largest
  difference relative to the map's largest value). Target: at least 2x faster.

Random uint8 RGB image, random-weight SqueezeNet v1.1 (timing does not depend on what the
weights learned), torch on the CPU with ``--threads`` threads. Repeats are interleaved; the
table gives medians of wall-clock time and, beside them, of the process's CPU time. Run from
the repository root::

    .venv/bin/python benchmarks/bench_attribution.py [--size 1024] [--repeats 3] [--threads 1]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import numpy as np
import torch

import napari_activations as na
from napari_activations.attribution import occlusion_defaults
from napari_activations.compute import network_input


def timed(fn):
    w0, c0 = time.perf_counter(), os.times()
    out = fn()
    c1 = os.times()
    return out, time.perf_counter() - w0, (c1.user - c0.user) + (c1.system - c0.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--skip-occlusion", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from captum.attr import Occlusion

    net = na.load_squeezenet(None, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    cls = 285
    x, *_ = network_input(net, image, "conv1")
    peer = copy.deepcopy(net.model).eval()  # its own parameters, as a user's model would be

    def forward_backward():
        xr = x.detach().clone().requires_grad_(True)
        peer(xr)[0, cls].backward()
        return xr.grad

    def ours_grad_cam():
        return na.grad_cam(net, image, cls)

    window, stride = occlusion_defaults(args.size, args.size)
    baseline = x.mean(dim=(2, 3), keepdim=True)

    def captum_occlusion():
        with torch.no_grad():
            return (
                Occlusion(peer)
                .attribute(
                    x,
                    sliding_window_shapes=(3, window, window),
                    strides=(3, stride, stride),
                    baselines=baseline,
                    target=cls,
                    perturbations_per_eval=args.batch,
                )[0, 0]
                .numpy()
            )

    def ours_occlusion():
        return na.occlusion_sensitivity(net, image, cls, batch=args.batch)

    forward_backward(), ours_grad_cam()  # warm-up
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("fb", "gc", "captum", "occ")}
    worst = 0.0
    for _ in range(args.repeats):
        rows["fb"].append(timed(forward_backward)[1:])
        rows["gc"].append(timed(ours_grad_cam)[1:])
        if args.skip_occlusion:
            continue
        theirs, *t = timed(captum_occlusion)
        rows["captum"].append(tuple(t))
        ours, *t = timed(ours_occlusion)
        rows["occ"].append(tuple(t))
        worst = max(worst, float(np.abs(ours - theirs).max() / np.abs(theirs).max()))

    def med(key, i):
        return statistics.median(r[i] for r in rows[key])

    n_pos = (-(-(args.size - window) // stride) + 1) ** 2
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), image {args.size}x{args.size} "
        f"RGB uint8, random-weight SqueezeNet v1.1, {args.repeats} interleaved repeats"
    )
    print("| what | reference (s) | ours (s) | wall ratio | CPU ratio |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| Grad-CAM (relu_conv10) vs one forward+backward | {med('fb', 0):.3f} | "
        f"{med('gc', 0):.3f} | {med('gc', 0) / med('fb', 0):.2f}x | "
        f"{med('gc', 1) / med('fb', 1):.2f}x |"
    )
    if not args.skip_occlusion:
        print(
            f"| occlusion ({window}px window, stride {stride}, {n_pos} positions, batch "
            f"{args.batch}) vs captum Occlusion | {med('captum', 0):.2f} | "
            f"{med('occ', 0):.2f} | {med('captum', 0) / med('occ', 0):.2f}x faster | "
            f"{med('captum', 1) / med('occ', 1):.2f}x faster |"
        )
        print(
            f"largest difference of the occlusion maps, relative to the map's maximum: {worst:.2e}"
        )


if __name__ == "__main__":
    main()
