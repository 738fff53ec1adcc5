"""GPU check (issue 12): half precision equals float32 within a stated tolerance; speed vs NCHW.

On a CUDA GPU, for random uint8 RGB images and the layers conv1, fire5-concat, fire9-concat and
prob, with the seeded random SqueezeNet v1.1 (and the trained weights too where
``$NAPARI_ACTIVATIONS_TEST_WEIGHTS`` names a file):

1. equality: ``na.activations(..., precision=p)`` for p in float16 and bfloat16 against the
   float32 result on the same GPU, max |difference| / max |float32| at most
   :data:`TOLERANCE` [p]; float32 against the CPU (ONNX Runtime or torch) within 1e-3
   (cuDNN may use TF32 for float32 convolutions);
2. speed: medians of interleaved repeats (CUDA synchronised) of ours at each precision, of
   torchvision's truncated modules in NCHW float32 on an already normalised device tensor
   (the floor), and of the same in channels_last float32 and float16, as ratios to the floor.

Exits 1 if any equality check fails (speed is reported, not judged: on a GPU our time includes
the host-side scaling and both copies, which the floor leaves out). Prints one line per check,
then ``GPU CHECK PASSED`` or ``GPU CHECK FAILED``. Takes about a minute. From the repository
root, with the project installed (``bash scripts/setup.sh``)::

    .venv/bin/python benchmarks/gpu_check.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

TOLERANCE = {"float16": 2e-2, "bfloat16": 6e-2}
"""Largest accepted max |half - float32| / max |float32| of a layer."""

SIZES = [512, 1024, 2048]
LAYERS = ["conv1", "fire5-concat", "fire9-concat", "prob"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import torch

    import napari_activations as na

    if not torch.cuda.is_available():
        print("GPU CHECK SKIPPED: torch sees no CUDA GPU here")
        return 2
    print(
        f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
        f"cudnn {torch.backends.cudnn.version()}; TF32 for convolutions: "
        f"{torch.backends.cudnn.allow_tf32}"
    )
    torch.backends.cudnn.benchmark = True
    failures = []
    nets = {"random": na.load_squeezenet(None, device="cuda")}
    cpu_nets = {"random": na.load_squeezenet(None, device="cpu")}
    weights = os.environ.get("NAPARI_ACTIVATIONS_TEST_WEIGHTS", "")
    if weights and os.path.isfile(weights):
        nets["trained"] = na.load_squeezenet(weights, device="cuda")
        cpu_nets["trained"] = na.load_squeezenet(weights, device="cpu")
    rng = np.random.default_rng(0)

    # 1. equality
    image = rng.integers(0, 256, (517, 639, 3), dtype=np.uint8)  # odd sizes: ceil-mode pools
    for kind, net in nets.items():
        for layer in LAYERS:
            ref = na.activations(net, image, layer)
            cpu = na.activations(cpu_nets[kind], image, layer)
            scale = float(np.abs(ref).max()) or 1.0
            err = float(np.abs(cpu - ref).max()) / scale
            ok = err <= 1e-3
            print(
                f"  {'ok ' if ok else 'FAIL'} {kind} {layer}: float32 GPU vs CPU {err:.1e} "
                "(<= 1e-3)"
            )
            if not ok:
                failures.append(f"{kind} {layer} float32")
            for precision, tol in TOLERANCE.items():
                got = na.activations(net, image, layer, precision=precision)
                err = float(np.abs(got - ref).max()) / scale
                ok = got.dtype == np.float32 and np.isfinite(got).all() and err <= tol
                print(
                    f"  {'ok ' if ok else 'FAIL'} {kind} {layer}: {precision} vs float32 "
                    f"{err:.1e} (<= {tol:g})"
                )
                if not ok:
                    failures.append(f"{kind} {layer} {precision}")

    # 2. speed
    net = nets["random"]
    mean = torch.tensor(net.mean, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(net.std, device="cuda").view(1, 3, 1, 1)
    print()
    print(
        "| image | layer | floor NCHW fp32 (ms) | channels_last fp32 | channels_last fp16 "
        "| ours fp32 | ours fp16 | ours bf16 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for n in SIZES:
        img = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
        x = (torch.from_numpy(img).cuda().permute(2, 0, 1)[None].float() / 255 - mean) / std
        for layer in LAYERS[:3]:
            k = int(na.find_layer(layer).module.split(".")[1]) + 1
            nchw = net.model.features[:k]
            import copy

            cl32 = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
            cl16 = copy.deepcopy(nchw).to(dtype=torch.float16, memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x16 = x_cl.half()

            def run(model, inp):
                def f():
                    with torch.inference_mode():
                        model(inp)

                return f

            funcs = {
                "floor": run(nchw, x),
                "cl32": run(cl32, x_cl),
                "cl16": run(cl16, x16),
                "ours32": lambda: na.activations(net, img, layer),
                "ours16": lambda: na.activations(net, img, layer, precision="float16"),
                "oursbf16": lambda: na.activations(net, img, layer, precision="bfloat16"),
            }
            times = {key: [] for key in funcs}
            for f in funcs.values():  # warm-up: cuDNN picks its algorithms
                f()
            for _ in range(args.repeats):
                for key, f in funcs.items():
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    f()
                    torch.cuda.synchronize()
                    times[key].append(time.perf_counter() - t)
            med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
            fl = med["floor"]
            cells = " | ".join(
                f"{med[key]:.2f} ({med[key] / fl:.2f}x)"
                for key in ("cl32", "cl16", "ours32", "ours16", "oursbf16")
            )
            print(f"| {n}² | {layer} | {fl:.2f} | {cells} |", flush=True)

    print()
    if failures:
        print("GPU CHECK FAILED: " + ", ".join(failures))
        return 1
    print("GPU CHECK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
