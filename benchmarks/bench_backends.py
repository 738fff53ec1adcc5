"""Native activations vs the fastest CPU runtimes running the same truncated network (issue 12).

For random uint8 RGB images of 512², 1024² and 2048² and the layers conv1, fire5-concat and
fire9-concat, times (wall clock, medians of interleaved repeats, all in one process):

- ``ours``: ``na.activations(net, image, layer, backend="onnxruntime")``,
  everything a user pays for: the uint8 image in, scaling and normalisation, the forward pass,
  a ``(C, h, w)`` float32 numpy array out;
- ``ort``: a plain ONNX Runtime session (CPU, the same thread count) of the same truncated
  network (the file our export produced, whose conv1 has ImageNet's normalisation folded in)
  on an already prepared ``(1, 3, H, W)`` float32 array of the intensities in [0, 255];
- ``openvino``: OpenVINO's ``convert_model`` of that ONNX file, compiled for the CPU, on the
  same array (skipped where ``openvino`` is not installed);
- ``torch``: torchvision's modules truncated at the layer, NCHW, the old floor.

The ratio is ``ours / min(ort, openvino)``; the target is at most 1.15. Beside the ratio of
wall-clock medians stands the ratio of CPU-time medians: on a machine shared with other work,
wall time also measures the wait for a core, while the CPU time of a single-threaded run
(``--threads 1``, the default) measures the work alone. Also reports the
first-time export cost of each layer ("preparing the fast path") and the install size and
import time of onnxruntime. Run from the repository root::

    .venv/bin/python benchmarks/bench_backends.py [--repeats N] [--threads T]

Not part of the test suite. Needs ``pip install openvino`` for the OpenVINO peer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZES = [512, 1024, 2048]
LAYERS = ["conv1", "fire5-concat", "fire9-concat"]
TARGET = 1.15


def _median_times(funcs: dict, repeats: int) -> tuple[dict, dict]:
    """Medians of wall-clock and of process CPU time (user + system, all threads)."""
    wall = {k: [] for k in funcs}
    cpu = {k: [] for k in funcs}
    names = list(funcs)
    for r in range(repeats):
        # Interleaved, so that drifts in machine load hit all alike, and in an order rotated
        # each repeat: whatever runs right after the torch floor (which sweeps the caches and
        # frees hundreds of MB) was measured up to 1.5x slower, so no one always comes there.
        for k in names[r % len(names) :] + names[: r % len(names)]:
            f = funcs[k]
            t, c = time.perf_counter(), time.process_time()
            f()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return (
        {k: statistics.median(v) for k, v in wall.items()},
        {k: statistics.median(v) for k, v in cpu.items()},
    )


def import_cost() -> str:
    """Import time of onnxruntime in a fresh process (median of 5), and its size on disk."""
    code = "import time; t=time.perf_counter(); import onnxruntime; print(time.perf_counter()-t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    import onnxruntime

    def size(mod) -> float:
        root = os.path.dirname(mod.__file__)
        return (
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
            / 2**20
        )

    import onnx

    return (
        f"onnxruntime {onnxruntime.__version__}: import {statistics.median(times):.2f} s "
        f"(median of 5 fresh processes), {size(onnxruntime):.0f} MiB installed; onnx "
        f"{onnx.__version__} (for the export): {size(onnx):.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats at 2048² (more below)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    parser.add_argument("--layers", nargs="*", default=LAYERS)
    args = parser.parse_args()

    os.environ.setdefault("NAPARI_ACTIVATIONS_CACHE", tempfile.mkdtemp())
    import onnxruntime as ort
    import torch

    import napari_activations as na
    from napari_activations.backends import onnx_backend

    torch.set_num_threads(args.threads)
    try:
        import openvino as ov
    except ImportError:
        ov = None
        print("openvino not installed: OpenVINO peer skipped (pip install openvino)")

    net = na.load_squeezenet(None, device="cpu")
    print(import_cost())
    rng = np.random.default_rng(0)
    prepare_rows, rows = [], []
    for layer in args.layers:
        info = na.find_layer(layer)
        t = time.perf_counter()
        na.activations(
            net, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), layer, backend="onnxruntime"
        )
        prepare_rows.append((layer, time.perf_counter() - t))
    for n in args.sizes:
        image = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        # The export takes the intensities in [0, 255] (scaling and normalisation folded into
        # conv1); torch's modules take the normalised image.
        x255 = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        x01 = x255 / np.float32(255)
        x = ((x01 - np.reshape(net.mean, (1, 3, 1, 1))) / np.reshape(net.std, (1, 3, 1, 1))).astype(
            np.float32
        )
        for layer in args.layers:
            info = na.find_layer(layer)
            path = onnx_backend.cache_path(net, info)
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            funcs = {
                "ours": lambda: na.activations(net, image, layer, backend="onnxruntime"),
                "ort": lambda: session.run(None, {"input": x255})[0],
            }
            if ov is not None:
                core = ov.Core()
                compiled = core.compile_model(
                    ov.convert_model(str(path)),
                    "CPU",
                    {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"},
                )
                funcs["openvino"] = lambda: compiled(x255)[0]
            k = int(info.module.split(".")[1]) + 1
            model = net.model.features[:k]
            tx = torch.from_numpy(x)

            def floor() -> np.ndarray:
                with torch.inference_mode():
                    return model(tx).numpy()

            funcs["torch"] = floor
            ref = floor()[0]
            for name, f in funcs.items():  # same numbers, or the comparison means nothing
                got = np.asarray(f())
                got = got[0] if got.ndim == 4 else got
                err = np.abs(got - ref).max() / np.abs(ref).max()
                assert err <= 1e-5, (name, layer, n, err)
            repeats = args.repeats * max(1, round((2048 / n) ** 2 / 4))
            # OpenVINO's worker threads keep running after a call and slowed whatever ran next
            # (process CPU time grew with the wall time): it is timed in a block of its own.
            alone = {k: funcs.pop(k) for k in ("openvino",) if k in funcs}
            med, cpu = _median_times(funcs, repeats)
            if alone:
                ov_med, ov_cpu = _median_times(alone, repeats)
                med, cpu = med | ov_med, cpu | ov_cpu
            best = min(v for k, v in med.items() if k in ("ort", "openvino"))
            best_cpu = min(v for k, v in cpu.items() if k in ("ort", "openvino"))
            rows.append((n, layer, repeats, med, med["ours"] / best, cpu["ours"] / best_cpu))
            print(
                f"  {n}² {layer}: "
                + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in med.items())
                + f"; ours / best runtime {med['ours'] / best:.2f} (CPU time "
                f"{cpu['ours'] / best_cpu:.2f})",
                flush=True,
            )

    print()
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}"
        + (f", openvino {ov.__version__}" if ov else "")
        + f"; {args.threads} threads; "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )
    print()
    print(
        "| image | layer | repeats | ours (ms) | ONNX Runtime (ms) | OpenVINO (ms) | "
        "torch NCHW (ms) | ours / fastest runtime | same, CPU time |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, layer, repeats, med, ratio, cpu_ratio in rows:
        flag = "" if ratio <= TARGET else " (over)"
        ovt = f"{med['openvino'] * 1e3:.1f}" if "openvino" in med else "-"
        print(
            f"| {n}² RGB uint8 | {layer} | {repeats} | {med['ours'] * 1e3:.1f} | "
            f"{med['ort'] * 1e3:.1f} | {ovt} | {med['torch'] * 1e3:.1f} | "
            f"{ratio:.2f}{flag} | {cpu_ratio:.2f} |"
        )
    print()
    print(
        "First use of a layer (export, check against torch, cache): "
        + ", ".join(f"{layer} {t:.1f} s" for layer, t in prepare_rows)
    )


if __name__ == "__main__":
    main()
