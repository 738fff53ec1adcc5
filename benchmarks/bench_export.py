"""Export benchmark (issue 9): a lazy aligned stack of a 4096x4096 image streamed to OME-Zarr.

Run on demand, not in the test suite::

    .venv/bin/python benchmarks/bench_export.py                  # conv1, 4096x4096 RGB
    .venv/bin/python benchmarks/bench_export.py fire9-concat     # any layer (needs disk:
                                                                 # 32 GiB uncompressed)

In a fresh process: load a random-weight SqueezeNet v1.1, make a random 4096x4096 uint8 RGB
image, compute the layer with ``resize=True`` (lazy) and look at one channel, as the viewer
does. Its resident memory then is the floor. The peak-RSS mark is reset
(``/proc/self/clear_refs``) and the whole aligned stack is exported; the peak during the
export is compared with that floor and with the size of the stack written. Linux only
(``VmHWM``, ``VmRSS`` and ``clear_refs`` of ``/proc/self``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, os, shutil, sys, time
import numpy as np
import napari_activations as na

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) * 1024

layer, folder = sys.argv[1], sys.argv[2]
net = na.load_squeezenet(None, device="cpu")
img = np.random.default_rng(0).integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
t = time.perf_counter()
stack = na.activations(net, img, layer, resize=True)
forward = time.perf_counter() - t
np.asarray(stack[0])                       # one channel, as napari shows it
import zarr, ome_zarr.writer               # imported before the floor is read
floor = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                           # reset the peak-RSS mark to the current RSS
reset = status("VmHWM")
t = time.perf_counter()
path = na.export_activations(stack, os.path.join(folder, "bench.ome.zarr"))
export = time.perf_counter() - t
peak = status("VmHWM")
on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
check = zarr.open_group(str(path), mode="r")["0"]
same = bool(np.array_equal(check[7], np.asarray(stack[7])))
shutil.rmtree(path)
print(json.dumps({"floor": floor, "reset": reset, "peak": peak, "forward_s": forward,
                  "export_s": export, "stack_bytes": stack.nbytes,
                  "native_bytes": stack.native.nbytes, "on_disk": on_disk,
                  "channel_7_equal": same, "shape": list(stack.shape)}))
"""


def main() -> None:
    import torch

    layer = sys.argv[1] if len(sys.argv) > 1 else "conv1"
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_EXPORT_DIR")) as folder:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, layer, folder],
            capture_output=True,
            text=True,
            check=True,
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 2**30
    from napari_activations.export import BLOCK_FRACTION
    from napari_activations.tiling import memory_budget

    block = memory_budget() // BLOCK_FRACTION
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, CPU only.\n"
    )
    print(f"### export of {layer}, 4096x4096 RGB, resize=True, aligned stack {tuple(r['shape'])}\n")
    print("| measure | value |\n|---|---|")
    print(
        f"| floor: RSS with torch, network, image, native maps and one shown channel | "
        f"{r['floor'] / gib:.2f} GiB |"
    )
    print(
        f"| peak RSS during the export | {r['peak'] / gib:.2f} GiB "
        f"(**{r['peak'] / r['floor']:.2f}x** the floor, +{(r['peak'] - r['floor']) / 2**20:.0f}"
        f" MiB; a block is at most {block / 2**20:.0f} MiB) |"
    )
    print(
        f"| the aligned stack written (float32) | {r['stack_bytes'] / gib:.1f} GiB, "
        f"{r['on_disk'] / gib:.1f} GiB on disk (zstd) |"
    )
    print(f"| native maps held in memory | {r['native_bytes'] / gib:.2f} GiB |")
    print(f"| time: forward pass / export | {r['forward_s']:.1f} s / {r['export_s']:.1f} s |")
    print(f"| channel 7 read back equals the stack | {r['channel_7_equal']} |")


if __name__ == "__main__":
    main()
