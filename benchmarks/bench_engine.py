"""How close ``na.activations`` comes to a bare torchvision forward pass (the floor).

For 512x512 and 2048x2048 random RGB uint8 images and a shallow and two deep layers, times

- ``activations``: ``na.activations(net, image, layer)``, everything a user pays for: the
  uint8 image in, intensity scaling, normalisation, the forward pass to the layer, and a
  ``(C, h, w)`` float32 numpy array out;
- ``floor``: torchvision's own modules truncated at the same layer (``model.features[:k+1]``,
  plus the fire module's squeeze for ``fire6-squeeze1x1``) on an already normalised
  ``(1, 3, H, W)`` tensor under ``torch.inference_mode()``; nothing else.

Repeats are interleaved (floor, activations, floor, ...) so that load from other processes
hits both alike; the table gives medians of wall-clock time, and beside their ratio the ratio
of the medians of the process's CPU time (user + system, all threads). On a machine shared
with other work, wall time also measures the waiting for a core; the CPU time of a
single-threaded run (``--threads 1``) measures the work alone. Run from the repository root::

    .venv/bin/python benchmarks/bench_engine.py [--repeats N] [--threads T] [--out FILE]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import napari_activations as na

SIZES = [512, 2048]
LAYERS = ["conv1", "fire6-squeeze1x1", "fire9-concat"]
TARGET = 1.15


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def truncated(net: na.Network, layer: str) -> torch.nn.Module:
    """torchvision's modules up to and including ``layer`` (conv1, fireN-squeeze1x1, -concat)."""
    info = na.find_layer(layer)
    parts = info.module.split(".")
    k = int(parts[1])
    if len(parts) == 2:
        return net.model.features[: k + 1]
    assert parts[2] == "squeeze", layer
    return torch.nn.Sequential(*net.model.features[:k], net.model.features[k].squeeze)


def normalised(image: np.ndarray, net: na.Network) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(net.mean).view(3, 1, 1)
    std = torch.tensor(net.std).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous().to(net.device)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    sync()
    t, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="repeats at 2048x2048; smaller images get proportionally more",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--layers", nargs="*", default=LAYERS)
    parser.add_argument("--out", default=None, help="also append the table to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    net = na.load_squeezenet(None, device=args.device)  # timing does not depend on weights
    sync = torch.cuda.synchronize if net.device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    rows = []
    for n in args.sizes:
        image = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        x = normalised(image, net)
        for layer in args.layers:
            model = truncated(net, layer)

            def floor(model=model, x=x) -> torch.Tensor:
                with torch.inference_mode():
                    return model(x)

            def ours(image=image, layer=layer) -> np.ndarray:
                return na.activations(net, image, layer)

            # same numbers, or the comparison means nothing
            np.testing.assert_allclose(ours(), floor()[0].cpu().numpy(), rtol=1e-4, atol=1e-3)
            times: dict[str, list[tuple[float, float]]] = {"floor": [], "ours": []}
            repeats = args.repeats * max(1, round((2048 / n) ** 2 / 4))
            for _ in range(repeats):
                times["floor"].append(timed(floor, sync))
                times["ours"].append(timed(ours, sync))
            (f, fc), (o, oc) = (
                [statistics.median(t) for t in zip(*times[k], strict=False)]
                for k in ("floor", "ours")
            )
            rows.append((n, layer, repeats, f, o, oc / fc))
            print(
                f"  {n}x{n} {layer}: floor {f * 1e3:.1f} ms, activations {o * 1e3:.1f} ms, "
                f"ratio {o / f:.2f} (CPU time {oc / fc:.2f})",
                flush=True,
            )

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    device = torch.cuda.get_device_name(net.device) if net.device.type == "cuda" else cpu_model()
    lines = [
        f"Device: {device} ({os.cpu_count()} logical CPUs); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; numpy {np.__version__}"
        + (f"; load average at the end {load[0]:.1f}" if load else ""),
        "",
        (
            "| image | layer | repeats | floor: truncated torchvision, median (ms) | "
            "activations, median (ms) | ratio | ratio of CPU time |"
        ),
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for n, layer, repeats, f, o, cpu in rows:
        flag = "" if o / f <= TARGET else " (over)"
        lines.append(
            f"| {n}x{n} RGB uint8 | {layer} | {repeats} | {f * 1e3:.1f} | "
            f"{o * 1e3:.1f} | {o / f:.2f}{flag} | {cpu:.2f} |"
        )
    text = "\n".join(lines)
    print()
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n\n")


if __name__ == "__main__":
    main()
