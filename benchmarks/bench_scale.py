"""Scale benchmarks (issue 5): resized stacks vs peers, memory, start-up, first plane.

Run on demand, not in the test suite::

    .venv/bin/python benchmarks/bench_scale.py            # everything, prints markdown
    .venv/bin/python benchmarks/bench_scale.py peers      # one part: peers|memory|startup|stack

``startup`` opens napari viewers: on a machine without a display run it under
``xvfb-run -a -s "-screen 0 1600x1200x24"``.

Every figure is a ratio against a peer measured in the same run, on the same input, with the
same random-weight SqueezeNet v1.1 (weights do not change the cost). Times are medians of
interleaved repeats (wall clock, ``time.perf_counter``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_times(funcs: dict, repeats: int) -> dict:
    times = {k: [] for k in funcs}
    for _ in range(repeats):
        for k, f in funcs.items():  # interleaved, so drifts in machine load hit all alike
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peers(repeats: int = 3) -> str:
    """A resized (C, H, W) stack ready to display, ours vs three peers, 1024x1024 RGB."""
    import skimage.transform
    import torch
    import torch.nn.functional as F
    from captum.attr import LayerActivation
    from torchvision.models.feature_extraction import create_feature_extractor

    import napari_activations as na
    from napari_activations.compute import plane_tensor

    net = na.load_squeezenet(None, device="cpu")
    model = net.model
    img = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    H, W = img.shape[:2]
    rows = [
        "| layer | ours: lazy stack + first channel (s) | ours: whole stack materialised (s) "
        "| (a) hooks on all layers + skimage resize (s) | (b) captum + interpolate (s) "
        "| (c) feature_extractor + interpolate (s) | (a)/ours whole | ours whole / min(b, c) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer in ["conv1", "fire9-concat"]:
        info = na.find_layer(layer)
        module = model.get_submodule(info.module)
        node = info.module

        def prep():
            return plane_tensor(img, True, None, net, (H, W))

        def ours_lazy():
            stack = na.activations(net, img, layer, resize=True)
            stack[0]

        def ours_whole():
            np.asarray(na.activations(net, img, layer, resize=True))

        def naive():
            store = {}
            hooks = [
                m.register_forward_hook(
                    lambda mod, i, o, name=name: store.__setitem__(name, o.detach().clone())
                )
                for name, m in model.named_modules()
                if name
            ]
            try:
                with torch.inference_mode():
                    model(prep())
            finally:
                for h in hooks:
                    h.remove()
            act = store[node][0].numpy()
            np.stack([skimage.transform.resize(ch, (H, W), order=1) for ch in act])

        def captum():
            x = prep()
            act = LayerActivation(model, module).attribute(x)
            with torch.inference_mode():
                F.interpolate(act, size=(H, W), mode="bilinear", align_corners=False)[0].numpy()

        extractor = create_feature_extractor(model, return_nodes=[node])

        def feature_extractor():
            with torch.inference_mode():
                act = extractor(prep())[node]
                F.interpolate(act, size=(H, W), mode="bilinear", align_corners=False)[0].numpy()

        ours_whole()  # warm-up
        t = _median_times(
            {
                "lazy": ours_lazy,
                "whole": ours_whole,
                "a": naive,
                "b": captum,
                "c": feature_extractor,
            },
            repeats,
        )
        best = min(t["b"], t["c"])
        rows.append(
            f"| {layer} | {t['lazy']:.3f} | {t['whole']:.3f} | {t['a']:.3f} | "
            f"{t['b']:.3f} | {t['c']:.3f} | {t['a'] / t['whole']:.1f}x | "
            f"{t['whole'] / best:.2f}x |"
        )
    return "\n".join(rows)


_MEMORY_CHILD = r"""
import json, sys, time
import numpy as np
import napari_activations as na

def peak_rss():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) * 1024

net = na.load_squeezenet(None, device="cpu")
img = np.random.default_rng(0).integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
base = peak_rss()
t = time.perf_counter()
stack = na.activations(net, img, "fire9-concat", resize=True)
forward = time.perf_counter() - t
moves = []
for c in range(20):
    t = time.perf_counter(); np.asarray(stack[c * 25]); moves.append(time.perf_counter() - t)
one = []
for c in range(20):
    t = time.perf_counter(); na.align(stack.native[c * 25], stack.layer, stack.image_shape)
    one.append(time.perf_counter() - t)
peak = peak_rss()
print(json.dumps({"peak_rss_gib": peak / 2**30, "rss_before_gib": base / 2**30,
                  "forward_s": forward, "move_s": sorted(moves)[10], "upsample_s": sorted(one)[10],
                  "eager_gib": stack.nbytes / 2**30}))
"""


def memory() -> str:
    """4096x4096 RGB, fire9-concat resize=True, 20 channel slider moves: peak RSS."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, check=True
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (
        "| measure | value | peer / target |\n|---|---|---|\n"
        f"| peak RSS of the whole process | {r['peak_rss_gib']:.2f} GiB | target <= 3 GiB; "
        f"the eager stack alone would be {r['eager_gib']:.1f} GiB |\n"
        f"| RSS after loading torch, network and the 48 MiB image | "
        f"{r['rss_before_gib']:.2f} GiB | |\n"
        f"| forward pass (tiled under the 1 GiB default budget) | {r['forward_s']:.1f} s | |\n"
        f"| one channel slider move (median of 20) | {r['move_s'] * 1e3:.0f} ms | "
        f"{r['move_s'] / r['upsample_s']:.2f}x one single-channel upsample "
        f"({r['upsample_s'] * 1e3:.0f} ms); target <= 1.2x |"
    )


_STARTUP_CHILD = r"""
import sys, time
t = time.perf_counter()
import napari
from npe2 import PluginManager
pm = PluginManager.instance()
if sys.argv[1] == "without":
    pm.disable("napari-activations")
viewer = napari.Viewer(show=False)
elapsed = time.perf_counter() - t
viewer.close()
print(elapsed, "torch" in sys.modules)
"""


def startup(repeats: int = 5) -> str:
    """napari start-up (import + Viewer) with the plugin enabled vs disabled."""
    res = {"with": [], "without": []}
    torch_loaded = False
    for _ in range(repeats):
        for mode in res:
            out = subprocess.run(
                [sys.executable, "-c", _STARTUP_CHILD, mode],
                capture_output=True,
                text=True,
                check=True,
            )
            t, loaded = out.stdout.split()
            res[mode].append(float(t))
            torch_loaded |= mode == "with" and loaded == "True"
    w, wo = statistics.median(res["with"]), statistics.median(res["without"])
    return (
        "| napari start-up, plugin enabled | disabled | ratio | torch imported? |\n"
        "|---|---|---|---|\n"
        f"| {w:.2f} s | {wo:.2f} s | {w / wo:.3f}x (target <= 1.05x) | {torch_loaded} |"
    )


def stack(repeats: int = 7) -> str:
    """Time to the first displayed plane of a (100, 1024, 1024) stack vs one plane alone."""
    import napari_activations as na

    net = na.load_squeezenet(None, device="cpu")
    data = np.random.default_rng(0).integers(0, 256, (100, 1024, 1024), dtype=np.uint8)
    one = data[0].copy()

    def first_of_stack():
        np.asarray(na.activations(net, data, "fire5-concat", resize=True)[0, 0])

    def plane_alone():
        np.asarray(na.activations(net, one, "fire5-concat", resize=True)[0])

    plane_alone()
    first_of_stack()
    t = _median_times({"stack": first_of_stack, "one": plane_alone}, repeats)
    return (
        "| first plane of a (100, 1024, 1024) stack | one plane alone | ratio |\n"
        "|---|---|---|\n"
        f"| {t['stack']:.3f} s | {t['one']:.3f} s | {t['stack'] / t['one']:.2f}x "
        "(target <= 1.2x) |"
    )


def main() -> None:
    import torch

    parts = {"peers": peers, "memory": memory, "startup": startup, "stack": stack}
    chosen = sys.argv[1:] or list(parts)
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, CPU only.\n"
    )
    for name in chosen:
        print(f"### {name}\n\n{parts[name]()}\n", flush=True)


if __name__ == "__main__":
    main()
